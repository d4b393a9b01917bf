"""The merge replication service (``_replication/crdt_sync.py``) on a memory network.

Three :class:`CrdtSync` instances call each other's ``handle`` directly; a cut makes
calls across it fail like an unreachable node. Covers what an acknowledgement waits
for, loads, anti-entropy after a partition, the flush of a stopping node and bad input.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest

from phoenix_cluster import crdt
from phoenix_cluster._foundation.env import Env
from phoenix_cluster._replication.crdt_sync import CrdtSync, CrdtSyncSettings
from phoenix_cluster._replication.merging import Fields, Push, PushBatch, Schema
from phoenix_cluster._replication.simulation import table_of
from phoenix_cluster.errors import AgentNotFound, NodeUnavailable, ProtocolError
from phoenix_cluster.testing import wait_until

SCHEMA: Schema = {"items": crdt.ORSet[str]}
NAMES = ("a", "b", "c")
FAST = CrdtSyncSettings(ack_timeout_s=0.2, fetch_timeout_s=0.2, rpc_timeout_s=0.5,
                        interval_s=0.05, flush_timeout_s=1.0)


def schema_of(kind: str) -> Schema:
    if kind != "cart":
        raise AgentNotFound(f"unknown agent kind {kind!r}")
    return SCHEMA


class Net:
    def __init__(self) -> None:
        self.nodes: dict[str, CrdtSync] = {}
        self.cut: set[str] = set()  # nodes cut off from everyone
        self.merged: list[tuple[str, str, str, Fields]] = []

    def add(self, name: str, known: tuple[str, ...] = NAMES) -> CrdtSync:
        async def rpc(dst: str, method: str, payload: bytes, timeout_s: float) -> bytes:
            if name in self.cut or dst in self.cut or dst not in self.nodes:
                raise NodeUnavailable(f"{dst} unreachable from {name}", definite=True)
            return await self.nodes[dst].handle(method, payload)

        node = CrdtSync(name, rpc, Env(), schema_of=schema_of, known=lambda: known,
                        on_merged=lambda k, key, f: self.merged.append((name, k, key, f)),
                        settings=FAST)
        self.nodes[name] = node
        return node

    def view(self, members: tuple[str, ...]) -> None:
        for name in members:
            self.nodes[name].update(table_of(members), members)


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    net = Net()
    for name in NAMES:
        await net.add(name).start()
    net.view(NAMES)
    yield net
    for node in net.nodes.values():
        await node.aclose()


def added(item: str, replica: str) -> Fields:
    s = crdt.ORSet[str]()
    s.add(item, replica=replica)
    return {"items": s}


def items(node: CrdtSync, key: str = "k") -> set[str]:
    fields = node.stored("cart", key)
    return set() if fields is None else set(fields["items"].value)


async def test_a_commit_is_acknowledged_by_a_majority_and_reaches_every_replica(
    net: Net,
) -> None:
    a = net.nodes["a"]
    assert await a.commit("cart", "k", added("x", "a@1")) >= 2
    await wait_until(lambda: all(items(n) == {"x"} for n in net.nodes.values()),
                     timeout=2, what="every replica to hold x")
    assert {who for who, *_ in net.merged} == {"b", "c"}  # live activations are told


async def test_a_cut_off_node_acknowledges_once_stored_locally(net: Net) -> None:
    net.cut.add("a")
    a = net.nodes["a"]
    started = asyncio.get_running_loop().time()
    assert await a.commit("cart", "k", added("x", "a@1")) == 1
    assert asyncio.get_running_loop().time() - started < 1.0
    assert items(a) == {"x"} and items(net.nodes["b"]) == set()


async def test_load_joins_what_the_reachable_replicas_hold(net: Net) -> None:
    net.cut.add("c")
    await net.nodes["b"].commit("cart", "k", added("from-b", "b@1"))
    net.cut.clear()
    net.nodes["c"].merge_local("cart", "k", added("from-c", "c@1"))
    loaded = await net.nodes["a"].load("cart", "k")
    assert loaded is not None and set(loaded["items"].value) == {"from-b", "from-c"}
    assert await net.nodes["a"].load("cart", "nothing") is None


async def test_both_sides_of_a_cut_accept_updates_and_anti_entropy_joins_them(
    net: Net,
) -> None:
    net.cut.add("a")
    net.view(("b", "c"))
    net.nodes["a"].update(table_of(("a",)), ("a",))
    await net.nodes["a"].commit("cart", "k", added("left", "a@1"))
    await net.nodes["b"].commit("cart", "k", added("right", "b@1"))
    assert items(net.nodes["a"]) == {"left"} and items(net.nodes["c"]) == {"right"}
    net.cut.clear()
    net.view(NAMES)
    await wait_until(lambda: all(items(n) == {"left", "right"} for n in net.nodes.values()),
                     timeout=3, what="anti-entropy to join both sides")
    assert sum(n.statistics().repairs for n in net.nodes.values()) > 0


async def test_a_stopping_node_hands_its_replicas_to_members_outside_its_view(
    net: Net,
) -> None:
    a = net.nodes["a"]
    a.update(table_of(("a",)), ("a",))  # a believes it is alone (the others "dead")
    await a.commit("cart", "k", added("only-on-a", "a@1"))
    assert items(net.nodes["b"]) == set()
    await a.aclose()
    assert items(net.nodes["b"]) == {"only-on-a"} and items(net.nodes["c"]) == {"only-on-a"}


async def test_bad_input_is_refused_and_the_service_keeps_working(net: Net) -> None:
    b = net.nodes["b"]
    with pytest.raises(ProtocolError):
        await b.handle("push", b"\xc1garbage")
    with pytest.raises(ProtocolError, match="no method"):
        await b.handle("explode", b"")
    bad = PushBatch((Push("unknown.kind", "k", b"\x80"),
                     Push("cart", "k", msgspec.msgpack.encode({"items": 3})),
                     Push("cart", "k", msgspec.msgpack.encode(added("ok", "a@1")))))
    assert msgspec.msgpack.decode(await b.handle("push", msgspec.msgpack.encode(bad))) == 1
    assert items(b) == {"ok"}


def losing_pushes(net: Net, source: str) -> set[tuple[str, str]]:
    """Make ``source``'s next push to each ``(source, dst)`` put in the returned set fail
    (once each), like a push lost on the way."""
    real = net.nodes[source]._rpc
    lost: set[tuple[str, str]] = set()

    async def lossy(dst: str, method: str, payload: bytes, timeout_s: float) -> bytes:
        if method == "push" and (source, dst) in lost:
            lost.discard((source, dst))
            raise NodeUnavailable(f"{dst}: push lost", definite=False)
        return await real(dst, method, payload, timeout_s)

    net.nodes[source]._rpc = lossy
    return lost


async def test_a_lost_push_travels_with_the_next_so_no_replica_sees_a_change_before_its_cause(
) -> None:
    """No anti-entropy here: only the pushes of commits carry changes."""
    net = Net()
    pushed: list[tuple[str, set[str]]] = []
    for name in NAMES:
        node = net.add(name)
        handle = node.handle

        async def recording(method: str, payload: bytes, *, to: str = name,
                            handle: Callable[[str, bytes], Awaitable[bytes]] = handle
                            ) -> bytes:
            if method == "push":
                for item in msgspec.msgpack.decode(payload, type=PushBatch).items:
                    state = msgspec.msgpack.decode(item.state, type=dict[str, crdt.ORSet[str]])
                    pushed.append((to, set(state["items"].value)))
            return await handle(method, payload)

        node.handle = recording  # type: ignore[method-assign]
    lost = losing_pushes(net, "a")
    net.view(NAMES)
    a, b = net.nodes["a"], net.nodes["b"]
    try:
        lost.add(("a", "b"))
        await a.commit("cart", "k", added("x", "a@1"))   # b never gets this push
        assert items(b) == set() and items(net.nodes["c"]) == {"x"}
        await a.commit("cart", "k", added("y", "a@2"))  # distinct ids: distinct dots
        await wait_until(lambda: items(b) == {"x", "y"}, timeout=2, what="b to hold y")
        # "y" arrived with its cause, never alone
        assert [got for to, got in pushed if to == "b"] == [{"x", "y"}]
        pushed.clear()
        await a.commit("cart", "k", added("z", "a@3"))
        await wait_until(lambda: len(pushed) == 2, timeout=2, what="both pushes of z")
        assert sorted(pushed) == [("b", {"z"}), ("c", {"z"})]  # acknowledged: not resent
        # A peer that drops out of the alive set loses its backlog; back, it gets the
        # whole replica once, which holds every cause.
        lost.add(("a", "b"))
        await a.commit("cart", "k", added("v", "a@4"))
        a.update(table_of(NAMES), ("a", "c"))
        a.update(table_of(NAMES), NAMES)
        pushed.clear()
        await a.commit("cart", "k", added("u", "a@5"))
        await wait_until(lambda: len(pushed) == 2, timeout=2, what="both pushes of u")
        assert sorted(pushed) == [("b", {"x", "y", "z", "v", "u"}), ("c", {"u"})]
    finally:
        for node in net.nodes.values():
            await node.aclose()


async def test_a_change_made_after_one_from_another_node_reaches_replicas_with_it() -> None:
    """The agent moved from a to b between two messages; a's push to c was lost. b took
    a's change in, so its own next push to c carries its whole replica. No anti-entropy."""
    net = Net()
    for name in NAMES:
        net.add(name)
    losing_pushes(net, "a").add(("a", "c"))
    net.view(NAMES)
    a, b, c = (net.nodes[n] for n in NAMES)
    try:
        await a.commit("cart", "k", added("x", "a@1"))
        await wait_until(lambda: items(b) == {"x"}, timeout=2, what="b to hold x")
        assert items(c) == set()
        await b.commit("cart", "k", added("y", "b@1"))
        await wait_until(lambda: "y" in items(c), timeout=2, what="c to hold y")
        assert items(c) == {"x", "y"}  # never y without x
    finally:
        for node in net.nodes.values():
            await node.aclose()


