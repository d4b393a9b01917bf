"""The split-brain lease as a Kubernetes ``coordination.k8s.io/v1`` Lease object.

The same object and fields as client-go's leader election and Akka's Kubernetes lease:
``spec.holderIdentity`` names the owner, ``spec.renewTime`` + ``leaseDurationSeconds``
says until when. Every write is a compare-and-swap on ``metadata.resourceVersion``
(the API server answers 409 Conflict to a write based on an older version), so two sides
racing for an expired or free Lease cannot both win. Acquiring:

- no Lease yet: create it (409 Already Exists: someone was faster, read it again);
- held by ``owner``: write a fresh ``renewTime`` (renew; a side's nodes share the owner id);
- held by another owner whose ``renewTime + leaseDurationSeconds`` is still ahead of our
  wall clock: ``False``;
- expired, or released (no holder): take it over, counting ``leaseTransitions``.

Expiry is judged on the wall clocks of the nodes (as in Akka's lease): keep them in sync
(NTP) to well within ``lease_ttl_s``. The service account needs ``get``, ``create`` and
``update`` on ``leases`` in the namespace (deploy/kubernetes/rbac.yaml has them).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._membership.discovery import DiscoveryError
from phoenix_cluster._membership.discovery_http import HttpStatusError
from phoenix_cluster._membership.discovery_k8s import (
    DEFAULT_CA_PATH,
    DEFAULT_TOKEN_PATH,
    KubernetesApi,
)
from phoenix_cluster.errors import ConfigError

__all__ = ["KubernetesLease"]

_CONFLICT_RETRIES = 3


class KubernetesLease:
    """The ``lease`` strategy's referee as a Kubernetes Lease (see the module docstring).

    Args:
        api_url: the API server (``https://KUBERNETES_SERVICE_HOST:PORT`` in a pod).
        namespace: the Lease's namespace.
        name: the Lease's name, one per cluster.
        token_path / ca_path: the service account's token and CA (see
            :class:`~phoenix_cluster._membership.discovery_k8s.KubernetesApi`).
        env: the node's clock (request deadlines, and the wall clock for expiry).
        timeout_s: deadline of each API request.

    API failures raise :class:`~phoenix_cluster._membership.discovery.DiscoveryError`
    (403 names the missing RBAC rule); the resolver counts them as a lost lease.
    """

    def __init__(
        self,
        api_url: str,
        namespace: str,
        name: str,
        *,
        token_path: str | None = DEFAULT_TOKEN_PATH,
        ca_path: str | None = DEFAULT_CA_PATH,
        env: Env | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        for what, value in (("namespace", namespace), ("name", name)):
            if not value or "/" in value:
                raise ConfigError(f"bad setting split_brain_lease: bad Lease {what} {value!r}",
                                  key="split_brain_lease")
        self._env = env or Env()
        self._api = KubernetesApi(api_url, token_path=token_path, ca_path=ca_path,
                                  env=self._env, timeout_s=timeout_s,
                                  setting="split_brain_lease")
        self.namespace = namespace
        self.name = name
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    async def read(self) -> dict[str, Any] | None:
        """The Lease object, or ``None`` if it does not exist."""
        try:
            lease = await self._api.request("GET", f"{self._collection}/{self.name}")
        except HttpStatusError as exc:
            if exc.status == 404:
                return None
            raise self._explain(exc) from exc
        if not isinstance(lease, dict) or not isinstance(lease.get("metadata"), dict):
            raise DiscoveryError(f"kubernetes: Lease {self.name} answered {lease!r:.200}")
        return lease

    async def acquire(self, owner: str, ttl_s: float) -> bool:
        """Take, renew or be refused the Lease for ``owner`` (``ttl_s`` in whole seconds)."""
        if not owner:
            raise ValueError("the lease owner must not be empty")
        for _ in range(_CONFLICT_RETRIES):
            lease = await self.read()
            if lease is None:
                if await self._write("POST", self._collection, self._body(owner, ttl_s)):
                    return True
                continue  # created meanwhile by someone else: read it and judge again
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or None
            if holder is not None and holder != owner and not self._expired(spec):
                return False
            renewing = holder == owner
            body = self._body(owner, ttl_s, lease=lease, renewing=renewing)
            if await self._write("PUT", f"{self._collection}/{self.name}", body):
                return True
        return False  # lost every race in a row: somebody else is writing it right now

    async def release(self, owner: str) -> None:
        """Clear ``holderIdentity`` if ``owner`` holds the Lease (others may take it at once)."""
        lease = await self.read()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != owner:
            return
        spec = dict(lease.get("spec") or {})
        spec["holderIdentity"] = None
        await self._write("PUT", f"{self._collection}/{self.name}", {**lease, "spec": spec})

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._env.clock.wall(), dt.UTC)

    def _expired(self, spec: dict[str, Any]) -> bool:
        stamp = spec.get("renewTime") or spec.get("acquireTime")
        try:
            renewed = dt.datetime.fromisoformat(str(stamp))
            seconds = float(spec.get("leaseDurationSeconds") or 0)
        except (TypeError, ValueError):
            return True  # no readable renewal: nobody can be relying on it
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=dt.UTC)
        return renewed + dt.timedelta(seconds=seconds) <= self._now()

    def _body(self, owner: str, ttl_s: float, *, lease: dict[str, Any] | None = None,
              renewing: bool = False) -> dict[str, Any]:
        now = self._now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # MicroTime
        spec = dict((lease or {}).get("spec") or {})
        spec.update(holderIdentity=owner, leaseDurationSeconds=max(1, math.ceil(ttl_s)),
                    renewTime=now)
        if not renewing:
            spec["acquireTime"] = now
            if lease is not None:
                spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        metadata = dict((lease or {}).get("metadata") or {"name": self.name,
                                                          "namespace": self.namespace})
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": metadata, "spec": spec}

    async def _write(self, method: str, path: str, body: dict[str, Any]) -> bool:
        """``True`` if written; ``False`` on 409 (someone wrote first: read again)."""
        try:
            await self._api.request(method, path, body=body)
        except HttpStatusError as exc:
            if exc.status == 409:
                return False
            raise self._explain(exc) from exc
        return True

    def _explain(self, exc: HttpStatusError) -> DiscoveryError:
        if exc.status == 401:
            return DiscoveryError(f"{exc} (the service-account token was rejected)")
        if exc.status == 403:
            return DiscoveryError(
                f"{exc} (the service account needs a Role allowing get, create and update on "
                f"leases.coordination.k8s.io in namespace {self.namespace}; see "
                f"deploy/kubernetes/rbac.yaml)")
        return exc

    async def aclose(self) -> None:
        await self._api.aclose()

    def __repr__(self) -> str:
        return f"<KubernetesLease {self._api.url} lease {self.namespace}/{self.name}>"
