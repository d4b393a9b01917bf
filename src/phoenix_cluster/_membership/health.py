"""Lifeguard local health: how much this node should distrust its own observations.

A node whose event loop stalls, or whose datagrams are not getting out, reads acks late
and would blame healthy peers. Lifeguard (Dadgar et al., 2018, "Local Health Awareness")
keeps a small score that grows on evidence that *we* are the slow one and shrinks on
every probe answered in time; the score scales our own probe interval, probe timeout and
suspicion timeouts, so a sick node probes less and accuses later. memberlist calls this
``awareness``; the deltas here follow it.

Pure: no I/O, no asyncio, no clock (the service measures loop lag and reports it).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HealthStatistics", "LocalHealth"]


@dataclass(frozen=True, slots=True)
class HealthStatistics:
    """Counters of a :class:`LocalHealth` over its whole life."""

    score: int
    multiplier: int
    max_score_seen: int
    lag_events: int
    missed_nacks: int
    refutations: int


class LocalHealth:
    """A health score ``0 .. max_multiplier - 1``; the multiplier is ``score + 1``.

    Args:
        max_multiplier: the most our timers may be stretched (memberlist's default, 8:
            a 1 s probe interval never grows beyond 8 s, so even a very sick node keeps
            probing and can recover).
    """

    __slots__ = (
        "_lag_events",
        "_max_score",
        "_max_seen",
        "_missed_nacks",
        "_refutations",
        "_score",
    )

    def __init__(self, max_multiplier: int = 8) -> None:
        if max_multiplier < 1:
            raise ValueError(f"max_multiplier must be >= 1, got {max_multiplier}")
        self._max_score = max_multiplier - 1
        self._score = 0
        self._max_seen = 0
        self._lag_events = 0
        self._missed_nacks = 0
        self._refutations = 0

    @property
    def score(self) -> int:
        """0 when healthy; grows with evidence that this node is the slow one."""
        return self._score

    @property
    def multiplier(self) -> int:
        """Factor applied to our probe interval, probe timeout and suspicion timeouts."""
        return self._score + 1

    def scale(self, seconds: float) -> float:
        """``seconds`` stretched by the current multiplier."""
        return seconds * (self._score + 1)

    def apply_delta(self, delta: int) -> int:
        """Move the score by ``delta``, clamped to its range; returns the new score."""
        self._score = min(self._max_score, max(0, self._score + delta))
        self._max_seen = max(self._max_seen, self._score)
        return self._score

    def probe_succeeded(self) -> None:
        """A probe was answered in time: trust ourselves a little more."""
        self.apply_delta(-1)

    def probe_failed(self, expected_nacks: int, nacks: int) -> None:
        """A probe got no ack at all.

        Helpers that could not reach the target still answer with a nack; a nack that
        did not come means our own traffic is not getting through, so each missing one
        counts against us. With no helpers to ask, the failure itself counts once.
        """
        if expected_nacks > 0:
            missed = max(0, expected_nacks - nacks)
            self._missed_nacks += missed
            self.apply_delta(missed)
        else:
            self.apply_delta(1)

    def refuted(self) -> None:
        """Others suspected us: they could not hear us in time."""
        self._refutations += 1
        self.apply_delta(1)

    def loop_lag(self, lag_s: float, threshold_s: float) -> bool:
        """Report a measured event-loop lag; counts against us above ``threshold_s``.

        Returns:
            Whether the lag counted.
        """
        if lag_s <= threshold_s:
            return False
        self._lag_events += 1
        self.apply_delta(1)
        return True

    def statistics(self) -> HealthStatistics:
        return HealthStatistics(
            score=self._score,
            multiplier=self._score + 1,
            max_score_seen=self._max_seen,
            lag_events=self._lag_events,
            missed_nacks=self._missed_nacks,
            refutations=self._refutations,
        )

    def __repr__(self) -> str:
        return f"<LocalHealth score={self._score}/{self._max_score} x{self._score + 1}>"
