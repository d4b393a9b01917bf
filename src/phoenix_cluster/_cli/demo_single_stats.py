"""What ``phx demo --single`` runs with and records: its configuration, the clients' counts
and latencies, and the outcome of the end-of-run checks.

:class:`SingleDemoStats` is written by the clients (in the event loop, no locks) and read
by the view: totals for the summary, a sliding window of one second for the live rates and
latencies, and a :class:`LatencyHistogram` of the whole run.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["LatencyHistogram", "Outcome", "SingleDemoConfig", "SingleDemoStats"]

WINDOW_TICKS = 4  # rates and latencies are over the last second


@dataclass(frozen=True, slots=True)
class SingleDemoConfig:
    """How the run goes (``phx demo --single`` options)."""

    duration_s: float | None
    accounts: int
    counters: int
    clients: int
    rate: int
    seed: int
    live: bool


class LatencyHistogram:
    """Latencies in log buckets (about 5 % wide): percentiles of a long run in fixed memory."""

    __slots__ = ("buckets", "count")
    _SCALE = 20.0

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0

    def add_all(self, samples_ns: Iterable[int]) -> None:
        buckets = self.buckets
        scale = self._SCALE
        for ns in samples_ns:
            b = int(math.log(ns if ns > 1 else 1) * scale)
            buckets[b] = buckets.get(b, 0) + 1
            self.count += 1

    def percentile_us(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return math.exp((b + 0.5) / self._SCALE) / 1_000.0
        return 0.0  # pragma: no cover - unreachable


class SingleDemoStats:
    """What the clients did, and the recent window the live view shows."""

    def __init__(self) -> None:
        self.calls = 0
        self.casts = 0
        self.transfers = 0
        self.injected_rolled_back = 0
        self.overdrafts_refused = 0
        self.other_errors = 0
        self.overloaded = 0
        self.timeouts = 0
        self.increments_accepted = 0
        self.tick_samples: array[int] = array("q")
        self.window: deque[array[int]] = deque(maxlen=WINDOW_TICKS)
        self.rates: deque[tuple[float, int, int]] = deque(maxlen=WINDOW_TICKS + 1)
        self.whole_run = LatencyHistogram()

    @property
    def rolled_back(self) -> int:
        return self.injected_rolled_back + self.overdrafts_refused + self.other_errors

    def tick(self, now: float) -> None:
        samples = self.tick_samples
        self.tick_samples = array("q")
        self.window.append(samples)
        self.whole_run.add_all(samples)
        self.rates.append((now, self.calls, self.casts))

    def rate(self) -> tuple[float, float]:
        """Calls/s and casts/s over the window."""
        if len(self.rates) < 2:
            return 0.0, 0.0
        (t0, calls0, casts0), (t1, calls1, casts1) = self.rates[0], self.rates[-1]
        dt = max(t1 - t0, 1e-9)
        return (calls1 - calls0) / dt, (casts1 - casts0) / dt

    def window_percentiles_us(self) -> tuple[float, float]:
        samples = sorted(itertools.chain.from_iterable(self.window))
        if not samples:
            return 0.0, 0.0
        n = len(samples)
        return samples[n // 2] / 1_000.0, samples[min(n - 1, int(n * 0.95))] / 1_000.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end-of-run checks: the money adds up, the counters hold what was accepted."""

    money_expected: int
    money_found: int
    increments_accepted: int
    increments_counted: int

    @property
    def money_ok(self) -> bool:
        return self.money_expected == self.money_found

    @property
    def counters_ok(self) -> bool:
        return self.increments_accepted == self.increments_counted
