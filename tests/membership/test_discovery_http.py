"""Kubernetes and Consul discovery against fakes that speak the real HTTP APIs.

No Kubernetes API server or Consul agent can run here, so each fake is a small
``aiohttp.web`` app on 127.0.0.1 that answers the same paths with the same JSON shapes
(PodList with paging, Status errors, Consul health/catalog entries, agent registration
with TTL checks) and checks the same auth headers. Pod and service addresses are data
only: nothing here connects to them.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._membership.discovery import DiscoveryError
from phoenix_cluster._membership.discovery_consul import ConsulSeeds
from phoenix_cluster._membership.discovery_k8s import KubernetesSeeds
from phoenix_cluster._membership.discovery_poller import DiscoveryPoller
from phoenix_cluster._membership.discovery_spec import discovery_from_spec
from phoenix_cluster.errors import ConfigError
from phoenix_cluster.testing import wait_until


async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None
                ) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"{'https' if ssl_context else 'http'}://{host}:{port}"


# --- Kubernetes ---------------------------------------------------------------------------


def pod(name: str, ip: str, *, labels: dict[str, str] | None = None, ns: str = "default",
        phase: str = "Running", ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}",
                            "labels": labels if labels is not None else {"app": "phoenix"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "ContainersReady", "status": "True" if ready else "False"},
        ],
    }
    if phase != "Pending":
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {"metadata": meta, "spec": {"containers": [{"name": "phoenix"}]}, "status": status}


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality- and existence-based label selectors, as the API server evaluates them."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeKubeApi:
    def __init__(self, token: str) -> None:
        self.token = token
        self.pods: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []
        self.hang = asyncio.Event()
        self.hang.set()
        self.app = web.Application()
        self.app.router.add_get("/api/v1/namespaces/{ns}/pods", self.list_pods)

    @staticmethod
    def status(code: int, reason: str, message: str) -> web.Response:
        return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Failure", "message": message, "reason": reason,
                                  "code": code}, status=code)

    async def list_pods(self, request: web.Request) -> web.Response:
        await self.hang.wait()
        self.requests.append(dict(request.query))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self.status(401, "Unauthorized", "Unauthorized")
        ns = request.match_info["ns"]
        if ns == "locked":
            return self.status(403, "Forbidden",
                               'pods is forbidden: User "system:serviceaccount:locked:default"'
                               ' cannot list resource "pods" in API group "" in the namespace'
                               ' "locked"')
        selector = request.query.get("labelSelector", "")
        matching = [p for p in self.pods if p["metadata"]["namespace"] == ns
                    and _selector_matches(selector, p["metadata"]["labels"])]
        start = int(base64.b64decode(request.query.get("continue", "") or "MA==").decode())
        limit = int(request.query.get("limit", "0")) or len(matching)
        page = matching[start:start + limit]
        more = start + limit < len(matching)
        meta = {"resourceVersion": "12345"}
        if more:
            meta["continue"] = base64.b64encode(str(start + limit).encode()).decode()
            meta["remainingItemCount"] = str(len(matching) - start - limit)
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": meta,
                                  "items": page})


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[FakeKubeApi, str, Path]]:
    api = FakeKubeApi(token="t0k3n")
    api.pods = [
        pod("phoenix-0", "127.0.30.1"),
        pod("phoenix-1", "127.0.30.2"),
        pod("phoenix-2", "127.0.30.3", ready=False),          # not Ready yet
        pod("phoenix-3", "127.0.30.4", phase="Pending"),      # no IP yet
        pod("phoenix-4", "127.0.30.5", deleting=True),        # terminating
        pod("phoenix-5", "127.0.30.6", phase="Succeeded"),
        pod("phoenix-6", "127.0.30.7", labels={"app": "phoenix", "tier": "canary"}),
        pod("other-0", "127.0.30.8", labels={"app": "other"}),
        pod("phoenix-x", "127.0.30.9", ns="elsewhere"),
    ]
    token = tmp_path / "token"
    token.write_text("t0k3n\n")
    runner, url = await serve(api.app)
    try:
        yield api, url, token
    finally:
        api.hang.set()
        await runner.cleanup()


async def test_k8s_lists_running_ready_pods_by_selector_in_pages(
    kube: tuple[FakeKubeApi, str, Path],
) -> None:
    api, url, token = kube
    async with KubernetesSeeds(url, "default", "app=phoenix,tier!=canary", 7100,
                               token_path=str(token), page_size=2) as seeds:
        assert await seeds.seeds() == ["127.0.30.1:7100", "127.0.30.2:7100"]
    assert len(api.requests) > 1  # paged with limit/continue
    assert all(r["labelSelector"] == "app=phoenix,tier!=canary" and r["limit"] == "2"
               for r in api.requests)
    async with KubernetesSeeds(url, "default", "app=phoenix", 7100,
                               token_path=str(token)) as seeds:
        assert await seeds.seeds() == ["127.0.30.1:7100", "127.0.30.2:7100", "127.0.30.7:7100"]
        token.write_text("r0tated")  # kubelet rotates the projected token: read every poll
        with pytest.raises(DiscoveryError, match=r"401.*token was rejected"):
            await seeds.seeds()
        api.token = "r0tated"
        assert len(await seeds.seeds()) == 3


async def test_k8s_errors_name_the_cause(kube: tuple[FakeKubeApi, str, Path]) -> None:
    _, url, token = kube
    async with KubernetesSeeds(url, "locked", "app=phoenix", 7100,
                               token_path=str(token)) as seeds:
        with pytest.raises(DiscoveryError, match=r"403: pods is forbidden.*Role.*list on pods"):
            await seeds.seeds()
    async with KubernetesSeeds(url, "default", "app=phoenix", 7100,
                               token_path=str(token.with_name("missing"))) as seeds:
        with pytest.raises(DiscoveryError, match=r"token file .*missing does not exist"):
            await seeds.seeds()


async def test_k8s_over_https_verifies_the_api_server_against_the_ca(
    tls_files: dict[str, Path], tmp_path: Path
) -> None:
    api = FakeKubeApi(token="t")
    api.pods = [pod("phoenix-0", "127.0.30.1")]
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_files["server.pem"], tls_files["server.key"])
    token = tmp_path / "token"
    token.write_text("t")
    runner, url = await serve(api.app, server_ctx)
    try:
        async with KubernetesSeeds(url, "default", "app=phoenix", 7100, token_path=str(token),
                                   ca_path=str(tls_files["ca.pem"])) as seeds:
            assert await seeds.seeds() == ["127.0.30.1:7100"]
        async with KubernetesSeeds(url, "default", "app=phoenix", 7100, token_path=str(token),
                                   ca_path=None) as untrusting:
            with pytest.raises(DiscoveryError, match=r"(?i)certificate"):
                await untrusting.seeds()
    finally:
        await runner.cleanup()


async def test_k8s_spec_in_a_pod_and_through_kubectl_proxy(
    kube: tuple[FakeKubeApi, str, Path],
) -> None:
    _, url, token = kube
    seeds = discovery_from_spec(f"k8s:app=phoenix,tier!=canary@default:7100?api={url}"
                                f"&token={token}")
    try:
        assert await seeds.seeds() == ["127.0.30.1:7100", "127.0.30.2:7100"]
    finally:
        await seeds.aclose()
    host, port = url.removeprefix("http://").split(":")
    in_pod = discovery_from_spec(
        "k8s:app=phoenix@default:7100",
        environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port},
    )
    assert f"https://{host}:{port}" in repr(in_pod)
    await in_pod.aclose()


@pytest.mark.parametrize("spec", ["k8s:app=phoenix@default", "k8s:app=phoenix:7100",
                                  "k8s:@default:7100", "k8s:app=x@default:7100?user=me"])
def test_bad_k8s_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match="expected one of"):
        discovery_from_spec(spec, environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1"})


def test_k8s_spec_outside_a_pod_needs_an_api_url() -> None:
    with pytest.raises(ConfigError, match=r"KUBERNETES_SERVICE_HOST is not set.*\?api=URL"):
        discovery_from_spec("k8s:app=phoenix@default:7100", environ={})


# --- Consul -------------------------------------------------------------------------------


class FakeConsul:
    """A Consul agent + catalog for one datacenter, with TTL checks on the agent's clock."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.node = {"ID": "a5c1b4b0-0000-0000-0000-000000000001", "Node": "agent-1",
                     "Address": "127.0.40.1", "Datacenter": "dc1",
                     "TaggedAddresses": {"lan": "127.0.40.1", "wan": "127.0.40.1"}, "Meta": {}}
        self.services: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.hang = asyncio.Event()
        self.hang.set()
        self.app = web.Application(middlewares=[self.acl])
        r = self.app.router
        r.add_put("/v1/agent/service/register", self.register)
        r.add_put("/v1/agent/service/deregister/{id}", self.deregister)
        r.add_put("/v1/agent/check/pass/{check}", self.check_pass)
        r.add_get("/v1/health/service/{name}", self.health)
        r.add_get("/v1/catalog/service/{name}", self.catalog)

    @web.middleware
    async def acl(self, request: web.Request, handler: Any) -> web.StreamResponse:
        await self.hang.wait()
        if self.token is not None and request.headers.get("X-Consul-Token") != self.token:
            return web.Response(status=403, text="ACL not found")
        response: web.StreamResponse = await handler(request)
        return response

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def register(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body.get("Name"), str) or not isinstance(body.get("Port"), int):
            return web.Response(status=400, text="Invalid service: missing Name or Port")
        sid = body.get("ID") or body["Name"]
        self.services[sid] = body
        check = body.get("Check")
        if check:
            ttl = float(check["TTL"].removesuffix("s"))
            self.checks[check.get("CheckID") or f"service:{sid}"] = {
                "ServiceID": sid, "TTL": ttl, "Name": check.get("Name", ""),
                "Status": check.get("Status", "critical"), "Passed": self._now(),
            }
        return web.Response(status=200)

    async def deregister(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if self.services.pop(sid, None) is None:
            return web.Response(status=404, text=f'Unknown service ID "{sid}".')
        self.checks = {k: c for k, c in self.checks.items() if c["ServiceID"] != sid}
        return web.Response(status=200)

    async def check_pass(self, request: web.Request) -> web.Response:
        check = self.checks.get(request.match_info["check"])
        if check is None:
            return web.Response(status=404,
                                text=f'Unknown check ID "{request.match_info["check"]}".')
        check["Status"], check["Passed"] = "passing", self._now()
        return web.Response(status=200)

    def _status(self, cid: str) -> str:
        check = self.checks[cid]
        if check["Status"] == "passing" and self._now() - check["Passed"] > check["TTL"]:
            check["Status"] = "critical"
        return str(check["Status"])

    async def health(self, request: web.Request) -> web.Response:
        passing = request.query.get("passing") in ("", "1", "true")
        out = []
        for sid, svc in self.services.items():
            if svc["Name"] != request.match_info["name"]:
                continue
            checks = [{"Node": self.node["Node"], "CheckID": "serfHealth",
                       "Name": "Serf Health Status", "Status": "passing", "ServiceID": ""}]
            checks += [{"Node": self.node["Node"], "CheckID": cid, "Name": c["Name"],
                        "Status": self._status(cid), "ServiceID": sid,
                        "ServiceName": svc["Name"]}
                       for cid, c in self.checks.items() if c["ServiceID"] == sid]
            if passing and any(c["Status"] != "passing" for c in checks):
                continue
            out.append({"Node": self.node,
                        "Service": {"ID": sid, "Service": svc["Name"], "Tags": [],
                                    "Address": svc.get("Address", ""), "Port": svc["Port"],
                                    "Meta": svc.get("Meta"),
                                    "Weights": {"Passing": 1, "Warning": 1}},
                        "Checks": checks})
        return web.json_response(out)

    async def catalog(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"ID": self.node["ID"], "Node": self.node["Node"], "Address": self.node["Address"],
             "Datacenter": "dc1", "TaggedAddresses": self.node["TaggedAddresses"],
             "ServiceID": sid, "ServiceName": svc["Name"],
             "ServiceAddress": svc.get("Address", ""), "ServicePort": svc["Port"],
             "ServiceTags": [], "ServiceMeta": svc.get("Meta") or {}}
            for sid, svc in self.services.items() if svc["Name"] == request.match_info["name"]
        ])


