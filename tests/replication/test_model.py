"""The pure protocol under a random adversary: no committed write is ever lost.

A model drives the real :class:`ReplicaStore` and :class:`Election` (no asyncio): five
replicas, replica sets that change one member at a time, candidates that elect
themselves at any moment, leaders (current or deposed) that write, messages that are
delivered, lost, or held back and delivered late, and replicas that restart with an
empty memory (never two at once before a leader caught the first one up).

Each record's state is its history: the ids of every write applied to it, in order. A
write is committed when a majority of its leader's set stored it. The properties:

- every committed history extends the previously committed history of its key (one
  line of writes, never a fork: I3, I5);
- every leader adopts, for every key, a history that extends the last committed one
  (I4: nothing committed is lost, across restarts and replica set changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster._replication.leader import Election
from phoenix_cluster._replication.messages import (
    Accept,
    Ack,
    Item,
    Mark,
    Prepare,
    Probe,
    Promise,
    Reply,
)
from phoenix_cluster._replication.replica import ReplicaStore
from phoenix_cluster._replication.types import Config, Entry, Epoch, config_union, majority

NAMES = ("a", "b", "c", "d", "e")
SETS: tuple[tuple[str, ...], ...] = (
    ("a", "b", "c"), ("b", "c", "d"), ("c", "d", "e"), ("a", "b", "e"))
KEYS = ("x", "y", "z")
P = 0

_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(list[int]).decode


@dataclass
class Leader:
    epoch: Epoch
    target: tuple[str, ...]
    state: dict[str, list[int]]
    seq: int


@dataclass
class Model:
    data: st.DataObject
    stores: dict[str, ReplicaStore] = field(
        default_factory=lambda: {n: ReplicaStore(n) for n in NAMES})
    boots: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NAMES, 0))
    amnesiac: set[str] = field(default_factory=set)
    leaders: dict[str, Leader] = field(default_factory=dict)
    committed: dict[str, list[int]] = field(default_factory=dict)
    late: list[tuple[str, Item]] = field(default_factory=list)
    last_set: tuple[str, ...] = SETS[0]
    writes: int = 0
    elections: int = 0

    # -- the network

    def send(self, dst: str, item: Item) -> Reply | None:
        """Deliver now, lose, or hold back for later (chosen by the adversary)."""
        fate = self.data.draw(st.sampled_from(["now", "now", "now", "lost", "late"]))
        if fate == "now":
            return self.stores[dst].handle(item)
        if fate == "late":
            self.late.append((dst, item))
        return None

    def deliver_late(self) -> None:
        if self.late:
            i = self.data.draw(st.integers(0, len(self.late) - 1))
            dst, item = self.late.pop(i)
            self.stores[dst].handle(item)  # the reply goes to a caller that gave up
            self._clear_amnesia()

    # -- faults

    def restart(self, node: str) -> None:
        # A majority of a set forgetting at once loses data by design (docs: without
        # data_dir); the model keeps at most one forgetful replica at a time.
        if self.amnesiac:
            return
        self.stores[node] = ReplicaStore(node)
        self.boots[node] += 1
        self.amnesiac.add(node)
        self.leaders.pop(node, None)

    def _clear_amnesia(self) -> None:
        for node in list(self.amnesiac):
            state = self.stores[node].partition(P)
            if state is not None and state.synced:
                self.amnesiac.discard(node)

    # -- a candidate

    def elect(self, cand: str, target: tuple[str, ...], remember_old: bool) -> None:
        if cand not in target:
            return
        self.elections += 1
        store = self.stores[cand]
        extra: Config = (self.last_set,) if remember_old else ()
        family: Config = ()
        counter = store.promised(P).counter
        for _ in range(4):
            counter += self.data.draw(st.integers(1, 2))
            epoch = Epoch(counter, f"{cand}#{self.boots[cand]}")
            config = config_union(config_union((target,), extra), family)
            el = Election(P, epoch, target, config, family)
            item = Prepare(P, epoch, config)
            for m in sorted(el.members()):
                reply = store.handle(item) if m == cand else self.send(m, item)
                if reply is None:
                    el.fail(m)
                else:
                    assert isinstance(reply, Promise)  # the answer to a Prepare
                    el.reply(m, reply)
            status = el.status()
            if status == "discover":
                family = el.discovered()
                continue
            if status != "quorum":
                return
            if el.blank():
                found: Config = ()
                for m in NAMES:
                    if m not in el.promises:
                        known = self.stores[m].handle(Probe(P))
                        assert not isinstance(known, Ack)
                        found = config_union(found, known.config)
                        found = config_union(found, known.pending)
                if found:
                    family = config_union(family, found)
                    continue
            self.install(cand, el)
            return

    def install(self, cand: str, el: Election) -> None:
        plan = el.plan(cand)
        mark = Mark(P, el.epoch, (el.target,))
        marked = 0
        for m in el.target:
            items = [] if m in plan.holding else [
                Accept(P, el.epoch, el.config, tuple(plan.entries_for(m)), True)]
            ok = True
            for item in items:
                reply = self.stores[m].handle(item) if m == cand else self.send(m, item)
                ok = ok and accepted(reply)
            if ok:
                reply = self.stores[m].handle(mark) if m == cand else self.send(m, mark)
                marked += accepted(reply)
        self._clear_amnesia()
        if marked < majority(el.target):
            return
        for m in sorted({m for s in el.config for m in s} - set(el.target)):
            self.send(m, mark)
        state = {key: _decode(entry.state) for (_, key), entry in plan.final.items()}
        # I4: every committed history is a prefix of what the new leader adopted.
        for key, history in self.committed.items():
            assert state.get(key, [])[:len(history)] == history, (key, history, state, el)
        self.leaders[cand] = Leader(el.epoch, el.target, state, plan.next_seq - 1)
        self.last_set = el.target

    # -- a leader writes

    def write(self, node: str, key: str) -> None:
        lead = self.leaders.get(node)
        if lead is None:
            return
        self.writes += 1
        history = [*lead.state.get(key, []), self.writes]
        lead.seq += 1
        entry = Entry(lead.epoch.counter, lead.epoch.leader, lead.seq, _encode(history))
        item = Accept(P, lead.epoch, (lead.target,), (("k", key, entry),))
        if not accepted(self.stores[node].handle(item)):
            del self.leaders[node]
            return
        acks = 1
        for m in lead.target:
            if m != node:
                reply = self.send(m, item)
                acks += accepted(reply)
        lead.state[key] = history
        if acks >= majority(lead.target):
            # I3/I5: committed writes of a key form one line.
            before = self.committed.get(key, [])
            assert history[:len(before)] == before, (key, before, history)
            self.committed[key] = history
        else:
            del self.leaders[node]  # the service steps down on NoQuorum too


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_no_committed_write_is_ever_lost(data: st.DataObject) -> None:
    model = Model(data)
    steps = data.draw(st.integers(10, 60))
    for _ in range(steps):
        action = data.draw(st.sampled_from(
            ["elect", "elect", "write", "write", "write", "write", "late", "restart"]))
        if action == "elect":
            target = data.draw(st.sampled_from(SETS))
            model.elect(data.draw(st.sampled_from(target)), target, data.draw(st.booleans()))
        elif action == "write" and model.leaders:
            node = data.draw(st.sampled_from(sorted(model.leaders)))
            model.write(node, data.draw(st.sampled_from(KEYS)))
        elif action == "late":
            model.deliver_late()
        elif action == "restart":
            model.restart(data.draw(st.sampled_from(NAMES)))
    # A final election that hears everyone must still find every committed write.
    model.late.clear()
    target = model.last_set
    cand = target[0]
    model.amnesiac.clear()
    before = model.elections
    for _ in range(5):
        model.data = _Reliable(data)  # type: ignore[assignment]
        model.elect(cand, target, True)
        if cand in model.leaders and model.leaders[cand].target == target:
            break
    assert model.elections > before


def accepted(reply: Reply | None) -> bool:
    """Whether an Accept or a Mark arrived and was taken (both are answered by an Ack)."""
    assert reply is None or isinstance(reply, Ack)
    return reply is not None and reply.ok


class _Reliable:
    """The adversary's data, except that every message is delivered at once."""

    def __init__(self, data: st.DataObject) -> None:
        self._data = data

    def draw(self, strategy: st.SearchStrategy[object]) -> object:
        value = self._data.draw(strategy)
        return "now" if value in ("lost", "late") else value
