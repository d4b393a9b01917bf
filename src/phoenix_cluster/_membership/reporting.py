"""What the membership service reports: member events as log lines and telemetry, the
event loop's lag (which also feeds Lifeguard's local health), and its counters.

``service.py`` calls these as the protocol's actions arrive and as its timers fire; the
protocol's rules are in ``swim.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus

from .health import HealthStatistics
from .swim import MemberEvent, SwimSettings, SwimStatistics

if TYPE_CHECKING:
    from phoenix_cluster._foundation.env import Clock, TimerHandle

    from .health import LocalHealth

__all__ = ["LoopLagProbe", "MembershipStatistics", "report_member_event"]

_log = logging.getLogger("phoenix_cluster.membership")


@dataclass(frozen=True, slots=True)
class MembershipStatistics:
    """Counters of a :class:`MembershipService` over its whole life.

    ``dropped_unauthenticated`` counts datagrams whose tag did not match (another
    cluster, a wrong secret, tampering); ``dropped_malformed`` authentic datagrams that
    did not decode (a peer speaking a newer protocol, or a bug).
    """

    version: int
    swim: SwimStatistics
    health: HealthStatistics
    datagrams_sent: int
    bytes_sent: int
    datagrams_received: int
    bytes_received: int
    dropped_unauthenticated: int
    dropped_malformed: int
    send_errors: int
    syncs_ok: int
    syncs_failed: int
    syncs_served: int
    loop_lag_max_s: float
    loop_lag_last_s: float


def report_member_event(node: str, event: MemberEvent, bus: TelemetryBus,
                        live_count: Callable[[], int],
                        on_declared_dead: Callable[[int, str, bool], object] | None) -> None:
    """Log ``event`` seen by ``node`` and publish it on ``bus`` (``node_joined``,
    ``node_suspected``, ``node_left``); this node's own death goes to
    ``on_declared_dead`` instead."""
    member = event.member
    if event.kind == "declared_dead":
        how = ("downed by a split-brain decision" if event.downed
               else "by failure detection only, no split-brain decision: it refutes")
        _log.warning("membership %s: the cluster declared this node dead (incarnation %d, "
                     "reported by %s), %s", node, member.incarnation,
                     event.by or "a peer", how)
        if on_declared_dead is not None:
            on_declared_dead(member.incarnation, event.by, event.downed)
        return
    if member.name == node:
        return
    if event.kind == "joined":
        name = events.CLUSTER_NODE_JOINED
        _log.info("membership %s: %s joined (%s, incarnation %d)", node, member.name,
                  member.address, member.incarnation)
    elif event.kind == "suspected":
        name = events.CLUSTER_NODE_SUSPECTED
        _log.info("membership %s: %s is suspected by %s", node, member.name,
                  event.by or "a peer")
    elif event.kind in ("dead", "left"):
        name = events.CLUSTER_NODE_LEFT
        _log.info("membership %s: %s is %s", node, member.name, event.kind)
    else:
        return
    if bus.has_handlers(name):
        bus.execute(name, {"members": float(live_count())}, {
            "node": node, "peer": member.name, "address": member.address,
            "incarnation": member.incarnation, "role": member.role,
            "status": member.status, "reason": event.kind, "by": event.by,
        })


class LoopLagProbe:
    """How late the event loop runs a timer: every ``lag_check_interval_s`` it compares
    when the timer fired with when it was due, and feeds the lag to Lifeguard's local
    health (``health.py``), which slows this node's failure detection while it lags."""

    __slots__ = ("_clock", "_expected", "_health", "_name", "_running", "_settings",
                 "_timer", "last_s", "max_s")

    def __init__(self, name: str, clock: Clock, health: LocalHealth, settings: SwimSettings,
                 *, running: Callable[[], bool]) -> None:
        self._name = name
        self._clock = clock
        self._health = health
        self._settings = settings
        self._running = running
        self._timer: TimerHandle | None = None
        self._expected = 0.0
        self.last_s = 0.0
        """The last lag measured."""
        self.max_s = 0.0
        """The largest lag measured."""

    def start(self, now: float) -> None:
        """Arm the first check, one interval from ``now``."""
        self._expected = now + self._settings.lag_check_interval_s
        self._timer = self._clock.call_later(self._settings.lag_check_interval_s,
                                             self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None

    def _check(self) -> None:
        if not self._running():
            return
        now = self._clock.monotonic()
        lag = max(0.0, now - self._expected)
        self.last_s = lag
        self.max_s = max(self.max_s, lag)
        if self._health.loop_lag(lag, self._settings.lag_threshold_s):
            _log.info("membership %s: event loop lagged %.3fs; local health now x%d",
                      self._name, lag, self._health.multiplier)
        interval = self._settings.lag_check_interval_s
        self._expected = now + interval
        self._timer = self._clock.call_later(interval, self._check)
