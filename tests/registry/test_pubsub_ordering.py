"""A publisher's stream is delivered in order whatever order its frames arrive in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from phoenix_cluster._registry.ordering import StreamOrder


@given(st.integers(1, 30).flatmap(lambda n: st.permutations(range(1, n + 1))))
def test_any_arrival_order_is_delivered_in_sequence(arrivals: list[int]) -> None:
    order: StreamOrder[int] = StreamOrder()
    delivered: list[int] = []
    for seq in arrivals:
        accepted = order.accept(7, seq, seq)
        assert not accepted.late
        delivered += accepted.ready
    assert delivered == sorted(arrivals)
    assert not order.waiting


def test_a_lost_message_is_skipped_after_the_wait_and_counted() -> None:
    order: StreamOrder[str] = StreamOrder()
    assert order.accept(1, 1, "a").ready == ["a"]
    assert order.accept(1, 3, "c").ready == []
    assert order.accept(1, 4, "d").ready == []
    assert order.waiting
    gave_up = order.give_up()
    assert (gave_up.ready, gave_up.skipped) == (["c", "d"], 1)
    assert not order.waiting
    late = order.accept(1, 2, "b")
    assert late.late and late.ready == []
    assert order.accept(1, 5, "e").ready == ["e"]


def test_a_new_stream_flushes_the_old_one_and_starts_at_one() -> None:
    order: StreamOrder[str] = StreamOrder()
    order.accept(1, 1, "a")
    order.accept(1, 3, "c")  # held: 2 is missing
    accepted = order.accept(2, 1, "x")  # the publisher restarted
    assert accepted.ready == ["c", "x"]
    assert order.accept(2, 2, "y").ready == ["y"]


def test_joining_a_stream_midway_waits_once_and_counts_nothing_lost() -> None:
    # This node restarted while the publisher kept counting: its first message is 500.
    order: StreamOrder[str] = StreamOrder()
    assert order.accept(9, 500, "m").ready == []
    gave_up = order.give_up()
    assert (gave_up.ready, gave_up.skipped) == (["m"], 0)
    assert order.accept(9, 501, "n").ready == ["n"]
