"""CRDT values round-trip through msgspec msgpack (agent state is msgpack) and keep
merging correctly after decoding."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from crdt_model import ALL, Spec, histories
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster import crdt

CODEC = settings(max_examples=30, deadline=None)


def _typed(spec: Spec) -> Any:
    return {"GCounter": crdt.GCounter, "PNCounter": crdt.PNCounter, "GSet": crdt.GSet[str],
            "TwoPSet": crdt.TwoPSet[str], "ORSet": crdt.ORSet[str],
            "LWWRegister": crdt.LWWRegister[str], "MVRegister": crdt.MVRegister[str],
            "LWWMap": crdt.LWWMap[str, int], "ORMap": crdt.ORMap[str]}[spec.name]


@pytest.mark.parametrize("spec", ALL, ids=repr)
@CODEC
@given(data=st.data())
def test_round_trip_then_merge(spec: Spec, data: st.DataObject) -> None:
    a, b, _ = data.draw(histories(spec)).states
    wire = msgspec.msgpack.encode(a)
    typed = msgspec.msgpack.decode(wire, type=_typed(spec))
    assert typed == a
    # The agent runtime decodes untyped, then converts annotated fields.
    assert msgspec.convert(msgspec.msgpack.decode(wire), _typed(spec)) == a
    assert msgspec.convert(msgspec.to_builtins(a), _typed(spec)) == a
    assert typed | b == a | b
    assert b | typed == b | a
    # A decoded replica keeps minting fresh dots: its next delta is new to the original.
    before = a.copy()
    delta = spec.run(typed, data.draw(spec.ops), "a")
    assert a.merge(delta) == (not delta.is_bottom())
    assert a == typed and before.leq(a)


def test_nested_map_round_trip_keeps_types() -> None:
    m = crdt.ORMap[str]()
    r = "n1"
    m.update("visits", crdt.GCounter, lambda c: c.increment(3, replica=r))
    m.update("tags", crdt.ORSet, lambda s: s.add("new", replica=r) | s.add("vip", replica=r))
    m.update("name", crdt.LWWRegister, lambda v: v.set("Ada", replica=r, timestamp=1))
    m.update("profile", crdt.ORMap, lambda p: p.update(
        "langs", crdt.MVRegister, lambda v: v.set(["en", "fr"], replica=r)))
    m.update("prefs", crdt.LWWMap, lambda p: p.set("theme", "dark", replica=r, timestamp=1))
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(m), type=crdt.ORMap[str])
    assert back == m
    assert back.value == {
        "visits": 3, "tags": frozenset({"new", "vip"}), "name": "Ada",
        "profile": {"langs": [["en", "fr"]]}, "prefs": {"theme": "dark"},
    }
    counter = back.get("visits", crdt.GCounter)
    assert isinstance(counter, crdt.GCounter) and counter.value == 3
    delta = back.update("visits", crdt.GCounter, lambda c: c.increment(replica="n2"))
    m.merge(msgspec.msgpack.decode(msgspec.msgpack.encode(delta), type=crdt.ORMap[str]))
    assert m.value["visits"] == 4 and m == back


def test_tuple_elements_decode_as_tuples_when_typed() -> None:
    s = crdt.ORSet[tuple[int, int]]()
    s.add((1, 2), replica="a")
    back = msgspec.convert(msgspec.msgpack.decode(msgspec.msgpack.encode(s)),
                           crdt.ORSet[tuple[int, int]])
    assert back.value == {(1, 2)}


@pytest.mark.parametrize("bad", [
    {"crdt": "orset", "entries": {"x": [["a", 0]]}},            # counters start at 1
    {"crdt": "orset", "context": {"vv": {"a": -1}}},
    {"crdt": "gcounter", "entries": {("a", 1): -5}},             # totals are >= 0
    {"crdt": "gset", "entries": {"x": [["a", 1]]}},              # wrong type tag
])
def test_malformed_state_is_rejected_on_decode(bad: dict[str, Any]) -> None:
    kind = crdt.GCounter if bad["crdt"] == "gcounter" else crdt.ORSet[str]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, kind)
