"""The chaos checker's verdict reports what it must: an injected loss, an injected
phantom, a duplicate, a definitely failed add that ran, a total out of bounds; the
nemesis refuses fault kinds it does not know."""

from __future__ import annotations

import pytest

from phoenix_cluster.testing.chaos import History, choose_faults, judge


def history() -> History:
    h = History()
    for item in ("a1", "a2", "a3"):
        h.record("ok", "k", item)
    h.record("unknown", "k", "u1")
    h.record("failed", "k", "f1")
    return h


def test_a_clean_history_passes() -> None:
    verdict = judge({"k": {"total": 4, "items": ["a1", "a2", "a3", "u1"]}}, history())
    assert verdict.violations == [] and verdict.lost == 0 and verdict.phantoms == 0


def test_an_injected_loss_and_phantom_are_both_reported() -> None:
    verdict = judge({"k": {"total": 3, "items": ["a1", "a3", "zz"]}}, history())
    assert verdict.lost == 1 and verdict.phantoms == 1
    assert any("1 acknowledged adds lost" in v and "a2" in v for v in verdict.violations)
    assert any("1 items nobody added" in v and "zz" in v for v in verdict.violations)


def test_duplicates_failed_adds_and_bad_totals_are_reported() -> None:
    verdict = judge({"k": {"total": 9, "items": ["a1", "a2", "a3", "a3", "f1"]}},
                    history())
    text = "\n".join(verdict.violations)
    assert "1 adds applied twice" in text
    assert "1 adds that failed definitely are present" in text
    assert "total 9 outside [3, 4]" in text
    assert verdict.lost == 0


def test_a_key_that_never_answered_is_a_violation() -> None:
    verdict = judge({"k": "no quorum"}, history())
    assert verdict.violations == ["k: never answered after the heal (no quorum)"]


def test_the_nemesis_refuses_unknown_fault_kinds_and_skips_unavailable_isolation() -> None:
    with pytest.raises(ValueError, match="faults must be some of kill, pause"):
        choose_faults(["kill", "flood"], None)
    assert choose_faults(["pause", "kill", "isolate"], None) == ["kill", "pause", "isolate"]
    assert choose_faults(["pause", "isolate"], "no iptables") == ["pause"]
    with pytest.raises(ValueError, match=r"isolate .* unavailable: no iptables"):
        choose_faults(["isolate"], "no iptables")
