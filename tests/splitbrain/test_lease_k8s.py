"""The Kubernetes split-brain lease against a fake API server speaking the Lease REST protocol.

No Kubernetes API server can run here. ``FakeLeaseApiServer`` is a small ``aiohttp.web``
app on 127.0.0.1 that serves ``/apis/coordination.k8s.io/v1/namespaces/NS/leases[/NAME]``
the way the real one does for what the provider uses: GET (404 NotFound when absent),
POST (409 AlreadyExists), PUT as a compare-and-swap on ``metadata.resourceVersion`` (409
Conflict on a stale version), Status error bodies, bearer-token auth (401) and RBAC (403
in a namespace the service account may not touch). It never judges expiry: as on a real
cluster, that is the client's job, from ``renewTime`` and ``leaseDurationSeconds``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from phoenix_cluster._membership.discovery import DiscoveryError
from phoenix_cluster._splitbrain.lease_k8s import KubernetesLease
from phoenix_cluster._splitbrain.lease_spec import lease_from_spec
from phoenix_cluster.errors import ConfigError

_PREFIX = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
_SPEC_FIELDS = {"holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime",
                "leaseTransitions"}


class FakeLeaseApiServer:
    """Leases by (namespace, name), each with a resourceVersion bumped on every write."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []  # (method, holderIdentity)
        self._version = 100
        self.app = web.Application()
        self.app.router.add_get(_PREFIX + "/{name}", self.get)
        self.app.router.add_post(_PREFIX, self.create)
        self.app.router.add_put(_PREFIX + "/{name}", self.replace)

    @staticmethod
    def status(code: int, reason: str, message: str) -> web.Response:
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": message, "reason": reason, "code": code},
                                 status=code)

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self.status(401, "Unauthorized", "Unauthorized")
        ns = request.match_info["ns"]
        if ns == "locked":
            return self.status(403, "Forbidden", f'leases.coordination.k8s.io is forbidden: '
                               f'User "system:serviceaccount:{ns}:phoenix" cannot update '
                               f'resource "leases" in API group "coordination.k8s.io"')
        return None

    def _checked(self, body: Any, ns: str) -> dict[str, Any] | web.Response:
        if (not isinstance(body, dict) or body.get("apiVersion") != "coordination.k8s.io/v1"
                or body.get("kind") != "Lease"):
            return self.status(400, "BadRequest", "not a coordination.k8s.io/v1 Lease")
        spec = body.get("spec") or {}
        if set(spec) - _SPEC_FIELDS or not isinstance(spec.get("leaseDurationSeconds"), int):
            return self.status(422, "Invalid", f"bad Lease spec {spec!r}")
        meta = body.get("metadata") or {}
        if meta.get("namespace", ns) != ns or not meta.get("name"):
            return self.status(400, "BadRequest", "metadata.name/namespace mismatch")
        return body

    def _store(self, ns: str, body: dict[str, Any], method: str) -> web.Response:
        self._version += 1
        meta = {**body["metadata"], "namespace": ns, "resourceVersion": str(self._version)}
        stored = {**body, "metadata": meta}
        self.leases[(ns, meta["name"])] = stored
        self.writes.append((method, body["spec"].get("holderIdentity") or ""))
        return web.json_response(stored, status=201 if method == "POST" else 200)

    async def get(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        ns, name = request.match_info["ns"], request.match_info["name"]
        lease = self.leases.get((ns, name))
        if lease is None:
            return self.status(404, "NotFound",
                               f'leases.coordination.k8s.io "{name}" not found')
        return web.json_response(lease)

    async def create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        ns = request.match_info["ns"]
        body = self._checked(await request.json(), ns)
        if isinstance(body, web.Response):
            return body
        name = body["metadata"]["name"]
        if (ns, name) in self.leases:
            return self.status(409, "AlreadyExists",
                               f'leases.coordination.k8s.io "{name}" already exists')
        return self._store(ns, body, "POST")

    async def replace(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        ns, name = request.match_info["ns"], request.match_info["name"]
        body = self._checked(await request.json(), ns)
        if isinstance(body, web.Response):
            return body
        current = self.leases.get((ns, name))
        if current is None:
            return self.status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            return self.status(409, "Conflict", f'Operation cannot be fulfilled on '
                               f'leases.coordination.k8s.io "{name}": the object has been '
                               f'modified; please apply your changes to the latest version')
        return self._store(ns, body, "PUT")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[FakeLeaseApiServer, str, str]]:
    server = FakeLeaseApiServer(token="s3cret")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    runner = web.AppRunner(server.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield server, f"http://{host}:{port}", str(token)
    finally:
        await runner.cleanup()


async def test_create_renew_refuse_and_release(api: tuple[FakeLeaseApiServer, str, str]) -> None:
    server, url, token = api
    a = KubernetesLease(url, "phoenix", "split-brain", token_path=token)
    b = KubernetesLease(url, "phoenix", "split-brain", token_path=token)
    try:
        assert await a.read() is None
        assert await a.acquire("side-a", 30)
        spec = server.leases[("phoenix", "split-brain")]["spec"]
        assert spec["holderIdentity"] == "side-a" and spec["leaseDurationSeconds"] == 30
        assert spec["acquireTime"] == spec["renewTime"]
        assert await b.acquire("side-a", 30)  # another node of the same side: a renewal
        renewed = server.leases[("phoenix", "split-brain")]["spec"]
        assert renewed["acquireTime"] == spec["acquireTime"]
        assert renewed["renewTime"] >= spec["renewTime"]
        assert not await b.acquire("side-b", 30)
        await b.release("side-b")  # not the holder: no write
        assert server.writes == [("POST", "side-a"), ("PUT", "side-a")]
        await a.release("side-a")
        assert server.leases[("phoenix", "split-brain")]["spec"]["holderIdentity"] is None
        assert await b.acquire("side-b", 30)  # released: free at once
        assert server.leases[("phoenix", "split-brain")]["spec"]["leaseTransitions"] == 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_lease_not_renewed_expires_and_another_owner_takes_it(
    api: tuple[FakeLeaseApiServer, str, str],
) -> None:
    server, url, token = api
    lease = KubernetesLease(url, "phoenix", "sb", token_path=token)
    try:
        assert await lease.acquire("side-a", 1)
        started = time.monotonic()
        while time.monotonic() - started < 1.6:  # renewed past its duration: still held
            assert await lease.acquire("side-a", 1)
            assert not await lease.acquire("side-b", 1)
            await asyncio.sleep(0.3)
        stopped = time.monotonic()
        while not await lease.acquire("side-b", 1):
            assert time.monotonic() - stopped < 5, "the unrenewed Lease never expired"
            await asyncio.sleep(0.1)
        assert time.monotonic() - stopped >= 0.6  # not before its duration ran out
        spec = server.leases[("phoenix", "sb")]["spec"]
        assert spec["holderIdentity"] == "side-b" and spec["leaseTransitions"] == 1
    finally:
        await lease.aclose()


async def test_two_sides_racing_get_exactly_one_winner(
    api: tuple[FakeLeaseApiServer, str, str],
) -> None:
    server, url, token = api
    clients = [KubernetesLease(url, "phoenix", "race", token_path=token) for _ in range(6)]
    try:
        owners = [f"side-{i % 2}" for i in range(6)]
        results = await asyncio.gather(*(c.acquire(o, 30) for c, o in zip(clients, owners,
                                                                           strict=True)))
        holder = server.leases[("phoenix", "race")]["spec"]["holderIdentity"]
        assert {o for o, won in zip(owners, results, strict=True) if won} == {holder}
    finally:
        for c in clients:
            await c.aclose()


async def test_api_errors_name_the_cause(
    api: tuple[FakeLeaseApiServer, str, str], tmp_path: Path,
) -> None:
    _, url, token = api
    locked = KubernetesLease(url, "locked", "sb", token_path=token)
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    rejected = KubernetesLease(url, "phoenix", "sb", token_path=str(wrong))
    try:
        with pytest.raises(DiscoveryError, match=r"403.*get, create and update on leases"):
            await locked.acquire("side-a", 10)
        with pytest.raises(DiscoveryError, match=r"401.*token was rejected"):
            await rejected.acquire("side-a", 10)
    finally:
        await locked.aclose()
        await rejected.aclose()


async def test_lease_specs(api: tuple[FakeLeaseApiServer, str, str]) -> None:
    server, url, token = api
    through_proxy = lease_from_spec(f"k8s:phoenix/sb?api={url}&token={token}")
    try:
        assert await through_proxy.acquire("side-a", 5)
        assert server.leases[("phoenix", "sb")]["spec"]["holderIdentity"] == "side-a"
    finally:
        await through_proxy.aclose()
    in_pod = lease_from_spec("k8s:phoenix/sb", environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                                        "KUBERNETES_SERVICE_PORT": "6443"})
    assert repr(in_pod) == "<KubernetesLease https://10.0.0.1:6443 lease phoenix/sb>"
    await in_pod.aclose()
    with pytest.raises(ConfigError, match=r"KUBERNETES_SERVICE_HOST is not set"):
        lease_from_spec("k8s:phoenix/sb", environ={})
    for bad in ("k8s:phoenix", "k8s:/sb", "k8s:a/b/c", "k8s:phoenix/sb?user=me"):
        with pytest.raises(ConfigError, match="expected one of"):
            lease_from_spec(bad, environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