@pytest.fixture
async def consul() -> AsyncIterator[tuple[FakeConsul, str]]:
    fake = FakeConsul(token="s3cret")
    # An instance registered without an address (Consul then means the node's address)
    # and one whose TTL check is already critical.
    fake.services["phoenix-old"] = {"ID": "phoenix-old", "Name": "phoenix", "Port": 7300}
    fake.services["phoenix-sick"] = {"ID": "phoenix-sick", "Name": "phoenix",
                                     "Address": "127.0.40.9", "Port": 7300}
    fake.checks["service:phoenix-sick"] = {"ServiceID": "phoenix-sick", "TTL": 10.0,
                                           "Name": "", "Status": "critical", "Passed": 0.0}
    runner, url = await serve(fake.app)
    try:
        yield fake, url
    finally:
        fake.hang.set()
        await runner.cleanup()


async def test_consul_register_list_healthy_and_catalog(consul: tuple[FakeConsul, str]) -> None:
    fake, url = consul
    a = ConsulSeeds(url, "phoenix", token="s3cret", ttl_s=5)
    b = ConsulSeeds(url, "phoenix", token="s3cret", ttl_s=5)
    try:
        await a.register("n1", "127.0.0.1:7101")
        await b.register("n2", "[::1]:7102")
        reg = fake.services["phoenix-n1"]
        assert (reg["Address"], reg["Port"], reg["Check"]["TTL"]) == ("127.0.0.1", 7101, "5s")
        assert await a.seeds() == ["127.0.0.1:7101", "127.0.40.1:7300", "[::1]:7102"]
        catalog = ConsulSeeds(url, "phoenix", token="s3cret", passing_only=False)
        assert await catalog.seeds() == ["127.0.0.1:7101", "127.0.40.1:7300",
                                         "127.0.40.9:7300", "[::1]:7102"]
        await catalog.aclose()
        await b.deregister()
        assert "phoenix-n2" not in fake.services
        assert await a.seeds() == ["127.0.0.1:7101", "127.0.40.1:7300"]
    finally:
        await a.aclose()
        await b.aclose()
    assert "phoenix-n1" not in fake.services  # aclose deregisters


