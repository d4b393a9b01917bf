"""Digest anti-entropy: the delta computed from a peer's digest brings it up to date, is
no larger than needed, and is the join of the decomposition pieces the peer lacks."""

from __future__ import annotations

import pytest
from crdt_model import ALL, Spec, histories, join_all
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster import crdt

AE = settings(max_examples=40, deadline=None)


@pytest.mark.parametrize("spec", ALL, ids=repr)
@AE
@given(data=st.data())
def test_delta_for_a_digest_brings_the_peer_up_to_date(spec: Spec, data: st.DataObject) -> None:
    a, b, _ = data.draw(histories(spec)).states
    delta = a.delta_for(b.digest())
    assert delta.leq(a | b)
    assert b | delta == a | b
    # A peer that already has everything gets nothing.
    assert a.delta_for((a | b).digest()).is_bottom()


@pytest.mark.parametrize("spec", ALL, ids=repr)
@AE
@given(data=st.data())
def test_decomposition_joins_back_and_the_missing_pieces_suffice(
    spec: Spec, data: st.DataObject
) -> None:
    a, b, _ = data.draw(histories(spec)).states
    pieces = a.decompose()
    assert join_all(pieces, spec.new()) == a
    missing = [p for p in pieces if not p.leq(b)]
    assert join_all(missing, b.copy()) == a | b
    # delta_for never ships a live value the peer has already seen and dropped.
    digest = b.digest()
    for dot in a.delta_for(digest).dots():
        assert dot not in digest.context or dot in digest.live


def test_counter_digest_sync_stays_one_dot_after_many_increments() -> None:
    a, b = crdt.GCounter(), crdt.GCounter()
    for _ in range(10_000):
        a.increment(replica="a")
    b.merge(a)
    a.increment(replica="a")
    delta = a.delta_for(b.digest())
    assert len(list(delta.dots())) == 1
    assert len(delta.context.cloud) <= 2
    b.merge(delta)
    assert b == a and b.value == 10_001
    fresh = crdt.GCounter()
    fresh.merge(a.delta_for(fresh.digest()))
    assert fresh == a


def test_set_sync_sends_only_the_missing_elements() -> None:
    a = crdt.ORSet[int]()
    for i in range(500):
        a.add(i, replica="a")
    b = a.copy()
    a.add(1000, replica="a")
    a.remove(3)
    b.add(2000, replica="b")
    delta = a.delta_for(b.digest())
    assert delta.value == {1000}
    assert len(delta.context) == 2  # the new add, and the removal of 3
    b.merge(delta)
    assert b.value == (set(range(500)) - {3}) | {1000, 2000}
