"""Conflict-resolution hooks on registers: custom merge of concurrent writes.

The hook runs on read (``resolve``) or writes its answer back (``settle``); merge stays
the join, so the laws hold whatever the hook does, and the resolved value of a join is
the same whatever order replicas merged in, including hooks that are not commutative
(take the first sibling, concatenate in order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from crdt_model import ELEMENTS, LWWREG, MVREG, Op, Spec, histories, join_all
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster import crdt

LAWS = settings(max_examples=30, deadline=None)


def first(siblings: Sequence[crdt.Sibling[str]], context: crdt.CausalContext) -> str:
    return siblings[0].value


def joined(siblings: Sequence[crdt.Sibling[str]], context: crdt.CausalContext) -> str:
    return "+".join(s.value for s in siblings)


def longest(siblings: Sequence[crdt.Sibling[str]], context: crdt.CausalContext) -> str:
    return max((s.value for s in siblings), key=lambda v: (len(v), v))


HOOKS = [first, joined, longest]


def register(state: crdt.Crdt) -> crdt.MVRegister[str] | crdt.LWWRegister[str]:
    """``state`` as the register it is (every spec here makes registers)."""
    assert isinstance(state, crdt.MVRegister | crdt.LWWRegister)
    return state


def _settling(spec: Spec) -> Spec:
    """``spec`` with a ``settle`` operation (by the ``longest`` hook) besides writes."""

    def run(reg: Any, op: Op, replica: str) -> crdt.Crdt:
        if op[0] == "settle":
            delta = reg.settle(longest, replica=replica)
            return spec.new() if delta is None else delta  # nothing to settle: no-op
        return spec.run(reg, op, replica)

    return Spec(f"{spec.name}+settle", spec.new,
                st.one_of(spec.ops, st.just(("settle",))), run)


SPECS = [MVREG, LWWREG, _settling(MVREG), _settling(LWWREG)]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@LAWS
@given(data=st.data())
def test_merge_with_the_hook_is_commutative_associative_idempotent(
    spec: Spec, data: st.DataObject
) -> None:
    a, b, c = data.draw(histories(spec)).states
    for hook in HOOKS:
        assert register(a | b).resolve(hook) == register(b | a).resolve(hook)
        assert register((a | b) | c).resolve(hook) == register(a | (b | c)).resolve(hook)
        assert register(a | a).resolve(hook) == register(a).resolve(hook)
        assert register(a | spec.new()).resolve(hook) == register(a).resolve(hook)


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@LAWS
@given(data=st.data())
def test_replicas_resolve_alike_whatever_order_deltas_arrive_in(
    spec: Spec, data: st.DataObject
) -> None:
    h = data.draw(histories(spec))
    full = join_all([s.copy() for s in h.states], spec.new())
    shuffled = join_all(data.draw(st.permutations(h.deltas)), spec.new())
    assert shuffled == full
    for hook in HOOKS:
        assert register(shuffled).resolve(hook) == register(full).resolve(hook)
        siblings = register(full).siblings
        assert [s.dot for s in siblings] == sorted(s.dot for s in siblings)


def test_the_hook_gets_the_concurrent_writes_with_their_dots_and_context() -> None:
    base = crdt.MVRegister[str]()
    base.set("draft", replica="n0")
    left, right = base.copy(), base.copy()
    left.set("Final", replica="n1")
    right.set("Final v2", replica="n2")
    both = left | right
    seen: list[tuple[list[crdt.Sibling[str]], crdt.CausalContext]] = []

    def record(siblings: Sequence[crdt.Sibling[str]], context: crdt.CausalContext) -> str:
        seen.append((list(siblings), context))
        return "merged"

    assert both.resolve(record) == "merged"
    [(siblings, context)] = seen
    assert siblings == [crdt.Sibling("Final", ("n1", 1)), crdt.Sibling("Final v2", ("n2", 1))]
    assert ("n0", 1) in context and ("n1", 1) in context  # "draft" was seen, then replaced
    assert both.value == ["Final", "Final v2"]  # resolve reads, it changes nothing


def test_settle_writes_the_resolution_back_and_replaces_the_siblings_everywhere() -> None:
    left, right = crdt.MVRegister[str](), crdt.MVRegister[str]()
    left.set("tea", replica="n1")
    right.set("coffee", replica="n2")
    left.merge(right)
    delta = left.settle(longest, replica="n1")
    assert delta is not None and left.value == ["coffee"]
    right.merge(delta)
    assert right.value == ["coffee"] and right.settle(longest, replica="n2") is None
    # Two replicas settling the same conflict at once agree on the value: no new conflict.
    a, b = crdt.MVRegister[str](), crdt.MVRegister[str]()
    a.set("x", replica="n1")
    b.set("yy", replica="n2")
    a.merge(b)
    b.merge(a)
    da, db = a.settle(longest, replica="n1"), b.settle(longest, replica="n2")
    assert da is not None and db is not None
    a.merge(db)
    assert a.value == ["yy", "yy"] and a.resolve(joined) == "yy"
    assert a.settle(joined, replica="n1") is None


def test_an_lww_register_resolves_by_hook_instead_of_by_timestamp() -> None:
    left, right = crdt.LWWRegister[str](), crdt.LWWRegister[str]()
    left.set("short", replica="n1", timestamp=5)
    right.set("much longer", replica="n2", timestamp=1)
    both = left | right
    assert both.value == "short"  # last writer wins...
    assert both.resolve(longest) == "much longer"  # ...unless the hook says otherwise
    assert [s.timestamp for s in both.siblings] == [5, 1]
    delta = both.settle(longest, replica="n1")
    assert delta is not None and both.value == "much longer" and both.timestamp is not None
    assert both.timestamp > 5  # it beats the siblings under plain LWW too
    assert (left | delta).value == "much longer"


def test_no_write_no_conflict() -> None:
    reg = crdt.MVRegister[str]()
    assert reg.resolve(joined) is None and reg.settle(joined, replica="n1") is None
    reg.set(ELEMENTS[0], replica="n1")
    assert reg.resolve(joined) == ELEMENTS[0]