async def test_consul_ttl_passes_keep_us_healthy_and_a_forgetful_agent_gets_us_back(
    consul: tuple[FakeConsul, str],
) -> None:
    fake, url = consul
    async with ConsulSeeds(url, "phoenix", token="s3cret", ttl_s=2) as node:
        await node.register("n1", "127.0.0.1:7101")
        await wait_until(lambda: node.passes >= 4, timeout=10, what="TTL passes")
        assert "127.0.0.1:7101" in await node.seeds()  # > 1 TTL later, still passing
        fake.services.pop("phoenix-n1")  # the agent restarted and forgot us
        fake.checks.pop("service:phoenix-n1")
        await wait_until(lambda: node.reregistrations >= 1, timeout=10, what="re-register")
        assert "127.0.0.1:7101" in await node.seeds()


async def test_consul_acl_token_is_required(consul: tuple[FakeConsul, str]) -> None:
    _, url = consul
    async with ConsulSeeds(url, "phoenix") as anonymous:
        with pytest.raises(DiscoveryError, match="answered 403: ACL not found"):
            await anonymous.seeds()
    seeds = discovery_from_spec(f"consul:{url}/phoenix", environ={"CONSUL_HTTP_TOKEN": "s3cret"})
    try:
        assert await seeds.seeds() == ["127.0.40.1:7300"]
    finally:
        await seeds.aclose()
    catalog = discovery_from_spec(f"consul:{url}/phoenix?passing=false&ttl=3",
                                  environ={"CONSUL_HTTP_TOKEN": "s3cret"})
    try:
        assert await catalog.seeds() == ["127.0.40.1:7300", "127.0.40.9:7300"]
    finally:
        await catalog.aclose()


