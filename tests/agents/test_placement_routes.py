"""Where the placement service sends a message, in-process: a stand-in runtime, no socket.

``PlacementService.route`` (outbound) and ``admit`` (inbound) decide every message's
path; the node builds them on real transports, these tests build them alone.
"""

from __future__ import annotations

from typing import Any, cast

import phoenix_cluster as phx
from phoenix_cluster._agents.directory import Tombstone
from phoenix_cluster._agents.handoff import HandoffRecord
from phoenix_cluster._agents.placement import PLACE, PlacementService
from phoenix_cluster._foundation.env import ManualClock
from phoenix_cluster._ring.ring import HashRing
from phoenix_cluster._telemetry.bus import TelemetryBus

ADDRESSES = {"a": "10.0.0.1:1", "b": "10.0.0.2:1", "c": "10.0.0.3:1"}
SEED = "10.0.0.9:1"
KEYS = [f"k{i}" for i in range(100)]


class Hashed(phx.Agent, kind="tests.placement_routes.hashed"):
    async def ping(self) -> str:
        return "pong"


class Placed(phx.Agent, kind="tests.placement_routes.placed", placement="least_loaded"):
    async def ping(self) -> str:
        return "pong"


class Worker(phx.Agent, kind="tests.placement_routes.worker", placement="stateless"):
    async def ping(self) -> str:
        return "pong"


class Volatile(phx.Agent, kind="tests.placement_routes.volatile", durability="none"):
    async def ping(self) -> str:
        return "pong"


class Passive:
    def __init__(self) -> None:
        self.passive: dict[str, bytes] = {}


class Runtime:
    """What placement asks of the agent runtime for routing: which agents it holds."""

    def __init__(self, hosts_agents: bool = True) -> None:
        self.hosts_agents = hosts_agents
        self.held: set[tuple[str, str]] = set()
        self.kinds: dict[str, Passive] = {}

    def kind(self, spec: Any) -> Passive:
        return self.kinds.setdefault(spec.name, Passive())

    def holds(self, spec: Any, key: str) -> bool:
        return (spec.name, key) in self.held

    def load(self) -> tuple[int, float, float]:
        return len(self.held), 0.0, 0.0


def service(name: str, members: list[str], *, hosts_agents: bool = True,
            ) -> tuple[PlacementService, Runtime]:
    runtime = Runtime(hosts_agents)
    placement = PlacementService(cast(Any, runtime), self_name=name, clock=ManualClock(),
                                 bus=TelemetryBus(), fallback=lambda kind, key: SEED)
    if members:
        placement.update(HashRing(members), dict(ADDRESSES))
    return placement, runtime


def keyed(placement: PlacementService, kind: type[phx.Agent], home: str) -> str:
    return next(k for k in KEYS if placement.home(kind._phx_spec.name, k) == home)


def test_a_message_goes_to_the_home_and_the_home_serves_it() -> None:
    placement, _ = service("a", ["a", "b", "c"])
    spec = Hashed._phx_spec
    elsewhere, here = keyed(placement, Hashed, "b"), keyed(placement, Hashed, "a")
    assert placement.route(spec, elsewhere) == ADDRESSES["b"]
    assert placement.route(spec, here) is None
    assert placement.admit(spec, here) is None
    # Inbound for an agent homed elsewhere and not held here: claim it at its home first.
    assert placement.admit(spec, elsewhere) is PLACE


def test_without_members_a_message_goes_to_the_fallback() -> None:
    placement, _ = service("a", [])
    assert placement.route(Hashed._phx_spec, "k1") == SEED


def test_the_home_of_a_policy_agent_places_it_first_then_follows_its_pin() -> None:
    placement, _ = service("a", ["a", "b", "c"])
    spec = Placed._phx_spec
    key = keyed(placement, Placed, "a")
    assert placement.route(spec, key) is PLACE
    assert placement.admit(spec, key) is PLACE
    placement.directory.pins[(spec.name, key)] = "c"
    assert placement.route(spec, key) == ADDRESSES["c"]
    assert placement.admit(spec, key) == ("c", ADDRESSES["c"])


def test_a_tombstone_redirects_both_ways_to_where_the_agent_went() -> None:
    placement, runtime = service("a", ["a", "b", "c"])
    spec = Hashed._phx_spec
    key = keyed(placement, Hashed, "a")
    runtime.held.add((spec.name, key))
    placement.directory.tombstones[(spec.name, key)] = Tombstone("b", None, 1e9)
    assert placement.route(spec, key) == ADDRESSES["b"]
    assert placement.admit(spec, key) == ("b", ADDRESSES["b"])
    placement.sweep()  # not expired yet
    assert (spec.name, key) in placement.directory.tombstones


def test_a_handoff_whose_target_died_is_taken_back_only_if_no_replica_has_it() -> None:
    # A replicated agent's state is on its replicas: the handed-over record is at best
    # what they hold, and stale once the target committed. Taken back as a passive copy,
    # it made this node a second holder, serving the agent's callers here while its
    # home, back after a heal, served them there.
    placement, runtime = service("a", ["a", "b", "c"])
    tombstones = placement.directory.tombstones
    for kind in (Hashed, Volatile):
        name = kind._phx_spec.name
        key = keyed(placement, kind, "b")
        tombstones[(name, key)] = Tombstone("b", HandoffRecord(name, key, b"\x01"), 1e9)
    placement.update(HashRing(["a", "c"]), dict(ADDRESSES))  # b died
    assert tombstones == {}
    assert runtime.kind(Hashed._phx_spec).passive == {}
    assert list(runtime.kind(Volatile._phx_spec).passive.values()) == [b"\x01"]


def test_a_held_agent_is_served_here_until_its_node_leaves() -> None:
    placement, runtime = service("a", ["a", "b", "c"])
    spec = Hashed._phx_spec
    key = keyed(placement, Hashed, "b")
    runtime.held.add((spec.name, key))
    assert placement.route(spec, key) is None
    assert placement.admit(spec, key) is None
    placement.leaving = True
    # Leaving: send it to its home (it is handed off on the slow path, admit_async).
    assert placement.admit(spec, key) is PLACE
    assert placement.route(spec, key) == ADDRESSES["b"]
    assert all(placement.home(spec.name, k) != "a" for k in KEYS)


def test_a_learnt_route_is_followed_while_its_node_lives() -> None:
    placement, _ = service("a", ["a", "b", "c"])
    spec = Hashed._phx_spec
    key = keyed(placement, Hashed, "b")
    placement.learn(spec, key, "c")
    assert placement.route(spec, key) == ADDRESSES["c"]
    placement.forget(spec, key)
    assert placement.route(spec, key) == ADDRESSES["b"]
    placement.learn(spec, key, "c")
    placement.update(HashRing(["a", "b"]), dict(ADDRESSES))  # c died: routes start over
    assert placement.route(spec, key) == ADDRESSES["b"]


def test_a_client_spreads_stateless_calls_over_the_members_in_turn() -> None:
    placement, _ = service("c", ["a", "b"], hosts_agents=False)
    spec = Worker._phx_spec
    sent = [placement.route(spec, "same") for _ in range(4)]
    assert set(sent[:2]) == {ADDRESSES["a"], ADDRESSES["b"]}
    assert sent[2:] == sent[:2]
    member, _ = service("a", ["a", "b"])
    assert member.route(spec, "same") is None  # a member serves a stateless worker itself
    assert member.admit(spec, "same") is None
