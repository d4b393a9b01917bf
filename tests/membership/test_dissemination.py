"""The piggyback buffer: one update per key, least-sent and newest first, bounded sends."""

from __future__ import annotations

import pytest

from phoenix_cluster._membership.dissemination import DisseminationBuffer, retransmit_limit


def test_retransmit_limit_grows_with_log2_of_the_cluster() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 3) == 8
    assert retransmit_limit(4, 7) == 12
    assert retransmit_limit(4, 100) == 28
    assert retransmit_limit(4, 1000) == 40
    assert retransmit_limit(1, 0) == 1


def test_least_sent_first_then_newest_first() -> None:
    buf: DisseminationBuffer[str] = DisseminationBuffer(retransmit_mult=4)
    for key in "abc":
        buf.add(key, key, 10)
    assert buf.select(10, 10) == ["c"]  # newest
    assert buf.select(20, 10) == ["b", "a"]  # then the rest, still newest first
    buf.add("d", "d", 10)
    assert buf.select(30, 10) == ["d", "c", "b"]  # d never sent; then the once-sent
    assert buf.transmits("d") == 1 and buf.transmits("a") == 1 and buf.transmits("c") == 2


def test_a_newer_update_replaces_the_older_one_and_counts_as_news() -> None:
    buf: DisseminationBuffer[str] = DisseminationBuffer(retransmit_mult=4)
    buf.add("x", "x@1", 10)
    buf.select(100, 3)
    buf.select(100, 3)
    assert buf.transmits("x") == 2
    buf.add("x", "x@2", 10)
    assert len(buf) == 1 and buf.transmits("x") == 0
    assert buf.select(100, 3) == ["x@2"]
    assert buf.statistics().replaced == 1


def test_each_update_is_sent_a_bounded_number_of_times() -> None:
    buf: DisseminationBuffer[str] = DisseminationBuffer(retransmit_mult=3)
    for key in "abcde":
        buf.add(key, key, 10)
    n = 7
    limit = retransmit_limit(3, n)  # 9
    sent: dict[str, int] = {}
    for _ in range(100):
        for item in buf.select(25, n):
            sent[item] = sent.get(item, 0) + 1
    assert sent == dict.fromkeys("abcde", limit)
    assert len(buf) == 0
    stats = buf.statistics()
    assert (stats.queued, stats.added, stats.transmissions, stats.retired) == (0, 5, 45, 5)


def test_selection_respects_the_byte_budget_and_skips_what_does_not_fit() -> None:
    buf: DisseminationBuffer[str] = DisseminationBuffer(retransmit_mult=4)
    buf.add("big", "big", 60)
    buf.add("small", "small", 15)
    buf.add("mid", "mid", 30)
    # Newest first: mid (30) fits, small (15) fits, big (60) does not: 45 of 50 bytes.
    assert buf.select(50, 5) == ["mid", "small"]
    assert buf.select(0, 5) == []
    assert buf.select(-3, 5) == []
    assert buf.select(60, 5) == ["big"]


def test_skip_leaves_a_key_for_later() -> None:
    buf: DisseminationBuffer[str] = DisseminationBuffer(retransmit_mult=4)
    buf.add("a", "a", 10)
    buf.add("b", "b", 10)
    assert buf.select(100, 3, skip="b") == ["a"]
    assert buf.transmits("b") == 0


def test_a_shrinking_cluster_retires_updates_already_sent_enough() -> None:
    buf: DisseminationBuffer[str] = DisseminationBuffer(retransmit_mult=1)
    buf.add("a", "a", 10)
    for _ in range(5):
        buf.select(100, 100)  # limit 7 at n=100
    assert buf.transmits("a") == 5
    buf.add("b", "b", 10)
    assert buf.select(100, 2) == ["b"]  # limit 2 at n=2: "a" is retired, unsent
    assert "a" not in buf and buf.statistics().retired == 1


def test_discard_and_repr() -> None:
    buf: DisseminationBuffer[str] = DisseminationBuffer(retransmit_mult=4)
    buf.add("a", "a", 10)
    buf.discard("a")
    buf.discard("zzz")
    assert len(buf) == 0 and buf.select(100, 3) == []
    assert repr(buf) == "<DisseminationBuffer [0 queued, λ=4]>"
    with pytest.raises(ValueError, match="retransmit_mult"):
        DisseminationBuffer(retransmit_mult=0)
