"""What the HTTP endpoint reads from a node, as typed protocols.

The endpoint sits below the node in the layer plan (the node starts it), so it never
imports :class:`~phoenix_cluster.Node`: it names the few read-only things it looks at
and the node satisfies them structurally. Nothing here can change a node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from .._agents.runtime import KindRuntime, RuntimeStatistics
from .._foundation.env import Env
from .._foundation.settings import Settings
from .._membership.snapshot import Member
from .._ring.ring import HashRing
from .._telemetry.bus import TelemetryBus

__all__ = ["DecisionView", "NodeView", "StatisticsView", "StatusView"]


class DecisionView(Protocol):
    """A split-brain decision: ``keep`` or ``down_self``, and why."""

    @property
    def action(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def down(self) -> Sequence[str]: ...
    @property
    def tie_break(self) -> str: ...


class StatusView(Protocol):
    """One node's own view of the cluster (what ``$node.status`` answers)."""

    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def members(self) -> Sequence[Member]: ...
    @property
    def agents(self) -> int: ...
    @property
    def split_brain(self) -> str: ...
    @property
    def last_decision(self) -> DecisionView | None: ...


class StatisticsView(Protocol):
    """Counters of a node's agent runtime and supervisor."""

    @property
    def agents(self) -> RuntimeStatistics: ...
    @property
    def restarts(self) -> int: ...


class NodeView(Protocol):
    """The read-only face of a node that the endpoint, metrics and dashboard use."""

    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def telemetry(self) -> TelemetryBus: ...
    @property
    def env(self) -> Env: ...
    @property
    def stop_reason(self) -> str: ...
    @property
    def ring(self) -> HashRing | None: ...

    def members(self) -> list[Member]: ...
    def status(self) -> StatusView: ...
    def statistics(self) -> StatisticsView: ...
    def kinds(self) -> Mapping[str, KindRuntime]: ...
    async def peer_status(self, address: str, timeout_s: float) -> StatusView: ...
