"""The demo's ledger checks every acknowledged write, counting the killed node's apart."""

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
    ledger.ack(1, "a")  # ... and answers again from a, state restored from its replicas
    ledger.restarted("b")
    ledger.ack(2, "b")  # agent 2 first written on the new incarnation of b
    return ledger


def test_writes_of_a_killed_incarnation_must_survive_it() -> None:
    v = _story().verify([2, 3, 1], ["a", "a", "b"], ["a", "a", None])
    assert v.ok
    assert (v.acknowledged, v.verified, v.lost_with_killed, v.agents_on_killed) == (6, 6, 0, 1)
    lost = _story().verify([2, 1, 1], ["a", "a", "b"], ["a", "a", None])
    assert not lost.ok
    assert (lost.verified, lost.lost_with_killed, lost.unexpected_lost) == (4, 2, 0)


def test_a_missing_write_on_a_surviving_agent_is_real_loss() -> None:
    v = _story().verify([1, 3, 1], ["a", "a", "b"], ["a", "a", None])
    assert not v.ok
    assert (v.unexpected_lost, v.unexpected_agents) == (1, 1)


def test_a_write_lost_in_a_migration_is_real_loss() -> None:
    # Agent 0 moved from a to b after the restart and arrived without one of its writes.
    v = _story().verify([1, 3, 1], ["b", "a", "b"], ["a", "a", None])
    assert not v.ok
    assert (v.moved_agents, v.moved_writes, v.moved_lost) == (1, 2, 1)


def test_a_count_above_acknowledged_and_unknown_writes_is_a_duplicate() -> None:
    ledger = _story()
    ledger.unknown_outcome(0)
    assert ledger.verify([3, 3, 1], ["a", "a", "b"], [None] * 3).ok
    v = ledger.verify([4, 3, 1], ["a", "a", "b"], [None] * 3)
    assert (v.ok, v.duplicated) == (False, 1)


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="one count"):
        Ledger(2).verify([0], ["a"], [None])


@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from("abc")), max_size=60),
       st.sampled_from("abc"))
def test_exact_counts_verify_every_write_and_count_the_killed_nodes_losses(
        writes: list[tuple[int, str]], victim: str) -> None:
    ledger = Ledger(5)
    counts = [0] * 5
    for agent, host in writes:
        ledger.ack(agent, host)
        counts[agent] += 1
    ledger.killed(victim)
    assert ledger.verify(counts, ["x"] * 5, [None] * 5).ok
    # Had the killed host's writes been lost, the ledger would count exactly those.
    on_victim = [sum(1 for a, h in writes if a == i and h == victim) for i in range(5)]
    found = [c - lost for c, lost in zip(counts, on_victim, strict=True)]
    v = ledger.verify(found, ["x"] * 5, [None] * 5)
    assert v.ok == (sum(on_victim) == 0)
    assert v.lost_with_killed == sum(on_victim)
    assert v.verified + v.lost_with_killed == v.acknowledged == len(writes)
