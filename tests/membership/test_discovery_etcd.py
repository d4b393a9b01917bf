"""etcd discovery against a real etcd (Debian's etcd-server) started on 127.0.0.1.

One etcd per module, on free client and peer ports with a temporary data dir; each test
uses its own key prefix. Skipped, with the reason, only when the etcd binary is missing
(``scripts/ensure-system-deps.sh`` installs it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from etcd_server import ETCD, MISSING, running_etcd

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._membership.discovery import DiscoveryError
from phoenix_cluster._membership.discovery_etcd import EtcdSeeds
from phoenix_cluster._membership.discovery_poller import DiscoveryPoller
from phoenix_cluster._membership.discovery_spec import discovery_from_spec
from phoenix_cluster.errors import ConfigError
from phoenix_cluster.testing import free_port, wait_until

pytestmark = pytest.mark.skipif(ETCD is None, reason=MISSING)


def _post(url: str, path: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        answer: dict[str, object] = json.loads(resp.read())
        return answer


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_etcd(tmp_path_factory.mktemp("etcd")) as url:
        yield url


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"/phx-{request.node.name}/"


async def test_registered_nodes_are_listed_and_removed_on_deregister(
    etcd_url: str, prefix: str
) -> None:
    # Noise that must not show up: a neighbour prefix, a value that is not HOST:PORT.
    _post(etcd_url, "/v3/kv/put", {"key": _b64(prefix.rstrip("/") + "x/n9"),
                                   "value": _b64("127.0.9.9:7100")})
    _post(etcd_url, "/v3/kv/put", {"key": _b64(prefix + "junk"), "value": _b64("not an addr")})
    a, b = EtcdSeeds(etcd_url, prefix, ttl_s=5), EtcdSeeds(etcd_url, prefix, ttl_s=5)
    try:
        await a.register("n1", "127.0.0.1:7101")
        await b.register("n2", "[::1]:7102")
        assert await a.seeds() == ["127.0.0.1:7101", "[::1]:7102"]
        assert a.lease_id is not None and a.lease_id != b.lease_id
        assert "registered as n1" in repr(a)
        await b.deregister()  # revokes the lease: gone at once, not after the TTL
        assert await a.seeds() == ["127.0.0.1:7101"]
    finally:
        await a.aclose()
        await b.aclose()
    async with EtcdSeeds(etcd_url, prefix) as reader:
        assert await reader.seeds() == []


async def test_keepalive_holds_the_key_past_its_ttl_and_regrants_a_lost_lease(
    etcd_url: str, prefix: str
) -> None:
    async with EtcdSeeds(etcd_url, prefix, ttl_s=2) as node:
        await node.register("n1", "127.0.0.1:7101")
        first_lease = node.lease_id
        await wait_until(lambda: node.renewals >= 4, timeout=10, what="lease renewals")
        assert await node.seeds() == ["127.0.0.1:7101"]  # > 2 TTLs later, still there
        # etcd loses the lease (as after a long cut-off): the next keepalive notices and
        # the node writes its key again under a new lease.
        _post(etcd_url, "/v3/lease/revoke", {"ID": first_lease})
        assert await node.seeds() == []
        await wait_until(lambda: node.regrants >= 1, timeout=10, what="re-registration")
        assert node.lease_id != first_lease
        assert await node.seeds() == ["127.0.0.1:7101"]


async def test_a_killed_node_drops_out_after_its_ttl(etcd_url: str, prefix: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from phoenix_cluster._membership.discovery_etcd import EtcdSeeds\n"
        "async def main():\n"
        f"    s = EtcdSeeds({etcd_url!r}, {prefix!r}, ttl_s=2)\n"
        "    await s.register('doomed', '127.0.0.1:7199')\n"
        "    print('registered', flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line.strip() == b"registered"
        async with EtcdSeeds(etcd_url, prefix) as reader:
            assert await reader.seeds() == ["127.0.0.1:7199"]
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            deadline = time.monotonic() + 10  # TTL 2 s plus etcd's expiry sweep
            while await reader.seeds() != []:
                assert time.monotonic() < deadline, "the dead node's key outlived its lease"
                await asyncio.sleep(0.05)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_pollers_register_and_find_each_other(etcd_url: str, prefix: str) -> None:
    got1: list[list[str]] = []
    got2: list[list[str]] = []
    spec = f"etcd:{etcd_url}{prefix.rstrip('/')}?ttl=5"
    p1 = DiscoveryPoller(discovery_from_spec(spec), Env(), got1.append, interval_s=0.05,
                         register=("n1", "127.0.0.1:7101"), exclude={"127.0.0.1:7101"})
    p2 = DiscoveryPoller(discovery_from_spec(spec), Env(), got2.append, interval_s=0.05,
                         register=("n2", "127.0.0.1:7102"), exclude={"127.0.0.1:7102"})
    async with p1:
        async with p2:
            await wait_until(lambda: bool(got1) and got1[-1] == ["127.0.0.1:7102"],
                             what="n1 sees n2")
            await wait_until(lambda: bool(got2) and got2[-1] == ["127.0.0.1:7101"],
                             what="n2 sees n1")
            assert p1.statistics().registered
        await wait_until(lambda: got1[-1] == [], what="n1 sees n2 leave")
    assert p1.statistics().failures == 0


async def test_unreachable_etcd_is_a_clear_discovery_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with EtcdSeeds(url, "/phoenix/", timeout_s=2) as seeds:
        with pytest.raises(DiscoveryError, match=rf"etcd: POST {url}/v3/kv/range"):
            await seeds.seeds()
        with pytest.raises(DiscoveryError, match="lease/grant"):
            await seeds.register("n1", "127.0.0.1:7100")


def test_etcd_spec_and_argument_checks() -> None:
    seeds = discovery_from_spec("etcd:http://127.0.0.1:2379/phoenix?ttl=7")
    assert isinstance(seeds, EtcdSeeds)
    assert "http://127.0.0.1:2379/phoenix/ ttl=7s" in repr(seeds)
    for bad in ("etcd:127.0.0.1:2379/phoenix", "etcd:http://127.0.0.1:2379",
                "etcd:http://127.0.0.1:2379/p?ttl=0", "etcd:http://h:1/p?ttl=x"):
        with pytest.raises(ConfigError, match="expected one of"):
            discovery_from_spec(bad)
    with pytest.raises(ConfigError):
        EtcdSeeds("127.0.0.1:2379")
