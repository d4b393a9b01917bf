"""The ``lease`` split-brain strategy on real node processes with a real etcd as the referee.

Three ``phx node`` processes run ``--split-brain=lease`` against an etcd started on
127.0.0.1 (tests/testing/etcd_server.py); the cut is iptables rules between the nodes'
loopback addresses (root only), so every node still reaches etcd. Before the cut the
test makes the lone side's owner id (``node-0``, its lowest-address member) hold the
lease: the side holding the lease survives even as a minority of one, and the majority,
refused by etcd, downs itself. That is what the lease buys over keep-majority: the
referee, not the head count, decides.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from etcd_server import ETCD, MISSING, running_etcd

from phoenix_cluster._splitbrain import EXIT_DOWNED
from phoenix_cluster._splitbrain.lease_etcd import EtcdLease
from phoenix_cluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.slow

STABLE_AFTER_S = 4.0
DOWN_DEADLINE_S = 30.0
DECISION = "split-brain decision at "


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if ETCD is None:
        pytest.skip(MISSING)
    with running_etcd(tmp_path_factory.mktemp("etcd-sbr")) as url:
        yield url


def decisions(cluster: LocalCluster, index: int) -> list[str]:
    node = cluster.nodes[index]
    return [line for line in node.log().splitlines() if f"{DECISION}{node.name}:" in line]


def tails(cluster: LocalCluster) -> str:
    return "\n".join(f"--- {n.name}\n{n.log()[-2500:]}" for n in cluster.nodes)


async def test_the_side_holding_the_etcd_lease_survives_even_as_a_minority(
    etcd_url: str,
) -> None:
    reason = LocalCluster.network_faults_unavailable()
    if reason is not None:
        pytest.skip(reason)
    key = "/phx-test/split-brain"
    env = {"PHX_SPLIT_BRAIN": "lease", "PHX_SPLIT_BRAIN_LEASE": f"etcd:{etcd_url}{key}",
           "PHX_SPLIT_BRAIN_STABLE_AFTER_S": str(STABLE_AFTER_S)}
    referee = EtcdLease(etcd_url, key)
    try:
        async with LocalCluster(nodes=3, env=env) as cluster:
            assert await referee.acquire("node-0", 120)  # the lone side's owner id
            started = time.monotonic()
            cluster.partition([0], [1, 2])
            try:
                codes = [await cluster.wait(i, timeout_s=DOWN_DEADLINE_S) for i in (1, 2)]
            except TimeoutError:
                raise AssertionError(f"the majority did not down:\n{tails(cluster)}") from None
            assert codes == [EXIT_DOWNED, EXIT_DOWNED]
            assert STABLE_AFTER_S < time.monotonic() - started < DOWN_DEADLINE_S
            for i in (1, 2):
                [line] = decisions(cluster, i)
                assert "DOWN_SELF by lease" in line, line
                # The owner id is the lowest-address member this node reaches: node-1,
                # unless node-1 downed and exited before node-2 decided (a loaded machine
                # detects the cut at different times; node-2's changed inputs restart its
                # timer), and node-2 then stands alone.
                reachable = line.split("reachable=[", 1)[1].split("]", 1)[0].split(", ")
                owner = "node-1" if "node-1" in reachable else "node-2"
                assert f"lease owner id {owner}, lease holder None" in line, line
                assert "this side did not get the lease" in line, line
            # The cut-off node learns its losses later (Lifeguard slows its probing) and
            # waits its minority head start before acquiring: it decides last.
            await wait_until(lambda: bool(decisions(cluster, 0)), timeout=DOWN_DEADLINE_S,
                             what="node-0 to decide")
            assert cluster.nodes[0].running, tails(cluster)
            lines = decisions(cluster, 0)
            assert all("KEEP by lease" in line for line in lines), tails(cluster)
            assert "lease_holder=node-0" in lines[-1] and "this side holds the lease" in lines[-1]
            held = await referee.holder()
            assert held is not None and held[0] == "node-0"
    finally:
        await referee.aclose()
