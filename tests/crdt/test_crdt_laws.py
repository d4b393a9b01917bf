"""Every CRDT type is a join-semilattice, and deltas are states of it.

For each type: merge is commutative, associative and idempotent; the empty value is the
identity; applying the deltas in any order (with duplicates) gives the join of the full
states; and the order ``leq`` agrees with the join.
"""

from __future__ import annotations

import pytest
from crdt_model import ALL, GCOUNTER, Spec, histories, join_all
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster import crdt

LAWS = settings(max_examples=40, deadline=None)


@pytest.mark.parametrize("spec", ALL, ids=repr)
@LAWS
@given(data=st.data())
def test_merge_is_commutative_associative_idempotent(spec: Spec, data: st.DataObject) -> None:
    a, b, c = data.draw(histories(spec)).states
    assert a | b == b | a
    assert (a | b) | c == a | (b | c)
    assert a | a == a
    assert (a | b) | b == a | b
    assert a | spec.new() == a
    assert spec.new() | a == a


@pytest.mark.parametrize("spec", ALL, ids=repr)
@LAWS
@given(data=st.data())
def test_deltas_in_any_order_equal_the_join_of_full_states(
    spec: Spec, data: st.DataObject
) -> None:
    h = data.draw(histories(spec))
    full = join_all(h.states, spec.new())
    shuffled = data.draw(st.permutations(h.deltas))
    repeats = data.draw(st.lists(st.sampled_from(h.deltas), max_size=5)) if h.deltas else []
    replica = join_all([*shuffled, *repeats], spec.new())
    assert replica == full
    assert replica.value == full.value


@pytest.mark.parametrize("spec", ALL, ids=repr)
@LAWS
@given(data=st.data())
def test_deltas_in_causal_order_match_state_after_each_step(
    spec: Spec, data: st.DataObject
) -> None:
    # One replica's own deltas, in its own order, rebuild its state step by step.
    ops = data.draw(st.lists(spec.ops, max_size=15))
    source, follower = spec.new(), spec.new()
    for op in ops:
        delta = spec.run(source, op, "a")
        assert follower.merge(delta) == (not delta.is_bottom())
        assert follower == source
        assert delta.leq(source)


@pytest.mark.parametrize("spec", ALL, ids=repr)
@LAWS
@given(data=st.data())
def test_leq_is_the_order_of_the_join(spec: Spec, data: st.DataObject) -> None:
    h = data.draw(histories(spec))
    a, b, _ = h.states
    ab = a | b
    assert a.leq(ab) and b.leq(ab)
    assert a.leq(b) == (ab == b)
    assert all(d.leq(join_all(h.states, spec.new())) for d in h.deltas)
    assert not a.merge(a.copy())  # nothing new: merge reports no change
    news = not b.leq(a)
    assert a.merge(b) == news


@LAWS
@given(data=st.data())
def test_counter_never_over_counts_whatever_the_delta_order(data: st.DataObject) -> None:
    h = data.draw(histories(GCOUNTER))
    final = join_all(h.states, crdt.GCounter()).value
    replica = crdt.GCounter()
    for delta in data.draw(st.permutations(h.deltas)):
        assert isinstance(delta, crdt.GCounter)
        replica.merge(delta)
        assert replica.value <= final
    assert replica.value == final
