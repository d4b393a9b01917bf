"""Homes and the directory of placement, in-process: no node, no socket, a manual clock.

``home_table.py`` keeps the partition table of a node's view (and the table without the
node while it leaves); ``directory.py`` answers claims at an agent's home. Both were split
out of ``placement.py``; these tests pin what the routing of every message relies on.
"""

from __future__ import annotations

import asyncio

import phoenix_cluster as phx
from phoenix_cluster._agents import handoff as wire
from phoenix_cluster._agents.directory import Directory
from phoenix_cluster._agents.home_table import HomeTable
from phoenix_cluster._agents.member_loads import MemberLoads
from phoenix_cluster._foundation.env import ManualClock
from phoenix_cluster._placement.policies import NodeLoad
from phoenix_cluster._ring.hashing import key_hash
from phoenix_cluster._ring.partitions import partition_of, partition_point
from phoenix_cluster._ring.ring import HashRing
from phoenix_cluster._transport.tasks import TaskSet
from phoenix_cluster.errors import NodeUnavailable

KIND = "tests.home_table.thing"
KEYS = [f"k{i}" for i in range(200)]
ADDRESSES = {"a": "10.0.0.1:1", "b": "10.0.0.2:1", "c": "10.0.0.3:1"}


class Placed(phx.Agent, kind="tests.home_table.placed", placement="least_loaded"):
    async def ping(self) -> str:
        return "pong"


class Hashed(phx.Agent, kind="tests.home_table.hashed"):
    async def ping(self) -> str:
        return "pong"


def ring_owner(ring: HashRing, kind: str, key: str) -> str:
    return ring.owner(partition_point(partition_of(key_hash(kind, key))))


def table(name: str, members: list[str], window_s: float = 60.0,
          ) -> tuple[HomeTable, HashRing, ManualClock]:
    clock = ManualClock(100.0)
    homes = HomeTable(name, clock, window_s)
    ring = HashRing(members)
    assert homes.update(ring, dict(ADDRESSES))
    return homes, ring, clock


def test_without_a_view_no_agent_has_a_home() -> None:
    homes = HomeTable("a", ManualClock(), 60.0)
    assert homes.owners is None
    assert homes.home(KIND, "k1") is None
    assert homes.previous_holders(KIND, "k1") == []


def test_every_home_is_the_ring_owner_of_its_partition() -> None:
    homes, ring, _ = table("a", ["a", "b", "c"])
    found = {key: homes.home(KIND, key) for key in KEYS}
    assert found == {key: ring_owner(ring, KIND, key) for key in KEYS}
    assert set(found.values()) == {"a", "b", "c"}  # 200 keys land on every member


def test_the_same_ring_again_is_no_change_but_new_addresses_are_kept() -> None:
    homes, ring, _ = table("a", ["a", "b"])
    moved = {**ADDRESSES, "b": "10.0.0.9:1"}
    assert not homes.update(ring, moved)
    assert homes.addresses["b"] == "10.0.0.9:1"


def test_a_leaving_node_routes_by_the_table_without_itself_and_back() -> None:
    homes, ring, _ = table("a", ["a", "b", "c"])
    before = {key: homes.home(KIND, key) for key in KEYS}
    homes.set_leaving(True)
    solo = ring.without_member("a")
    leaving = {key: homes.home(KIND, key) for key in KEYS}
    assert leaving == {key: ring_owner(solo, KIND, key) for key in KEYS}
    assert "a" not in leaving.values()
    # A new view while leaving keeps routing without this node.
    homes.update(HashRing(["a", "b", "c"]), dict(ADDRESSES))
    assert "a" not in {homes.home(KIND, key) for key in KEYS}
    homes.set_leaving(False)
    assert {key: homes.home(KIND, key) for key in KEYS} == before


def test_the_last_member_leaving_has_no_home_to_send_to() -> None:
    homes, _, _ = table("a", ["a"])
    assert homes.home(KIND, "k1") == "a"
    homes.set_leaving(True)
    assert homes.home(KIND, "k1") is None


def test_previous_homes_may_hold_an_agent_only_within_the_window() -> None:
    homes, old, clock = table("c", ["a", "b"], window_s=30.0)
    new = HashRing(["a", "b", "c"])
    assert homes.update(new, dict(ADDRESSES))
    came_here = [key for key in KEYS if homes.home(KIND, key) == "c"]
    assert came_here
    for key in came_here:
        assert homes.previous_holders(KIND, key) == [ring_owner(old, KIND, key)]
    clock.advance(31.0)
    assert all(homes.previous_holders(KIND, key) == [] for key in came_here)


def test_a_dead_previous_home_is_not_asked() -> None:
    homes, old, _ = table("c", ["a", "b"])
    assert homes.update(HashRing(["a", "c"]), dict(ADDRESSES))  # b died
    from_b = [key for key in KEYS if ring_owner(old, KIND, key) == "b"]
    assert from_b
    assert all("b" not in homes.previous_holders(KIND, key) for key in from_b)
    from_a = [key for key in KEYS if ring_owner(old, KIND, key) == "a"
              and homes.home(KIND, key) == "c"]
    assert from_a
    assert all(homes.previous_holders(KIND, key) == ["a"] for key in from_a)


