"""The replica's rules: promises, accepts, marks, probes, the journal (pure core)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster._replication.groups import GROUPS
from phoenix_cluster._replication.messages import Accept, Known, Mark, Prepare, Probe
from phoenix_cluster._replication.replica import DropChange, MetaChange, PutChange, ReplicaStore
from phoenix_cluster._replication.types import ZERO_EPOCH, Entry, Epoch
from phoenix_cluster.errors import ProtocolError

ABC = (("a", "b", "c"),)


def e(counter: int, leader: str = "x#1") -> Epoch:
    return Epoch(counter, leader)


def entry(counter: int, seq: int, state: bytes = b"s", leader: str = "x#1") -> Entry:
    return Entry(counter, leader, seq, state)


def synced_store(node: str = "a", epoch: Epoch | None = None) -> ReplicaStore:
    epoch = epoch or e(1)
    store = ReplicaStore(node)
    assert store.prepare(Prepare(7, epoch, ABC)).ok
    assert store.mark(Mark(7, epoch, ABC)).ok
    return store


def test_prepare_promises_only_higher_epochs() -> None:
    store = ReplicaStore("a")
    first = store.prepare(Prepare(7, e(2), ABC))
    assert first.ok and first.promised == ZERO_EPOCH and first.config == () and not first.synced
    assert store.promised(7) == e(2)
    again = store.prepare(Prepare(7, e(2), ABC))
    assert not again.ok and again.promised == e(2)
    lower = store.prepare(Prepare(7, e(1, "z#9"), ABC))
    assert not lower.ok and lower.promised == e(2)
    # Same counter, larger leader id: a higher epoch.
    assert store.prepare(Prepare(7, e(2, "y#1"), ABC)).ok
    assert store.statistics().refused == 2


def test_prepare_unions_configs_and_shows_records_only_when_synced() -> None:
    store = synced_store()
    store.accept(Accept(7, e(1), ABC, (("k", "1", entry(1, 1)),)))
    promise = store.prepare(Prepare(7, e(3), (("b", "c", "d"),)))
    assert promise.ok and promise.promised == e(1) and promise.marked == e(1)
    assert promise.config == ABC and promise.pending == ()
    assert promise.synced and promise.entries == (("k", "1", entry(1, 1)),)
    again = store.prepare(Prepare(7, e(4), (("a", "b", "d"),)))
    assert again.pending == (("b", "c", "d"),)  # what it held before this promise
    state = store.partition(7)
    assert state is not None and state.config == ABC
    assert state.pending == (("a", "b", "d"), ("b", "c", "d"))
    blank = ReplicaStore("a")
    blank.restore(MetaChange(7, e(1), e(1), ABC, (), False), {("k", "1"): entry(1, 1)})
    assert blank.prepare(Prepare(7, e(2), ABC)).entries == ()


def test_accept_fences_older_epochs_and_keeps_the_newest_version() -> None:
    store = synced_store(epoch=e(2))
    refused = store.accept(Accept(7, e(1), ABC, (("k", "1", entry(1, 1)),)))
    assert not refused.ok and refused.reason == "epoch" and refused.promised == e(2)
    assert store.get(7, "k", "1") is None
    assert store.accept(Accept(7, e(2), ABC, (("k", "1", entry(2, 5, b"new")),))).ok
    # An older version arriving late changes nothing.
    assert store.accept(Accept(7, e(2), ABC, (("k", "1", entry(2, 4, b"old")),))).ok
    got = store.get(7, "k", "1")
    assert got is not None and got.state == b"new"
    # A higher epoch (a leader this replica did not promise) raises the promise.
    assert store.accept(Accept(7, e(5), (("a", "b", "d"),), ())).ok
    assert store.promised(7) == e(5)
    state = store.partition(7)
    assert state is not None and ("a", "b", "d") in state.pending


def test_an_unsynced_replica_takes_only_the_catch_up_of_the_epoch_it_promised() -> None:
    store = ReplicaStore("a")
    item = (("k", "1", entry(1, 1)),)
    assert store.accept(Accept(7, e(1), ABC, item)).reason == "unsynced"
    store.prepare(Prepare(7, e(2), ABC))
    assert store.accept(Accept(7, e(2), ABC, item)).reason == "unsynced"
    assert store.accept(Accept(7, e(3), ABC, item, catchup=True)).reason == "unsynced"
    assert store.accept(Accept(7, e(2), ABC, item, catchup=True)).ok
    assert store.get(7, "k", "1") == entry(1, 1)
    assert store.mark(Mark(7, e(2), ABC)).ok
    state = store.partition(7)
    assert state is not None and state.synced
    assert store.accept(Accept(7, e(2), ABC, ())).ok


def test_mark_needs_the_promised_epoch_and_releases_non_members() -> None:
    store = synced_store("a", e(1))
    store.accept(Accept(7, e(1), ABC, (("k", "1", entry(1, 1)),)))
    store.prepare(Prepare(7, e(2), (("a", "b", "c"), ("b", "c", "d"))))
    assert not store.mark(Mark(7, e(1), (("b", "c", "d"),))).ok
    assert store.mark(Mark(7, e(2), (("b", "c", "d"),))).ok
    state = store.partition(7)
    assert state is not None
    assert state.records == {} and not state.synced and state.promised == e(2)
    # It remembers where the data went, for later candidates to find.
    assert state.marked == e(2) and state.config == (("b", "c", "d"),) and state.pending == ()
    assert store.statistics().records == 0
    # The promise still fences older leaders.
    assert not store.accept(Accept(7, e(1), ABC, ())).ok


def test_probe_reports_without_changing_anything() -> None:
    store = ReplicaStore("a")
    assert store.probe(Probe(9)).promised == ZERO_EPOCH and store.partition(9) is None
    synced = synced_store()
    known = synced.probe(Probe(7))
    assert known.synced and known.config == ABC and known.records == 0
    assert known.marked == e(1) and known.pending == ()


@pytest.mark.parametrize("item", [
    Prepare(GROUPS, e(1), ABC), Probe(-1), Prepare(1, ZERO_EPOCH, ABC), Mark(1, e(0, "x"), ABC),
])
def test_bad_items_raise_protocol_error(item: Prepare | Probe | Mark) -> None:
    store = ReplicaStore("a")
    with pytest.raises(ProtocolError, match=r"partition|epoch"):
        store.handle(item)
    assert store.partition(1) is None


def test_the_journal_lists_changes_in_order() -> None:
    store = ReplicaStore("a", journal=True)
    store.handle(Prepare(7, e(1), ABC))
    store.handle(Accept(7, e(1), ABC, (("k", "1", entry(1, 1)),), catchup=True))
    store.handle(Mark(7, e(1), ABC))
    store.handle(Prepare(7, e(2), (("b", "c", "d"),)))
    store.handle(Mark(7, e(2), (("b", "c", "d"),)))
    changes = store.drain()
    kinds = [type(c) for c in changes]
    assert kinds == [MetaChange, PutChange, MetaChange, MetaChange, DropChange, MetaChange]
    assert store.drain() == []
    assert ReplicaStore("a").drain() == []


items = st.one_of(
    st.builds(lambda p, c: Prepare(p, e(c), ABC), st.integers(0, 2), st.integers(1, 6)),
    st.builds(lambda p, c, s, cu: Accept(p, e(c), ABC, (("k", str(s % 3), entry(c, s)),), cu),
              st.integers(0, 2), st.integers(1, 6), st.integers(1, 9), st.booleans()),
    st.builds(lambda p, c: Mark(p, e(c), ABC), st.integers(0, 2), st.integers(1, 6)),
)


@settings(max_examples=300)
@given(st.lists(items, max_size=40))
def test_promises_and_versions_never_go_back(seq: list[Prepare | Accept | Mark]) -> None:
    """I2 and I5: a replica's promise never decreases, it never accepts below its
    promise, and a stored version never decreases."""
    store = ReplicaStore("a")
    for item in seq:
        before = store.promised(item.partition)
        held = store.partition(item.partition)
        versions = {rk: en.version for rk, en in (held.records.items() if held else ())}
        reply = store.handle(item)
        assert not isinstance(reply, Known)  # no Probe among the items
        assert store.promised(item.partition) >= before
        if isinstance(item, Accept) and reply.ok:
            assert item.epoch >= before
        if isinstance(item, Prepare) and reply.ok:
            assert item.epoch > before
        state = store.partition(item.partition)
        assert state is not None
        for rk, version in versions.items():
            if rk in state.records:
                assert state.records[rk].version >= version


def test_amnesia_lasts_until_a_mark() -> None:
    forgetful = ReplicaStore("a")  # memory only: it may have forgotten a mark
    assert forgetful.prepare(Prepare(7, e(1), ABC)).amnesiac
    forgetful.mark(Mark(7, e(1), ABC))
    assert not forgetful.prepare(Prepare(7, e(2), ABC)).amnesiac
    durable = ReplicaStore("a", journal=True, amnesiac=False)  # what its file lacks, it never held
    assert not durable.prepare(Prepare(7, e(1), ABC)).amnesiac
    assert not durable.probe(Probe(7)).amnesiac
    changes = durable.drain()
    assert isinstance(changes[0], MetaChange) and changes[0].amnesiac is False
    restored = ReplicaStore("a")
    restored.restore(MetaChange(7, e(1), ZERO_EPOCH, (), (), False, True), {})
    assert restored.probe(Probe(7)).amnesiac
