"""A circuit breaker as a pure state machine: it is told the time, it never reads a clock.

States (Nygard, *Release It!*; the Polly and resilience4j breakers work the same way)::

    closed --K consecutive failures--> open --cooldown_s passes--> half_open
       ^                                 ^                            |
       |                                 +------ probe fails ---------+
       +------------------------------------------ probe succeeds ----+

While ``open`` every attempt is refused at once, so callers of a dead peer fail fast
(a definite error) instead of each waiting for its own connect timeout. ``half_open``
lets exactly one probe through; everyone else is still refused until it reports.

The caller passes ``now`` from its clock to every method, so a test or the simulator
drives the breaker with a ``ManualClock`` (or plain numbers). Imports only ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phoenix_cluster.errors import ConfigError

__all__ = ["BreakerState", "BreakerStatistics", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerStatistics:
    """A snapshot of a breaker for telemetry and tests.

    Attributes:
        consecutive_failures: failures since the last success.
        times_opened: how often the breaker tripped over its lifetime.
        retry_after_s: seconds until a probe will be allowed (0 unless open).
    """

    name: str
    state: BreakerState
    consecutive_failures: int
    times_opened: int
    retry_after_s: float


class CircuitBreaker:
    """Refuses attempts after repeated failures, then probes once after a cool-down.

    Use it as ``if breaker.allow(now): try ... record_success(now) / record_failure(now)``.
    A caller that got ``allow() == True`` must report exactly one outcome, or call
    :meth:`abandon` if it gave up without learning anything (it was cancelled, say);
    otherwise a half-open breaker would wait for a probe that never reports.

    Args:
        failure_threshold: consecutive failures that open the breaker (K). Low values
            shed load from a dead peer sooner; high ones ride out flaky links.
        cooldown_s: time spent open before one probe is allowed. Long enough for a peer
            to restart, short enough that it is found again soon after.
        name: for logs and ``repr`` (the peer's address, say).
    """

    __slots__ = (
        "_failures",
        "_opened_at",
        "_probe_in_flight",
        "_state",
        "_times_opened",
        "cooldown_s",
        "failure_threshold",
        "name",
    )

    def __init__(
        self, failure_threshold: int = 5, cooldown_s: float = 5.0, *, name: str = ""
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError(
                f"failure_threshold must be >= 1, got {failure_threshold!r}",
                key="failure_threshold",
            )
        if cooldown_s < 0:
            raise ConfigError(f"cooldown_s must be >= 0, got {cooldown_s!r}", key="cooldown_s")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.name = name
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._times_opened = 0

    def state(self, now: float) -> BreakerState:
        """The state at ``now``; an ``open`` breaker whose cool-down passed is ``half_open``."""
        if self._state == "open" and now >= self._opened_at + self.cooldown_s:
            return "half_open"
        return self._state

    def allow(self, now: float) -> bool:
        """Whether an attempt may go ahead now. In ``half_open``, only the first caller may."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "open" or self._probe_in_flight:
            return False
        self._state = "half_open"
        self._probe_in_flight = True
        return True

    def record_success(self, now: float) -> None:
        """An attempt worked: close the breaker and forget past failures."""
        del now  # part of the uniform signature; success does not depend on time
        self._state = "closed"
        self._failures = 0
        self._probe_in_flight = False

    def record_failure(self, now: float) -> None:
        """An attempt failed: count it; trip at the threshold, or re-open after a probe."""
        self._failures += 1
        if self._state == "half_open" or (
            self._state == "closed" and self._failures >= self.failure_threshold
        ):
            self._trip(now)
        self._probe_in_flight = False

    def abandon(self) -> None:
        """The allowed attempt ended without an outcome; let another probe through."""
        self._probe_in_flight = False

    def retry_after(self, now: float) -> float:
        """Seconds until :meth:`allow` may say yes again (0 when it would now)."""
        if self._state == "open":
            return max(0.0, self._opened_at + self.cooldown_s - now)
        return 0.0

    def statistics(self, now: float) -> BreakerStatistics:
        """A frozen snapshot at ``now``."""
        return BreakerStatistics(
            name=self.name,
            state=self.state(now),
            consecutive_failures=self._failures,
            times_opened=self._times_opened,
            retry_after_s=self.retry_after(now),
        )

    def _trip(self, now: float) -> None:
        self._state = "open"
        self._opened_at = now
        self._times_opened += 1

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self.name or '?'} [{self._state}, {self._failures} failures,"
            f" threshold {self.failure_threshold}, cooldown {self.cooldown_s}s]>"
        )
