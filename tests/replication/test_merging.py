"""Merge rules of active-active agent state (``_replication/merging.py``).

The laws that make ``consistency="crdt"`` replicas converge: joining replica states
field by field, in any order and with any duplication, gives the same agent state; the
delta a message ships, joined into any replica that had the state before, equals the
state after; digest anti-entropy brings a replica exactly up to the other's join.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster import crdt
from phoenix_cluster._replication.merging import (
    Fields,
    check_fields,
    decode_digests,
    decode_fields,
    delta_between,
    deltas_for,
    digests,
    encode_digests,
    encode_fields,
    merge_into,
    schema_of,
    state_hash,
)
from phoenix_cluster.errors import ConfigError, ProtocolError

SCHEMA = {"items": crdt.ORSet[str], "adds": crdt.PNCounter, "pairs": crdt.ORSet[tuple[int, int]]}
REPLICAS = ("n1@1", "n2@1", "n3@1")

# One operation: (replica index, op, element).
ops = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["add", "remove", "dec", "pair"]),
                         st.sampled_from("abcd")), max_size=25)


def empty() -> Fields:
    return {"items": crdt.ORSet[str](), "adds": crdt.PNCounter()}


def apply(state: Fields, replica: str, op: str, x: str) -> None:
    items = state["items"]
    assert isinstance(items, crdt.ORSet)
    adds = state["adds"]
    assert isinstance(adds, crdt.PNCounter)
    if op == "add":
        items.add(x, replica=replica)
        adds.increment(1, replica=replica)
    elif op == "remove":
        items.remove(x)
    elif op == "dec":
        adds.decrement(1, replica=replica)
    else:
        pairs = state.setdefault("pairs", crdt.ORSet[tuple[int, int]]())
        assert isinstance(pairs, crdt.ORSet)
        pairs.add((ord(x), 1), replica=replica)


def run(script: list[tuple[int, str, str]], syncs: list[tuple[int, int]]) -> list[Fields]:
    """Three replicas mutate their own state; each sync ships a whole state across."""
    states = [empty() for _ in REPLICAS]
    for step, (who, op, x) in enumerate(script):
        apply(states[who], REPLICAS[who], op, x)
        if step < len(syncs):
            src, dst = syncs[step]
            merge_into(states[dst], decode_fields(encode_fields(states[src]), SCHEMA))
    return states


def join_all(parts: list[Fields]) -> Fields:
    out: Fields = {}
    for part in parts:
        merge_into(out, decode_fields(encode_fields(part), SCHEMA))
    return out


def values(fields: Fields) -> dict[str, object]:
    return {name: value.value for name, value in fields.items()}


syncs = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(ops, syncs, st.data())
def test_merging_replica_states_in_any_order_and_duplication_gives_one_state(
    script: list[tuple[int, str, str]], sync: list[tuple[int, int]], data: st.DataObject,
) -> None:
    states = run(script, sync)
    reference = join_all(states)
    order = data.draw(st.lists(st.integers(0, 2), min_size=3, max_size=9).filter(
        lambda o: set(o) == {0, 1, 2}))
    shuffled = join_all([states[i] for i in order])
    assert shuffled == reference
    assert values(shuffled) == values(reference)
    # Idempotent: joining the result again changes nothing.
    again = join_all([shuffled, *states])
    assert again == reference
    assert not merge_into(again, reference)


@settings(max_examples=150, deadline=None)
@given(ops, ops, syncs)
def test_the_shipped_delta_brings_any_older_replica_to_the_new_state(
    before: list[tuple[int, str, str]], after: list[tuple[int, str, str]],
    sync: list[tuple[int, int]],
) -> None:
    states = run(before, sync)
    old = decode_fields(encode_fields(states[0]), SCHEMA)
    for _, op, x in after:  # a handler's in-place mutators on replica 0
        apply(states[0], REPLICAS[0], op, x)
    delta = delta_between(old, states[0])
    behind = decode_fields(encode_fields(old), SCHEMA)
    merge_into(behind, decode_fields(encode_fields(delta), SCHEMA))
    assert behind == states[0]
    # Another replica that knew the old state ends at the join, as with the full state.
    other = join_all([old, states[1]])
    with_delta = join_all([other, delta])
    assert with_delta == join_all([other, states[0]])


@settings(max_examples=100, deadline=None)
@given(ops, syncs)
def test_digest_anti_entropy_brings_a_replica_to_the_join(
    script: list[tuple[int, str, str]], sync: list[tuple[int, int]],
) -> None:
    a, b, _ = run(script, sync)
    theirs = decode_digests(encode_digests(digests(b)))
    fix = deltas_for(a, theirs)
    repaired = join_all([b, fix])
    assert repaired == join_all([a, b])


def test_equal_states_have_equal_fingerprints() -> None:
    a = empty()
    apply(a, "n1@1", "add", "x")
    b = decode_fields(encode_fields(a), SCHEMA)
    assert state_hash(encode_fields(a)) == state_hash(encode_fields(b))
    apply(b, "n2@1", "add", "y")
    assert state_hash(encode_fields(a)) != state_hash(encode_fields(b))


def test_typed_fields_decode_with_their_element_types() -> None:
    state = empty()
    apply(state, "n1@1", "pair", "a")
    back = decode_fields(encode_fields(state), SCHEMA)
    assert back["pairs"].value == {(97, 1)}


def test_schema_prefers_matching_annotations_and_falls_back_to_the_class() -> None:
    fields: Fields = {"items": crdt.ORSet(), "adds": crdt.PNCounter()}
    schema = schema_of(fields, {"items": crdt.ORSet[str], "adds": crdt.GCounter})
    assert schema == {"items": crdt.ORSet[str], "adds": crdt.PNCounter}


def test_non_crdt_fields_are_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="'total' is a int") as failed:
        check_fields("shop.cart", {"items": crdt.ORSet(), "total": 0})
    assert failed.value.key == "total"
    with pytest.raises(ConfigError, match="must be a dict"):
        check_fields("shop.cart", [1, 2])


@pytest.mark.parametrize("payload", [
    b"\xc1",                                                  # not msgpack
    msgspec.msgpack.encode([1, 2]),                           # not a map
    msgspec.msgpack.encode({"nope": 1}),                      # unknown field
    msgspec.msgpack.encode({"adds": {"crdt": "orset"}}),      # wrong type tag
    msgspec.msgpack.encode({"items": {"crdt": "orset", "entries": 3}}),  # malformed
])
def test_malformed_states_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_fields(payload, SCHEMA)


def test_merging_a_different_type_into_a_field_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="'adds'"):
        merge_into(empty(), {"adds": crdt.GCounter()})
    with pytest.raises(ProtocolError):
        decode_digests(b"\x01")