def directory_at(name: str, members: list[str]) -> Directory:
    homes, _, _ = table(name, members)
    client = wire.PlacementClient(None, homes.addresses.__getitem__, 1.0)
    loads = MemberLoads(homes, client, lambda: (0, 0.0, 0.0), TaskSet("test"))
    return Directory(homes, loads, lambda spec, key: False, client)


def key_homed_at(directory: Directory, kind: str, home: str) -> str:
    return next(k for k in KEYS if directory.homes.home(kind, k) == home)


def test_a_claim_at_a_node_that_is_not_the_home_names_the_home() -> None:
    directory = directory_at("a", ["a", "b"])
    key = key_homed_at(directory, Placed._phx_spec.name, "b")
    reply = directory.claim_here(wire.Claim(Placed._phx_spec.name, key, "c"))
    assert (reply.ok, reply.host) == (False, "b")
    assert directory.pins == {}


def test_the_home_pins_a_policy_agent_to_its_first_claimant_only() -> None:
    directory = directory_at("a", ["a", "b", "c"])
    kind = Placed._phx_spec.name
    key = key_homed_at(directory, kind, "a")
    first = directory.claim_here(wire.Claim(kind, key, "b"))
    assert (first.ok, first.host, first.foreign) == (True, "b", False)
    second = directory.claim_here(wire.Claim(kind, key, "c"))
    assert (second.ok, second.host) == (False, "b")  # go to the host it has
    moved = directory.claim_here(wire.Claim(kind, key, "c", force=True))
    assert (moved.ok, moved.host) == (True, "c")
    assert directory.pins == {(kind, key): "c"}
    # Only the host a pin names may drop it.
    assert directory.claim_here(wire.Claim(kind, key, "b", unpin=True)).ok
    assert directory.pins == {(kind, key): "c"}
    assert directory.claim_here(wire.Claim(kind, key, "c", unpin=True)).ok
    assert directory.pins == {}


def test_a_hash_agent_is_not_pinned_elsewhere_without_force() -> None:
    directory = directory_at("a", ["a", "b"])
    kind = Hashed._phx_spec.name
    key = key_homed_at(directory, kind, "a")
    refused = directory.claim_here(wire.Claim(kind, key, "b"))
    assert (refused.ok, refused.host) == (False, "")
    assert directory.pins == {}
    assert directory.claim_here(wire.Claim(kind, key, "b", force=True)).ok
    assert directory.pins == {(kind, key): "b"}


def test_a_new_view_drops_dead_hosts_pins_and_learnt_routes() -> None:
    directory = directory_at("a", ["a", "b", "c"])
    kind = Placed._phx_spec.name
    directory.pins = {(kind, "x"): "b", (kind, "y"): "c"}
    directory.learn(Placed._phx_spec, "z", "c")
    directory.homes.update(HashRing(["a", "c"]), dict(ADDRESSES))
    directory.view_changed()
    assert directory.pins == {(kind, "y"): "c"}
    assert directory.routes == {}


class PollAnswers(wire.PlacementClient):
    """Answers ``$placement.load`` for the members in ``answering``; the rest time out."""

    def __init__(self, homes: HomeTable) -> None:
        super().__init__(None, homes.addresses.__getitem__, 1.0)
        self.answering: set[str] = set()

    async def call(self, name: str, method: str, payload: bytes,
                   timeout_s: float | None = None) -> bytes:
        if method != "load" or name not in self.answering:
            raise NodeUnavailable(f"{name} did not answer", definite=True)
        return wire.encode(NodeLoad(name, 0, kinds=(Hashed._phx_spec.name,)))


def test_a_member_back_after_a_cut_keeps_its_kinds_until_it_answers_a_poll() -> None:
    # Its agents' holders asked "does the home host the kind?" right after the heal; a
    # home too busy to answer that poll seemed to host nothing, and they stood in for it:
    # calls then bounced between it and them (benchmarks/cut_and_heal.py, 50 s).
    async def main() -> None:
        kind = Hashed._phx_spec.name
        homes, _, clock = table("a", ["a", "b", "c"])
        polls = PollAnswers(homes)
        loads = MemberLoads(homes, polls, lambda: (0, 0.0, 0.0), TaskSet("test"))
        polls.answering = {"b", "c"}
        assert await loads.home_hosts(kind, "b") is True
        assert homes.update(HashRing(["a", "c"]), dict(ADDRESSES))  # b declared dead
        clock.advance(2.0)
        assert "b" not in await loads.loads()
        polls.answering = {"c"}  # b is back, and misses the first poll
        assert homes.update(HashRing(["a", "b", "c"]), dict(ADDRESSES))
        clock.advance(2.0)
        assert await loads.home_hosts(kind, "b") is True
        # A member that never answered is not known to lack the kind.
        assert homes.update(HashRing(["a", "b", "c", "d"]), {**ADDRESSES, "d": "10.0.0.4:1"})
        clock.advance(2.0)
        assert await loads.home_hosts(kind, "d") is None
        polls.answering = {"b", "c", "d"}
        clock.advance(2.0)
        assert await loads.home_hosts(kind, "d") is True

    asyncio.run(main())
