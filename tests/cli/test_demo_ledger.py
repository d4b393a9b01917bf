"""The demo's ledger sorts missing writes into "lost with the killed node" and real loss."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phoenix_cluster._cli.demo_ledger import Ledger


def _story() -> Ledger:
    ledger = Ledger(3)
    ledger.ack(0, "a")  # agent 0 stays on a
    ledger.ack(0, "a")
    ledger.ack(1, "b")  # agent 1 lives on b, which is killed
    ledger.ack(1, "b")
    ledger.killed("b")
    ledger.ack(1, "a")  # ... and answers again from a, afresh
    ledger.restarted("b")
    ledger.ack(2, "b")  # agent 2 first written on the new incarnation of b
    return ledger


def test_killed_incarnation_writes_are_lost_with_it_and_nothing_else() -> None:
    v = _story().verify([2, 1, 1], ["a", "a", "b"], ["a", "a", None])
    assert v.ok
    assert (v.acknowledged, v.verified, v.lost_with_killed, v.agents_on_killed) == (6, 4, 2, 1)
    assert v.unexpected_lost == 0 and v.duplicated == 0


def test_a_missing_write_on_a_surviving_agent_is_real_loss() -> None:
    v = _story().verify([1, 1, 1], ["a", "a", "b"], ["a", "a", None])
    assert not v.ok
    assert (v.unexpected_lost, v.unexpected_agents) == (1, 1)


def test_a_write_lost_in_a_migration_is_real_loss() -> None:
    # Agent 1 moved from a to b after the restart and arrived without its post-kill write.
    v = _story().verify([2, 0, 1], ["a", "b", "b"], ["a", "a", None])
    assert not v.ok
    assert (v.moved_agents, v.moved_writes, v.moved_lost) == (1, 1, 1)


def test_a_count_above_acknowledged_and_unknown_writes_is_a_duplicate() -> None:
    ledger = _story()
    ledger.unknown_outcome(0)
    assert ledger.verify([3, 1, 1], ["a", "a", "b"], [None] * 3).ok
    v = ledger.verify([4, 1, 1], ["a", "a", "b"], [None] * 3)
    assert (v.ok, v.duplicated) == (False, 1)


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="one count"):
        Ledger(2).verify([0], ["a"], [None])


@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from("abc")), max_size=60),
       st.sampled_from("abc"))
def test_exact_counts_verify_every_write_not_on_the_killed_node(
        writes: list[tuple[int, str]], victim: str) -> None:
    ledger = Ledger(5)
    counts = [0] * 5
    for agent, host in writes:
        ledger.ack(agent, host)
        counts[agent] += 1
    ledger.killed(victim)
    # Without replication a killed host's agents lose exactly its writes.
    on_victim = [sum(1 for a, h in writes if a == i and h == victim) for i in range(5)]
    found = [c - lost for c, lost in zip(counts, on_victim, strict=True)]
    v = ledger.verify(found, ["x"] * 5, [None] * 5)
    assert v.ok
    assert v.lost_with_killed == sum(on_victim)
    assert v.verified + v.lost_with_killed == v.acknowledged == len(writes)
