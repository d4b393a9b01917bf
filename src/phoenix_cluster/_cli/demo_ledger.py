"""What ``phx demo``'s client knows: every acknowledged write, the traffic figures, the
calls of each phase of the story and when each step happened.

The :class:`Ledger` records each write a tally agent acknowledged, with the node (and
that node's incarnation, as seen by the demo) that acknowledged it. At the end the demo
reads every tally and :meth:`Ledger.verify` checks that every acknowledged write is
present, counting separately the writes acknowledged by an incarnation that was killed:
each was committed to a majority of its agent's replicas before the reply, so they must
survive the kill too. Any missing write fails the demo.

A write whose outcome is unknown (a timeout or a broken connection) is not acknowledged;
it may or may not have been applied, so it may explain a count *above* the acknowledged
writes, never one below.
"""

from __future__ import annotations

import itertools
import math
import time
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Ledger", "PhaseCalls", "Timeline", "Traffic", "Verification"]


@dataclass(frozen=True, slots=True)
class Verification:
    """The end-of-run check of every acknowledged write."""

    agents: int
    acknowledged: int
    """Writes acknowledged to the client in the whole run."""
    verified: int
    """Acknowledged writes present in the final counts."""
    lost_with_killed: int
    """Acknowledged writes of killed incarnations missing at the end (must be 0)."""
    agents_on_killed: int
    """Agents that had acknowledged writes on a killed incarnation."""
    unexpected_lost: int
    """Acknowledged writes missing that no killed node explains (must be 0)."""
    unexpected_agents: int
    duplicated: int
    """Counts above acknowledged plus unknown-outcome writes (must be 0)."""
    unknown_outcome: int
    """Writes that timed out or lost their connection: maybe applied, never counted."""
    moved_agents: int
    """Agents that answered from another node at the end than before the restart."""
    moved_writes: int
    """Acknowledged writes of the moved agents that must have moved with them."""
    moved_lost: int

    @property
    def ok(self) -> bool:
        """No acknowledged write lost (killed node included), none counted twice."""
        return self.unexpected_lost == 0 and self.duplicated == 0 and self.lost_with_killed == 0


class Ledger:
    """Acknowledged writes per agent (index ``0..agents-1``) and per acknowledging node."""

    def __init__(self, agents: int) -> None:
        self.agents = agents
        self.acked = array("q", bytes(8 * agents))
        self.unknown = array("q", bytes(8 * agents))
        self.last_host: list[str | None] = [None] * agents
        self._generation: dict[str, int] = {}
        self._by_incarnation: dict[tuple[str, int], array[int]] = {}
        self._killed: set[tuple[str, int]] = set()

    @property
    def total_acked(self) -> int:
        return sum(self.acked)

    def ack(self, agent: int, host: str) -> None:
        """``host`` acknowledged one write to ``agent``."""
        self.acked[agent] += 1
        self.last_host[agent] = host
        key = (host, self._generation.get(host, 0))
        counts = self._by_incarnation.get(key)
        if counts is None:
            counts = self._by_incarnation[key] = array("q", bytes(8 * self.agents))
        counts[agent] += 1

    def unknown_outcome(self, agent: int) -> None:
        """A write to ``agent`` may or may not have happened (timeout, broken link)."""
        self.unknown[agent] += 1

    def killed(self, host: str) -> None:
        """``host``'s current incarnation was killed (its writes are counted apart)."""
        self._killed.add((host, self._generation.get(host, 0)))

    def restarted(self, host: str) -> None:
        """``host`` runs again as a new incarnation; later acks are its own."""
        self._generation[host] = self._generation.get(host, 0) + 1

    def hosted_by(self, host: str) -> list[int]:
        """The agents whose last acknowledged write came from ``host``."""
        return [i for i, h in enumerate(self.last_host) if h == host]

    def hosts_per_node(self) -> dict[str, int]:
        """How many agents each node acknowledged last (the client's view of placement)."""
        counts: dict[str, int] = {}
        for h in self.last_host:
            if h is not None:
                counts[h] = counts.get(h, 0) + 1
        return counts

    def verify(self, found: Sequence[int], final_hosts: Sequence[str],
               hosts_before: Sequence[str | None]) -> Verification:
        """Compare the final counts with the acknowledged writes.

        Args:
            found: each agent's count as read at the end.
            final_hosts: the node each agent answered the final read from.
            hosts_before: each agent's host before the rebalancing (``None``: unknown);
                agents now elsewhere are the ones rebalancing moved.
        """
        if not len(found) == len(final_hosts) == len(hosts_before) == self.agents:
            raise ValueError("one count, final host and earlier host per agent is needed")
        lost_counts = [self._by_incarnation[k] for k in sorted(self._killed)
                       if k in self._by_incarnation]
        verified = lost_killed = agents_on_killed = 0
        unexpected = unexpected_agents = duplicated = 0
        moved = moved_writes = moved_lost = 0
        for i in range(self.agents):
            acked, count = self.acked[i], found[i]
            on_killed = sum(c[i] for c in lost_counts)
            safe = acked - on_killed
            missing_safe = max(0, safe - count)
            verified += safe - missing_safe
            unexpected += missing_safe
            unexpected_agents += missing_safe > 0
            if on_killed:
                agents_on_killed += 1
                lost_here = max(0, acked - count) - missing_safe
                lost_killed += lost_here
                verified += on_killed - lost_here
            duplicated += max(0, count - acked - self.unknown[i])
            before = hosts_before[i]
            if before is not None and before != final_hosts[i]:
                moved += 1
                moved_writes += safe
                moved_lost += missing_safe
        return Verification(
            agents=self.agents, acknowledged=self.total_acked, verified=verified,
            lost_with_killed=lost_killed, agents_on_killed=agents_on_killed,
            unexpected_lost=unexpected, unexpected_agents=unexpected_agents,
            duplicated=duplicated, unknown_outcome=sum(self.unknown),
            moved_agents=moved, moved_writes=moved_writes, moved_lost=moved_lost,
        )


