"""Replicas exchanging deltas over a network that drops, duplicates and reorders messages
converge, and lose no add.

This is the case that breaks delta_crdt_ex (issue 65): a delta that arrives before the
delta it causally depends on, and deltas dropped and recovered later, must never make a
replica read "seen and absent" for an add it simply has not received yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from crdt_model import ORMAP, ORSET, REPLICAS, Spec, join_all
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster import crdt


class AddWinsOracle:
    """Which ORSet elements must survive, worked out from the operations alone.

    An add's dot dies only when a remove or clear saw it at its replica, or a later add
    of the same element there replaced it (that add's own dot carries the element on).
    What "saw" means is read off the replica's elements before the op, never off a
    causal context, so a context that claims dots it never received cannot fool it.
    """

    def __init__(self) -> None:
        self.adds: list[tuple[str, crdt.Dot]] = []
        self.dead: set[crdt.Dot] = set()

    def record(self, state: crdt.ORSet[str], op: tuple[Any, ...], delta: crdt.Crdt) -> None:
        if op[0] == "clear":
            self.dead.update(d for dots in state.entries.values() for d in dots)
            return
        self.dead.update(state.entries.get(op[1], ()))
        if op[0] == "add":
            assert isinstance(delta, crdt.ORSet)
            self.adds.extend((op[1], d) for d in delta.entries[op[1]])

    def present(self) -> set[str]:
        return {e for e, d in self.adds if d not in self.dead}


@dataclass
class Message:
    kind: str  # "delta" or "ack"
    sender: int
    receiver: int
    body: bytes = b""
    upto: int = 0


@dataclass
class Cluster:
    spec: Spec
    wire_type: Any
    buffers: list[crdt.DeltaBuffer[Any]] = field(default_factory=list)
    network: list[Message] = field(default_factory=list)
    deltas: list[crdt.Crdt] = field(default_factory=list)
    oracle: AddWinsOracle | None = None

    def __post_init__(self) -> None:
        self.buffers = [crdt.DeltaBuffer(self.spec.new(), limit=6) for _ in REPLICAS]

    def mutate(self, i: int, op: Any) -> None:
        before = self.buffers[i].state.copy()
        delta = self.buffers[i].mutate(lambda s: self.spec.run(s, op, REPLICAS[i]))
        self.deltas.append(delta.copy())
        if self.oracle is not None:
            self.oracle.record(before, op, delta)

    def send(self, i: int, j: int) -> None:
        out = self.buffers[i].outgoing(REPLICAS[j])
        if out is not None and i != j:
            body = msgspec.msgpack.encode(out.delta)
            self.network.append(Message("delta", i, j, body, out.upto))

    def deliver(self, index: int, keep: bool = False) -> None:
        if not self.network:
            return
        msg = self.network[index % len(self.network)]
        if not keep:
            self.network.remove(msg)
        if msg.kind == "ack":
            self.buffers[msg.receiver].ack(REPLICAS[msg.sender], msg.upto)
            return
        delta = msgspec.msgpack.decode(msg.body, type=self.wire_type)
        self.buffers[msg.receiver].receive(delta)
        self.network.append(Message("ack", msg.receiver, msg.sender, upto=msg.upto))

    def drop(self, index: int) -> None:
        if self.network:
            del self.network[index % len(self.network)]

    def anti_entropy(self, i: int, j: int) -> None:
        """j sends its digest to i; i answers with what j lacks (over the wire)."""
        digest = msgspec.msgpack.decode(
            msgspec.msgpack.encode(self.buffers[j].state.digest()), type=crdt.Digest)
        delta = self.buffers[i].state.delta_for(digest)
        self.buffers[j].receive(msgspec.msgpack.decode(
            msgspec.msgpack.encode(delta), type=self.wire_type))

    def heal(self) -> None:
        """Reliable delivery until nothing is left to send."""
        for _ in range(20):
            self.network.clear()
            for i in range(len(REPLICAS)):
                for j in range(len(REPLICAS)):
                    self.send(i, j)
            if not self.network:
                return
            while self.network:
                self.deliver(0)
        raise AssertionError("did not quiesce")


def _steps(spec: Spec) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    r = st.integers(0, len(REPLICAS) - 1)
    anywhere = st.integers(0, 1000)
    return st.lists(st.one_of(
        st.tuples(st.just("op"), r, spec.ops),
        st.tuples(st.just("op"), r, spec.ops),
        st.tuples(st.just("op"), r, spec.ops),
        st.tuples(st.just("send"), r, r),
        st.tuples(st.just("send"), r, r),
        st.tuples(st.just("deliver"), anywhere, st.booleans()),  # True: keep a duplicate
        st.tuples(st.just("deliver"), anywhere, st.just(False)),
        st.tuples(st.just("drop"), anywhere),
        st.tuples(st.just("ae"), r, r),
    ), min_size=8, max_size=50)


def _run(cluster: Cluster, steps: list[tuple[Any, ...]]) -> None:
    for step in steps:
        if step[0] == "op":
            cluster.mutate(step[1], step[2])
        elif step[0] == "send":
            cluster.send(step[1], step[2])
        elif step[0] == "deliver":
            cluster.deliver(step[1], keep=step[2])
        elif step[0] == "drop":
            cluster.drop(step[1])
        elif step[1] != step[2]:
            cluster.anti_entropy(step[1], step[2])


MODEL = settings(max_examples=60, deadline=None)


@MODEL
@given(steps=_steps(ORSET))
def test_orset_converges_through_loss_duplication_and_reordering(
    steps: list[tuple[Any, ...]]
) -> None:
    cluster = Cluster(ORSET, crdt.ORSet[str], oracle=AddWinsOracle())
    _run(cluster, steps)
    # Mid-run, whatever arrived: every replica only holds adds that really happened.
    everything = join_all(cluster.deltas, ORSET.new())
    for buf in cluster.buffers:
        assert buf.state.leq(everything)
    cluster.heal()
    assert all(b.state == everything for b in cluster.buffers)
    assert cluster.oracle is not None
    assert cluster.buffers[0].state.value == cluster.oracle.present()


@MODEL
@given(steps=_steps(ORMAP))
def test_nested_map_converges_through_loss_duplication_and_reordering(
    steps: list[tuple[Any, ...]]
) -> None:
    cluster = Cluster(ORMAP, crdt.ORMap[str])
    _run(cluster, steps)
    cluster.heal()
    everything = join_all(cluster.deltas, ORMAP.new())
    assert all(b.state == everything for b in cluster.buffers)


@MODEL
@given(steps=_steps(ORSET))
def test_digest_anti_entropy_alone_recovers_every_dropped_delta(
    steps: list[tuple[Any, ...]]
) -> None:
    cluster = Cluster(ORSET, crdt.ORSet[str])
    _run(cluster, steps)
    cluster.network.clear()  # every message in flight is lost
    for i in range(len(REPLICAS)):
        for j in range(len(REPLICAS)):
            if i != j:
                cluster.anti_entropy(i, j)
    everything = join_all(cluster.deltas, ORSET.new())
    assert all(b.state == everything for b in cluster.buffers)


def test_issue_65_delta_before_its_predecessor_does_not_delete_an_add() -> None:
    """delta_crdt_ex summarised "seen dots" as "everything up to the latest": a replica
    holding A's 2nd add but not the 1st then told others it had seen (and dropped) the 1st.
    Here that replica's context keeps the gap, so the 1st add survives every join."""
    a, b, c = crdt.ORSet[str](), crdt.ORSet[str](), crdt.ORSet[str]()
    first = a.add("x", replica="A")
    second = a.add("y", replica="A")
    b.merge(second)  # the 1st delta is late
    assert b.context.vv == {} and b.context.cloud == {("A", 2)}
    c.merge(first)
    c.merge(b)  # B's whole state, and B's next delta, must not remove x at C
    c.merge(b.add("z", replica="B"))
    assert c.value == {"x", "y", "z"}
    b.merge(first)  # the late delta still lands
    assert b.value == {"x", "y", "z"}
    assert b.context.vv == {"A": 2, "B": 1} and not b.context.cloud
    # And a digest sync from a replica missing the 1st add asks for it, not against it.
    d = crdt.ORSet[str]()
    d.merge(second)
    d.merge(a.delta_for(d.digest()))
    assert d.value == {"x", "y"}


def test_buffer_resends_until_acknowledged_and_trims() -> None:
    buf = crdt.DeltaBuffer(crdt.GCounter(), limit=3)
    peer = crdt.GCounter()
    buf.mutate(lambda c: c.increment(replica="a"))
    out = buf.outgoing("b")
    assert out is not None and not out.full
    # Lost: asking again gives the same interval joined with anything newer.
    buf.mutate(lambda c: c.increment(replica="a"))
    again = buf.outgoing("b")
    assert again is not None and again.upto == 2
    peer.merge(again.delta)
    buf.ack("b", again.upto)
    assert buf.outgoing("b") is None
    assert peer.value == 2
    for _ in range(5):
        buf.mutate(lambda c: c.increment(replica="a"))
    assert len(buf) == 3
    late = buf.outgoing("b")  # b acked 2, the buffer now starts at 4: full state
    assert late is not None and late.full
    peer.merge(late.delta)
    assert peer == buf.state
    assert buf.collect(["b"]) == 0  # b has not acknowledged the newer ones
    buf.ack("b", late.upto)
    assert buf.collect(["b"]) == 3 and len(buf) == 0


def test_receive_reports_news_and_forwards_only_news() -> None:
    a = crdt.DeltaBuffer(crdt.ORSet[str]())
    b = crdt.DeltaBuffer(crdt.ORSet[str]())
    delta = a.mutate(lambda s: s.add("x", replica="a"))
    assert b.receive(delta) and b.seq == 1
    assert not b.receive(delta) and b.seq == 1  # a duplicate is not news
    remove = a.mutate(lambda s: s.remove("x"))
    assert b.receive(remove) and not b.receive(remove)
    assert b.state.value == frozenset()


@pytest.mark.parametrize("limit", [0, -1])
def test_buffer_rejects_a_useless_limit(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        crdt.DeltaBuffer(crdt.GCounter(), limit=limit)

