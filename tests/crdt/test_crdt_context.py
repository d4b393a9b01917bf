"""Causal contexts: a compact, canonical set of dots that never claims a dot it lacks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster.crdt import CausalContext, Dot

dot_sets = st.sets(st.tuples(st.sampled_from("abc"), st.integers(1, 12)), max_size=25)
CTX = settings(max_examples=80, deadline=None)


def _ctx(dots: set[Dot]) -> CausalContext:
    ctx = CausalContext()
    for d in sorted(dots, key=lambda d: -d[1]):  # worst order: gaps first
        ctx.add(d)
    return ctx


@CTX
@given(a=dot_sets, b=dot_sets)
def test_context_holds_exactly_its_dots(a: set[Dot], b: set[Dot]) -> None:
    ca, cb = _ctx(a), CausalContext.from_dots(b)
    assert ca == CausalContext.from_dots(a)  # canonical whatever the insertion order
    assert set(ca.dots()) == a and len(ca) == len(a) and bool(ca) == bool(a)
    assert all(d in ca for d in a)
    assert not any((r, n) in ca for r in "abc" for n in range(1, 14) if (r, n) not in a)
    assert all(n > ca.vv.get(r, 0) + 1 for r, n in ca.cloud)  # folded where possible
    grew = ca.merge(cb)
    assert grew == (not b <= a)
    assert ca == CausalContext.from_dots(a | b)
    assert CausalContext.from_dots(a).issubset(ca) and cb.issubset(ca)
    assert CausalContext.from_dots(a).issubset(cb) == (a <= b)


@CTX
@given(a=dot_sets, b=dot_sets, limit=st.integers(0, 30))
def test_missing_from_lists_what_the_other_lacks(a: set[Dot], b: set[Dot], limit: int) -> None:
    ca, cb = CausalContext.from_dots(a), CausalContext.from_dots(b)
    for replica in "abc":
        lacking = {d for d in a - b if d[0] == replica}
        found = ca.missing_from(cb, replica, limit)
        if len(lacking) > limit:
            assert found is None
        else:
            assert found is not None and set(found) == lacking
        assert set(ca.of_replica(replica).dots()) == {d for d in a if d[0] == replica}


def test_next_dot_follows_the_highest_seen_and_checks_the_id() -> None:
    ctx = CausalContext.from_dots([("a", 1), ("a", 5)])
    assert ctx.next_dot("a") == ("a", 6) and ctx.next_dot("b") == ("b", 1)
    assert ctx.max_counter("a") == 5
    with pytest.raises(ValueError, match="non-empty"):
        ctx.next_dot("")
    assert ctx.replicas() == {"a"}
    copy = ctx.copy()
    copy.add(("a", 2))
    assert ctx != copy and ("a", 2) not in ctx
