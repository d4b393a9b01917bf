"""Redirects that must not loop: a home's tombstone outlived the hand-off it recorded.

After a heal the members' views disagree for a moment: a node that sees itself as an
agent's home pulls the agent from its holder (which leaves a tombstone naming the
puller), and loses it again when the views agree on another home, the one holding the
tombstone. Calls then went from the home (tombstone) to the puller, which sent them
back to the home, for the tombstone's lifetime (60 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from shared_cluster import key_hosted_by

import phoenix_cluster as phx
from phoenix_cluster._agents.directory import Tombstone
from phoenix_cluster._agents.handoff import Release
from phoenix_cluster._agents.placement import PlacementService
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual


class Meter(phx.Agent, kind="tests.memory.meter"):
    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total


@contextlib.asynccontextmanager
async def key_at_n1(prefix: str) -> AsyncIterator[tuple[MemoryCluster, phx.Node, str]]:
    """Three members, a client, and a key of :class:`Meter` whose home is n1."""
    async with MemoryCluster(3, seed=0) as cluster:
        client = await cluster.add("c", role="client")
        await cluster.wait_settled()
        yield cluster, client, await key_hosted_by(client, "n1", Meter, prefix=prefix)


def placement_of(cluster: MemoryCluster, name: str) -> PlacementService:
    placement = cluster.node(name)._stack.placement
    assert placement is not None
    return placement


def test_a_home_whose_tombstone_names_a_node_that_let_the_agent_go_serves_it() -> None:
    async def main() -> None:
        async with key_at_n1("meter-") as (cluster, client, key):
            meter = client.ref(Meter, key).options(timeout=3.0)
            assert await meter.add(3) == 3
            placement = placement_of(cluster, "n1")
            # n2 pulls the agent as if it were its home (n1 freezes it and leaves a
            # tombstone naming n2), and never hosts it: it is not the home.
            reply, waiting = await placement.migrations.release(
                Release("tests.memory.meter", key, "n2", as_home=True))
            assert reply.record is not None and waiting == []
            assert (Meter._phx_spec.name, key) in placement.directory.tombstones
            assert await meter.add(1) == 4  # served at the home, with what was committed
            assert await cluster.node("n1").where(client.ref(Meter, key)) == "n1"

    run_virtual(main())


def test_a_redirect_loop_fails_at_the_deadline_naming_the_nodes_it_went_through() -> None:
    # Views that disagree until the deadline: the home pins the agent at n2, whose
    # tombstone sends it back to the home. The error says where the calls went, so the
    # loop can be read from a client's log.
    async def main() -> None:
        async with key_at_n1("loop-") as (cluster, client, key):
            k = (Meter._phx_spec.name, key)
            placement_of(cluster, "n1").directory.pins[k] = "n2"
            tombstone = Tombstone("n1", None, expires=1e18)
            placement_of(cluster, "n2").directory.tombstones[k] = tombstone
            with pytest.raises(phx.NodeUnavailable) as caught:
                await client.ref(Meter, key).options(timeout=1.0).add(1)
            assert caught.value.definite  # nothing ran anywhere
            message = caught.value.message
            assert "more than 4 redirects (" in message, message
            assert "n2 -> n1 -> n2 -> n1 -> n2" in message, message

    run_virtual(main())


def test_a_home_whose_tombstone_names_a_node_that_no_longer_holds_the_agent_serves_it() -> None:
    # The home handed the agent to n2 (no pin: not a deliberate move) and n2 let it go
    # (its partition's lead moved). Calls went home -> n2 (tombstone) -> home (n2 is not
    # the home) until the tombstone expired, 60 s (benchmarks/cut_and_heal.py). n2's
    # claim at the home tells the home n2 does not hold it.
    async def main() -> None:
        async with key_at_n1("stale-") as (cluster, client, key):
            meter = client.ref(Meter, key).options(timeout=3.0)
            assert await meter.add(5) == 5
            home = placement_of(cluster, "n1")
            k = (Meter._phx_spec.name, key)
            home.directory.tombstones[k] = Tombstone("n2", None, expires=1e18)
            assert await meter.add(1) == 6  # served at the home
            assert k not in home.directory.tombstones
            assert await cluster.node("n1").where(client.ref(Meter, key)) == "n1"

    run_virtual(main())
