"""Kubernetes discovery: the IPs of Running, Ready pods that match a label selector.

One REST call, ``GET /api/v1/namespaces/{ns}/pods?labelSelector=...`` (paged with
``limit``/``continue``), authenticated with the pod's service-account token, which is read
again on every poll because kubelet rotates projected tokens. The service account needs
``list`` on ``pods`` in the namespace (docs/cluster-setup.md has the Role). Pods that are
terminating (``deletionTimestamp`` set) or not Ready are left out, so a rolling update
never hands out a seed that is shutting down. This is libcluster's
``Kubernetes`` strategy in ``:ip`` mode and Akka's ``kubernetes-api`` discovery.

kubernetes-asyncio would do the same call with aiohttp underneath plus a generated model
for every API object (about 2,000 modules); one GET and the pod fields we read do not
earn that.
"""

from __future__ import annotations

import os
from typing import Any

from phoenix_cluster._foundation.env import Env
from phoenix_cluster.errors import ConfigError

from .discovery import DiscoveryError, ProviderBase, join_host_port, unique_sorted
from .discovery_http import HttpStatusError, JsonHttp, ssl_context

__all__ = ["DEFAULT_CA_PATH", "DEFAULT_TOKEN_PATH", "KubernetesApi", "KubernetesSeeds"]

_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TOKEN_PATH = f"{_SA_DIR}/token"
DEFAULT_CA_PATH = f"{_SA_DIR}/ca.crt"
_MAX_PAGES = 100


class KubernetesApi:
    """Authenticated JSON requests to the Kubernetes API server (seeds and leases).

    The bearer token is read again on every request (kubelet rotates projected tokens).
    ``token_path=None`` sends no token (``kubectl proxy``); a missing file at the default
    path also sends none, a missing file elsewhere is a :class:`DiscoveryError`. ``ca_path``
    (https only) is the CA that signed the API server's certificate; ``None`` or a missing
    file at the default path uses the system's trust store.
    """

    def __init__(
        self,
        api_url: str,
        *,
        token_path: str | None = DEFAULT_TOKEN_PATH,
        ca_path: str | None = DEFAULT_CA_PATH,
        env: Env | None = None,
        timeout_s: float = 5.0,
        setting: str = "discovery",
    ) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"bad setting {setting}: Kubernetes API URL must be http(s)://…, got {api_url!r}",
                key=setting,
            )
        self.url = api_url.rstrip("/")
        self._token_path = token_path
        self._ca_path = ca_path
        self._clock = (env or Env()).clock
        self._timeout_s = timeout_s
        self._http: JsonHttp | None = None

    def _client(self) -> JsonHttp:
        if self._http is None:
            ctx = None
            ca = self._ca_path
            if self.url.startswith("https://") and ca is not None and (
                ca != DEFAULT_CA_PATH or os.path.exists(ca)
            ):
                ctx = ssl_context(ca)
            self._http = JsonHttp("kubernetes", self.url, self._clock,
                                  timeout_s=self._timeout_s, ssl=ctx)
        return self._http

    def _headers(self) -> dict[str, str]:
        if self._token_path is None:
            return {}
        try:
            with open(self._token_path, encoding="utf-8") as f:
                token = f.read().strip()
        except FileNotFoundError:
            if self._token_path == DEFAULT_TOKEN_PATH:
                return {}
            raise DiscoveryError(
                f"kubernetes: token file {self._token_path} does not exist"
            ) from None
        except OSError as exc:
            raise DiscoveryError(
                f"kubernetes: cannot read token {self._token_path}: {exc}"
            ) from exc
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """One request with the current token; errors as :meth:`JsonHttp.request`."""
        return await self._client().request(
            method, path, body=body, params=params, headers=self._headers()
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


class KubernetesSeeds(ProviderBase):
    """Seeds are ``podIP:port`` of matching pods that are Running and Ready.

    Args:
        api_url: the API server, ``https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT``
            inside a pod, or ``http://127.0.0.1:8001`` through ``kubectl proxy``.
        namespace: where the pods live.
        label_selector: a Kubernetes label selector, e.g. ``app=phoenix,tier!=canary``.
        port: the port Phoenix listens on in each pod.
        token_path: the bearer token file, read on every poll. ``None`` sends no token
            (``kubectl proxy``). A missing file at the default path also sends none; a
            missing file elsewhere is an error.
        ca_path: the CA that signed the API server's certificate (https only). ``None`` or
            a missing file at the default path uses the system's trust store.
        env: the node's clock, for request deadlines.
        timeout_s: deadline for each API request.
        page_size: pods per page (``limit``); large clusters are read in pages.
    """

    def __init__(
        self,
        api_url: str,
        namespace: str,
        label_selector: str,
        port: int,
        *,
        token_path: str | None = DEFAULT_TOKEN_PATH,
        ca_path: str | None = DEFAULT_CA_PATH,
        env: Env | None = None,
        timeout_s: float = 5.0,
        page_size: int = 500,
    ) -> None:
        if not 0 < port <= 65535:
            raise ConfigError(
                f"bad setting discovery: port must be in 1..65535, got {port}", key="discovery"
            )
        if not namespace or "/" in namespace:
            raise ConfigError(f"bad setting discovery: bad namespace {namespace!r}",
                              key="discovery")
        self._api = KubernetesApi(api_url, token_path=token_path, ca_path=ca_path, env=env,
                                  timeout_s=timeout_s)
        self._namespace = namespace
        self._selector = label_selector
        self._port = port
        self._page_size = page_size

    async def seeds(self) -> list[str]:
        path = f"/api/v1/namespaces/{self._namespace}/pods"
        found: list[str] = []
        cont = ""
        for _ in range(_MAX_PAGES):
            params = {"labelSelector": self._selector, "limit": str(self._page_size)}
            if cont:
                params["continue"] = cont
            try:
                page = await self._api.request("GET", path, params=params)
            except HttpStatusError as exc:
                raise DiscoveryError(_explain(exc, self._namespace)) from exc
            if not isinstance(page, dict) or page.get("kind") not in ("PodList", None):
                raise DiscoveryError(f"kubernetes: GET {path} answered {page!r:.200}, "
                                     "expected a PodList")
            found.extend(
                join_host_port(ip, self._port) for pod in page.get("items") or []
                if (ip := _ready_ip(pod))
            )
            cont = (page.get("metadata") or {}).get("continue") or ""
            if not cont:
                break
        return unique_sorted(found)

    async def aclose(self) -> None:
        await self._api.aclose()

    def __repr__(self) -> str:
        return (f"<KubernetesSeeds {self._api.url} pods {self._selector!r} in {self._namespace}"
                f" port {self._port}>")


def _ready_ip(pod: Any) -> str | None:
    """The pod's IP if it is Running, Ready and not being deleted; else ``None``."""
    if not isinstance(pod, dict):
        return None
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != "Running":
        return None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
        if isinstance(c, dict)
    )
    if not ready:
        return None
    ip = status.get("podIP") or next(
        (p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)), None
    )
    return ip if isinstance(ip, str) and ip else None


def _explain(exc: HttpStatusError, namespace: str) -> str:
    if exc.status == 401:
        return f"{exc} (the service-account token was rejected)"
    if exc.status == 403:
        return (f"{exc} (the service account needs a Role allowing get/list on pods in"
                f" namespace {namespace}; see docs/cluster-setup.md)")
    return str(exc)
