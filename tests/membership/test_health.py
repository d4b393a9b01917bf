"""Lifeguard local health: grows on evidence that we are slow, shrinks on success."""

from __future__ import annotations

import pytest

from phoenix_cluster._membership.health import LocalHealth


def test_starts_healthy_and_scales_timers_by_its_multiplier() -> None:
    health = LocalHealth()
    assert (health.score, health.multiplier) == (0, 1)
    assert health.scale(0.5) == 0.5
    health.apply_delta(3)
    assert health.multiplier == 4
    assert health.scale(0.5) == 2.0


def test_clamped_between_zero_and_max_multiplier_minus_one() -> None:
    health = LocalHealth(max_multiplier=8)
    assert health.apply_delta(100) == 7
    assert health.multiplier == 8
    assert health.apply_delta(-100) == 0
    with pytest.raises(ValueError, match="max_multiplier"):
        LocalHealth(max_multiplier=0)


def test_failed_probe_counts_missed_nacks_or_once_without_helpers() -> None:
    health = LocalHealth()
    health.probe_failed(expected_nacks=3, nacks=3)  # helpers answered: not our fault
    assert health.score == 0
    health.probe_failed(expected_nacks=3, nacks=1)  # two nacks never came back
    assert health.score == 2
    health.probe_failed(expected_nacks=0, nacks=0)  # nobody to ask: count the failure
    assert health.score == 3
    assert health.statistics().missed_nacks == 2


def test_success_and_refutation() -> None:
    health = LocalHealth()
    health.refuted()
    health.refuted()
    assert health.score == 2
    health.probe_succeeded()
    assert health.score == 1
    health.probe_succeeded()
    health.probe_succeeded()
    assert health.score == 0
    stats = health.statistics()
    assert (stats.refutations, stats.max_score_seen, stats.multiplier) == (2, 2, 1)


def test_event_loop_lag_above_threshold_counts() -> None:
    health = LocalHealth()
    assert not health.loop_lag(0.05, threshold_s=0.1)
    assert health.score == 0
    assert health.loop_lag(0.3, threshold_s=0.1)
    assert health.loop_lag(0.3, threshold_s=0.1)
    assert health.score == 2
    assert health.statistics().lag_events == 2
    assert repr(health) == "<LocalHealth score=2/7 x3>"
