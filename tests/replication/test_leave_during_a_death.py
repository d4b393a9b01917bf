"""A member killed while another leaves gracefully and comes back under the same name,
on whole nodes in virtual time (replication.md, "Rolling restarts": a death during a
leave). Before the fix the restarted member never became ready: partitions whose
replica set held both the dead and the leaving member kept one synced replica, and the
rejoined member, which never decided about the dead one itself, waited for its memory
forever.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import phoenix_cluster as phx
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual, wait_for

CATCH_UP_BOUND_S = 10.0
"""Virtual seconds the rejoined member may take to be caught up: the leave's hand-over
already re-elected what needed it, so this is elections, not failure-detection margins."""


class Counter(phx.Agent, kind="tests.leave_during_death.counter"):
    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    async def read(self) -> int:
        return self.total


def test_a_member_that_left_as_another_died_is_ready_soon_after_it_rejoins() -> None:
    async def scenario() -> None:
        async with MemoryCluster(4) as cluster:
            loop = asyncio.get_running_loop()
            n1 = cluster.node("n1")
            keys = [f"k{i}" for i in range(24)]
            for i, key in enumerate(keys):
                assert await n1.ref(Counter, key).add(i + 1) == i + 1
            # n4 dies; before anyone notices, n2 (not every node's seed) leaves.
            cluster.kill("n4")
            await cluster.node("n2").aclose()
            started = loop.time()
            rejoined = await cluster.add("n2")
            await asyncio.wait_for(rejoined.wait_caught_up(), CATCH_UP_BOUND_S)
            assert rejoined.lagging_partitions == 0
            assert loop.time() - started < CATCH_UP_BOUND_S
            # Every acknowledged write survived the death and the leave.
            assert [await n1.ref(Counter, key).read() for key in keys] == \
                [i + 1 for i in range(len(keys))]

    run_virtual(scenario())


def test_a_member_that_joined_after_a_peer_was_downed_counts_it_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    """A split-brain decision taken before this node joined: it learns it from the
    others (the state its join pulled, or gossip), not only from its own resolver, so
    its elections stop waiting for the downed member's memory too."""
    caplog.set_level(logging.INFO, logger="phoenix_cluster.replication")

    def heard(node: str) -> bool:
        return any(f"node {node}: ['n3'] downed" in r.getMessage() for r in caplog.records)

    async def scenario() -> None:
        async with MemoryCluster(3, split_brain_stable_after_s=2.0) as cluster:
            cluster.kill("n3")
            await wait_for(lambda: heard("n1"), 30, what="n1 downing n3")
            late = await cluster.add("n4")
            await late.wait_joined()
            await wait_for(lambda: heard("n4"), 10, what="n4 hearing n3 was downed")

    run_virtual(scenario())
