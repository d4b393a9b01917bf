"""The etcd split-brain lease against a real etcd on 127.0.0.1 (tests/testing/etcd_server.py).

Acquire, re-entrant renew, refusal of another owner, loss on expiry measured on etcd's
clock, a race for a free lease with exactly one winner, compare-and-delete release, and
an unreachable etcd as a clear error the resolver counts as a lost lease.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from etcd_server import ETCD, MISSING, running_etcd

from phoenix_cluster._membership.discovery import DiscoveryError
from phoenix_cluster._splitbrain.lease_etcd import EtcdLease
from phoenix_cluster._splitbrain.lease_spec import checked_lease_spec, lease_from_spec
from phoenix_cluster.errors import ConfigError
from phoenix_cluster.testing import free_port

pytestmark = pytest.mark.skipif(ETCD is None, reason=MISSING)


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_etcd(tmp_path_factory.mktemp("etcd-lease")) as url:
        yield url


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return f"/phx-lease/{request.node.name}"


async def test_acquire_renew_refuse_and_release(etcd_url: str, key: str) -> None:
    mine, theirs = EtcdLease(etcd_url, key), EtcdLease(etcd_url, key)
    try:
        assert await mine.holder() is None
        assert await mine.acquire("side-a", 30)
        held = await theirs.holder()
        assert held is not None and held[0] == "side-a"
        # Re-entrant: another node of the same side, through another client, renews it.
        assert await theirs.acquire("side-a", 30)
        assert await theirs.holder() == held  # the same hold, the same etcd lease
        assert not await theirs.acquire("side-b", 30)
        await theirs.release("side-b")  # not the holder: nothing happens
        assert (await mine.holder() or ("",))[0] == "side-a"
        await mine.release("side-a")
        assert await mine.holder() is None
        assert await theirs.acquire("side-b", 30)
    finally:
        await mine.aclose()
        await theirs.aclose()


async def test_a_hold_not_renewed_expires_and_another_owner_takes_it(
    etcd_url: str, key: str
) -> None:
    lease = EtcdLease(etcd_url, key)
    try:
        assert await lease.acquire("side-a", 2)  # etcd's minimum TTL is about 2 s
        started = time.monotonic()
        # Renewing keeps it past its TTL...
        while time.monotonic() - started < 2.6:  # past the TTL
            assert await lease.acquire("side-a", 2)
            assert not await lease.acquire("side-b", 2)
            await asyncio.sleep(0.4)
        # ...and once nobody renews, etcd drops it after the TTL: side-b may take it.
        stopped = time.monotonic()
        while not await lease.acquire("side-b", 2):
            assert time.monotonic() - stopped < 10, "the unrenewed hold never expired"
            await asyncio.sleep(0.2)
        assert time.monotonic() - stopped >= 1.0  # not before its TTL ran out
        held = await lease.holder()
        assert held is not None and held[0] == "side-b"
    finally:
        await lease.aclose()


async def test_two_sides_racing_for_a_free_lease_get_exactly_one_winner(
    etcd_url: str, key: str
) -> None:
    clients = [EtcdLease(etcd_url, key) for _ in range(6)]
    try:
        owners = [f"side-{i % 2}" for i in range(6)]  # three nodes per side
        results = await asyncio.gather(*(c.acquire(o, 30) for c, o in zip(clients, owners,
                                                                           strict=True)))
        held = await clients[0].holder()
        assert held is not None
        winners = {o for o, won in zip(owners, results, strict=True) if won}
        assert winners == {held[0]}  # every node of the winning side, none of the other
        assert results.count(True) == 3
    finally:
        for c in clients:
            await c.aclose()


async def test_unreachable_etcd_raises_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    lease = EtcdLease(url, "/phx/lease", timeout_s=2)
    try:
        with pytest.raises(DiscoveryError, match=rf"etcd: POST {url}/v3/kv/range"):
            await lease.acquire("side-a", 10)
    finally:
        await lease.aclose()


def test_lease_specs(etcd_url: str) -> None:
    lease = lease_from_spec(f"etcd:{etcd_url}/phoenix/split-brain")
    assert isinstance(lease, EtcdLease) and lease.key == "/phoenix/split-brain"
    assert checked_lease_spec("keep-majority", None) is None
    with pytest.raises(ConfigError, match="split_brain = lease needs the lease service"):
        checked_lease_spec("lease", None)
    for bad in ("etcd:127.0.0.1:2379/k", "etcd:http://127.0.0.1:2379", "zk:host/k",
                "etcd:http://127.0.0.1:2379/k?ttl=3", "lease"):
        with pytest.raises(ConfigError, match="expected one of") as info:
            checked_lease_spec("lease", bad)
        assert info.value.key == "split_brain_lease"