class Traffic:
    """Calls made by the workload: counts, a one-second window and whole-run latency."""

    def __init__(self, window_ticks: int) -> None:
        from .demo_single_stats import LatencyHistogram

        self.ok = 0
        self.failed: dict[str, int] = {}
        self.tick_samples: array[int] = array("q")
        self.window: deque[array[int]] = deque(maxlen=window_ticks)
        self.marks: deque[tuple[float, int]] = deque(maxlen=window_ticks + 1)
        self.whole_run = LatencyHistogram()

    @property
    def calls(self) -> int:
        return self.ok + sum(self.failed.values())

    def success(self, latency_ns: int) -> None:
        self.ok += 1
        self.tick_samples.append(latency_ns)

    def failure(self, reason: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1

    def tick(self, now: float) -> None:
        """Close the current tick (the window slides by one)."""
        samples, self.tick_samples = self.tick_samples, array("q")
        self.window.append(samples)
        self.whole_run.add_all(samples)
        self.marks.append((now, self.ok))

    def rate(self) -> float:
        """Acknowledged calls per second over the window."""
        if len(self.marks) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / max(t1 - t0, 1e-9)

    def window_percentiles_ms(self) -> tuple[float, float]:
        """p50 and p95 of the calls acknowledged in the window, in milliseconds."""
        return _percentiles_ms(sorted(itertools.chain.from_iterable(self.window)))

    def run_percentiles_ms(self) -> tuple[float, float]:
        """p50 and p95 over the whole run, in milliseconds."""
        return (self.whole_run.percentile_us(0.5) / 1e3, self.whole_run.percentile_us(0.95) / 1e3)


def _percentiles_ms(samples: Iterable[int]) -> tuple[float, float]:
    ordered = list(samples)
    if not ordered:
        return math.nan, math.nan
    n = len(ordered)
    return ordered[n // 2] / 1e6, ordered[min(n - 1, int(n * 0.95))] / 1e6


@dataclass
class PhaseCalls:
    """The writes made during one phase of the story."""

    calls: int = 0
    failed: int = 0
    """Calls that raised: the failures a caller sees."""
    retried: int = 0
    """Calls the client library retried after a definite failure to reach the owner
    (most then answered; those that did not are in ``failed`` too)."""
    first_error: str = ""


@dataclass
class Timeline:
    """When each step happened (``time.monotonic()``), ``None`` until it did."""

    started: float = field(default_factory=time.monotonic)
    killed: float | None = None
    suspect: float | None = None
    dead: float | None = None
    recovered: float | None = None
    restarted: float | None = None
    rebalanced: float | None = None
    moved_back: int = 0
    failed_over: int = 0
    home_of_victim: int = 0
    """Agents the killed node hosted (their home) before the kill."""
    activated_s: float = 0.0
    interrupted: bool = False
    story_told: bool = False
    problems: list[str] = field(default_factory=list)

    def since_kill(self, t: float | None) -> float | None:
        return None if t is None or self.killed is None else t - self.killed
