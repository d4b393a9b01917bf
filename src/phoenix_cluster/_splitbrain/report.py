"""How the split-brain resolver is reported: its decisions, and its statistics.

Every decision, ``keep`` or ``down_self``, is logged as ONE line at WARNING naming the
decision and all it was based on (strategy, reachable, unreachable, broken links,
tie-break, lease holder, the members downed, how long the view was stable, the reason),
and emitted as ``CLUSTER_PARTITION_DETECTED`` with the same facts as metadata, so an
operator reading either can tell why a side survived. :class:`SplitBrainStatistics` is
the resolver's state at a point in time (telemetry, ``phx status`` and tests read it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._telemetry.events import CLUSTER_PARTITION_DETECTED

from .view import Decision, PartitionView, format_names

__all__ = ["ResolverState", "SplitBrainStatistics", "report_decision"]

_log = logging.getLogger("phoenix_cluster.splitbrain")

ResolverState = Literal["idle", "pending", "deciding", "downed", "closed"]


@dataclass(frozen=True, slots=True)
class SplitBrainStatistics:
    """A point-in-time view of the resolver (telemetry, ``phx status`` and tests read it)."""

    strategy: str
    state: ResolverState
    reachable: int
    unreachable: int
    broken_links: int
    stable_for_s: float
    stable_after_s: float
    timer_resets: int
    pauses_detected: int
    decisions: int
    removed_members: int
    last_decision: Decision | None


def report_decision(bus: TelemetryBus, node: str, strategy: str, decision: Decision,
                    view: PartitionView, stable_for: float) -> None:
    """Log ``decision``, taken at ``node`` by ``strategy`` on ``view``, and emit it."""
    links = sorted(f"{a}<->{b}" for a, b in view.broken_links)
    _log.warning(
        "split-brain decision at %s: %s by %s; reachable=%s unreachable=%s "
        "broken_links=[%s] tie_break=%s lease_holder=%s down=%s stable_for=%.1fs; "
        "reason: %s",
        node,
        decision.action.upper(),
        strategy,
        format_names(view.reachable),
        format_names(view.unreachable),
        ", ".join(links),
        decision.tie_break or "none",
        view.lease_holder,
        format_names(decision.down),
        stable_for,
        decision.reason,
    )
    bus.execute(
        CLUSTER_PARTITION_DETECTED,
        {
            "reachable": float(len(view.reachable)),
            "unreachable": float(len(view.unreachable)),
            "stable_for_s": stable_for,
        },
        {
            "node": node,
            "strategy": strategy,
            "decision": decision.action,
            "reachable": tuple(sorted(view.reachable)),
            "unreachable": tuple(sorted(view.unreachable)),
            "broken_links": tuple(links),
            "down": tuple(sorted(decision.down)),
            "tie_break": decision.tie_break,
            "lease_holder": view.lease_holder,
            "reason": decision.reason,
        },
    )