async def test_a_hanging_consul_is_cut_off_and_the_poller_recovers(
    consul: tuple[FakeConsul, str],
) -> None:
    fake, url = consul
    got: list[list[str]] = []
    poller = DiscoveryPoller(ConsulSeeds(url, "phoenix", token="s3cret", ttl_s=5), Env(),
                             got.append, interval_s=0.05, timeout_s=0.3,
                             register=("n1", "127.0.0.1:7101"))
    fake.hang.clear()  # the agent accepts connections but never answers
    async with poller:
        await wait_until(lambda: poller.statistics().timeouts >= 2, what="timeouts")
        assert got == [] and not poller.statistics().registered
        fake.hang.set()
        await wait_until(lambda: bool(got), timeout=10, what="seeds after recovery")
        assert got[-1] == ["127.0.0.1:7101", "127.0.40.1:7300"]
        assert poller.statistics().registered and poller.statistics().failure_streak == 0
    assert "phoenix-n1" not in fake.services  # the poller deregistered on close


@pytest.mark.parametrize("spec", ["consul:127.0.0.1:8500/phoenix", "consul:http://h:8500",
                                  "consul:http://h:8500/a/b", "consul:http://h:1/p?passing=maybe",
                                  "consul:http://h:1/p?dc=eu"])
def test_bad_consul_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match="expected one of"):
        discovery_from_spec(spec)