def holding_pushes(net: Net, source: str, dst: str) -> tuple[list[set[str]], list[asyncio.Event]]:
    """Hold each push from ``source`` to ``dst`` until its gate (in the second list) is
    set; the first list gets the items each push carried, in the order sent."""
    real = net.nodes[source]._rpc
    sent: list[set[str]] = []
    gates: list[asyncio.Event] = []

    async def held(to: str, method: str, payload: bytes, timeout_s: float) -> bytes:
        if method == "push" and to == dst:
            (item,) = msgspec.msgpack.decode(payload, type=PushBatch).items
            state = msgspec.msgpack.decode(item.state, type=dict[str, crdt.ORSet[str]])
            sent.append(set(state["items"].value))
            gate = asyncio.Event()
            gates.append(gate)
            await gate.wait()
        return await real(to, method, payload, timeout_s)

    net.nodes[source]._rpc = held
    return sent, gates


async def test_an_acknowledgement_drops_what_its_push_carried_though_later_ones_are_in_flight(
) -> None:
    """Under a steady stream of commits a push's acknowledgement comes after the next
    commit: it must still drop what that push carried, or every push to a slow peer
    would carry the agent's whole history. No anti-entropy."""
    net = Net()
    for name in NAMES:
        net.add(name)
    sent, gates = holding_pushes(net, "a", "b")
    net.view(NAMES)
    a, b = net.nodes["a"], net.nodes["b"]
    try:
        await a.commit("cart", "k", added("x", "a@1"))  # c answers; b's push waits
        await a.commit("cart", "k", added("y", "a@2"))
        gates[0].set()  # b acknowledges x while the push of y is in flight
        await wait_until(lambda: items(b) == {"x"}, timeout=2, what="b to hold x")
        await asyncio.sleep(0)  # the acknowledgement reaches a's push
        await a.commit("cart", "k", added("z", "a@3"))
        assert sent == [{"x"}, {"x", "y"}, {"y", "z"}]  # x is not sent again
        for gate in gates:
            gate.set()
        await wait_until(lambda: items(b) == {"x", "y", "z"}, timeout=2, what="b to hold z")
        await asyncio.sleep(0)
        await a.commit("cart", "k", added("w", "a@4"))
        gates[-1].set()
        assert sent[-1] == {"w"}
    finally:
        for gate in gates:
            gate.set()
        for node in net.nodes.values():
            await node.aclose()


async def test_a_peer_that_stops_answering_costs_a_bounded_backlog() -> None:
    """Still in the alive set but silent: past the backlog's limit a push carries the
    whole replica (every cause) and the deltas it covers are dropped."""
    net = Net()
    for name in NAMES:
        net.add(name)
    sent, gates = holding_pushes(net, "a", "b")
    net.view(NAMES)
    a = net.nodes["a"]
    a.merge_local("cart", "k", added("q", "c@1"), foreign=False)  # only a holds q
    try:
        for n in range(40):
            await a.commit("cart", "k", added(f"i{n}", f"a@{n + 1}"))
        assert len(sent) == 40
        assert "q" not in sent[31] and "q" in sent[32]  # the 33rd: the whole replica
        assert len(a._backlog["b"][("cart", "k")].deltas) <= 32
    finally:
        for gate in gates:
            gate.set()
        for node in net.nodes.values():
            await node.aclose()
