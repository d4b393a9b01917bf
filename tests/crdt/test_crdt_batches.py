"""CausalFields: batches across several CRDT fields, atomic and delivered in causal order.

The property test runs three replicas that write batches (each adds a fresh item to an
``ORSet`` and counts it in a ``PNCounter``, and sometimes writes an ``MVRegister``) and
receive every batch in random order, late and duplicated. After every step each
replica's applied batches are causally closed, and its fields are exactly the join of
those batches, whole: never half of a batch, never an effect without its cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster import crdt

REPLICAS = ["a", "b", "c"]


def cart() -> crdt.CausalFields:
    return crdt.CausalFields({"items": crdt.ORSet[str](), "count": crdt.PNCounter(),
                              "note": crdt.MVRegister[str]()})


def add_item(replica: str, item: str, note: str | None = None) -> Any:
    def change(f: Mapping[str, crdt.Crdt]) -> None:
        items, count = f["items"], f["count"]
        assert isinstance(items, crdt.ORSet) and isinstance(count, crdt.PNCounter)
        items.add(item, replica=replica)
        count.increment(1, replica=replica)
        if note is not None:
            reg = f["note"]
            assert isinstance(reg, crdt.MVRegister)
            reg.set(note, replica=replica)
    return change


def join_of(batches: list[crdt.Batch]) -> crdt.CausalFields:
    """The fields holding exactly ``batches``' deltas (no causal bookkeeping)."""
    model = cart()
    for b in batches:
        for name, delta in b.deltas.items():
            model[name].merge(delta)
    return model


def assert_whole_and_causal(replica: crdt.CausalFields, log: list[crdt.Batch]) -> None:
    applied = replica.applied
    held = [b for b in log if b.seq <= applied.get(b.origin, 0)]
    for b in held:  # causally closed: every cause of a held batch is held
        assert all(applied.get(o, 0) >= n for o, n in b.deps.items()), (b, applied)
    assert replica.value == join_of(held).value
    items, count = replica["items"].value, replica["count"].value
    assert count == len(items)  # the two fields of each batch always travel together


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 10**6)),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 10**6)),
    st.tuples(st.just("state"), st.integers(0, 2), st.integers(0, 2)),
), max_size=40), order=st.randoms(use_true_random=False))
def test_batches_arrive_whole_and_in_causal_order(steps: list[tuple[Any, ...]],
                                                   order: Any) -> None:
    replicas = [cart() for _ in REPLICAS]
    log: list[crdt.Batch] = []
    for kind, i, arg in steps:
        if kind == "write":
            note = f"{REPLICAS[i]}{len(log)}" if arg else None
            log.append(replicas[i].batch(REPLICAS[i], add_item(REPLICAS[i], f"i{len(log)}",
                                                                 note)))
        elif kind == "deliver" and log:
            # Mostly a batch it lacks (a duplicate now and then): reordering is the point.
            lacking = [b for b in log if b.seq > replicas[i].applied.get(b.origin, 0)]
            pool = lacking if lacking and arg % 4 else log
            replicas[i].apply(pool[arg % len(pool)])
        elif kind == "state":
            replicas[i].merge(replicas[arg].copy())  # a whole-state repair
        assert_whole_and_causal(replicas[i], log)
    for r in replicas:  # then everything, shuffled, twice
        for b in order.sample(log * 2, len(log) * 2):
            r.apply(b)
            assert_whole_and_causal(r, log)
        assert r.pending == 0 and r.missing() == {}
    assert replicas[0] == replicas[1] == replicas[2]
    assert replicas[0].value == join_of(log).value


def test_a_batch_waits_for_its_cause_and_both_then_apply_in_order() -> None:
    a, b, c = cart(), cart(), cart()
    first = a.batch("a", add_item("a", "tea"))
    b.apply(first)
    second = b.batch("b", add_item("b", "milk"))  # written after seeing "tea"
    assert second.deps == {"a": 1}
    assert c.apply(second) == []  # its cause is missing: parked, nothing visible
    assert c.value["items"] == frozenset() and c.pending == 1
    assert c.missing() == {"a": 1}
    assert c.apply(first) == [first, second]
    assert c.value["items"] == {"tea", "milk"} and c["count"].value == 2
    assert c.apply(first) == [] and c.apply(second) == []  # duplicates: ignored


def test_a_failing_change_changes_nothing_and_takes_no_number() -> None:
    fields = cart()

    def half_then_fail(f: Mapping[str, crdt.Crdt]) -> None:
        add_item("a", "tea")(f)
        raise RuntimeError("out of stock")

    with pytest.raises(RuntimeError, match="out of stock"):
        fields.batch("a", half_then_fail)
    assert fields.value["items"] == frozenset() and fields["count"].value == 0
    assert fields.applied == {}
    assert fields.batch("a", add_item("a", "tea")).seq == 1


def test_batches_round_trip_through_msgpack_and_bad_ones_are_refused() -> None:
    a, b = cart(), cart()
    sent = a.batch("a", add_item("a", "tea", note="hello"))
    wire = msgspec.msgpack.encode(sent)
    got = b.decode_batch(wire)
    assert got == sent and b.apply(got) == [got]
    assert b == a and b.value["note"] == ["hello"]

    with pytest.raises(ValueError, match="unknown field 'price'"):
        b.decode_batch(msgspec.msgpack.encode(crdt.Batch("x", 1, {"price": crdt.GCounter()})))
    with pytest.raises(ValueError, match="malformed batch"):
        b.decode_batch(b"\xc1not msgpack")
    with pytest.raises(ValueError, match="malformed batch"):
        b.decode_batch(msgspec.msgpack.encode({"origin": "x", "seq": 0, "deltas": {}}))
    wrong = crdt.Batch("x", 1, {"items": crdt.GCounter(), "count": crdt.PNCounter()})
    with pytest.raises(ValueError, match="field 'items' is a ORSet, its delta a GCounter"):
        b.apply(wrong)
    assert b.applied == {"a": 1} and b.pending == 0  # refused whole: nothing applied
    with pytest.raises(TypeError, match=r"must be a phx\.crdt value"):
        crdt.CausalFields({"n": 3})  # type: ignore[dict-item]


def test_a_whole_state_travels_and_a_new_replica_starts_from_it() -> None:
    a, fresh = cart(), cart()
    first = a.batch("a", add_item("a", "tea"))
    second = a.batch("a", add_item("a", "milk", note="hi"))
    copy = fresh.decode_state(a.encode())
    assert copy == a and copy.value == a.value
    fresh.merge(copy)
    assert fresh.applied == {"a": 2} and fresh.apply(first) == [] and fresh.apply(second) == []
    later = a.batch("a", add_item("a", "sugar"))
    assert fresh.apply(later) == [later] and fresh == a
    with pytest.raises(ValueError, match="malformed CausalFields state"):
        fresh.decode_state(b"\x93junk")
    other = crdt.CausalFields({"items": crdt.ORSet[str]()})
    with pytest.raises(ValueError, match=r"state has fields \['items'\], expected"):
        fresh.decode_state(other.encode())
