"""Decisions in the traces: the process's traced nodes, and ``event``/``span`` for anyone.

Cluster decisions (a split-brain verdict, a member declared dead, a migration) are
recorded by whoever takes them through :func:`event` and :func:`span`, which find the
tracer of the node that decided among this process's traced nodes (several nodes may
share a process) and cost one dict test while none traces. A node's tracer also turns
the decision events of its telemetry bus into spans or span events
(:func:`record_decision`). A tracer joins the registry with :func:`register` when it
starts and leaves it with :func:`unregister` when it closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, Protocol

from . import events
from .bus import EventName, TelemetryBus
from .spans import NO_SPAN, Span, clean_attributes

if TYPE_CHECKING:
    from opentelemetry.trace import Span as OtelSpan

__all__ = ["DECISION_LABELS", "DecisionTracer", "event", "record_decision", "register",
           "span", "unregister"]

DECISION_LABELS: Final[dict[EventName, str]] = {
    events.CLUSTER_PARTITION_DETECTED: "phoenix.splitbrain.decision",
    events.CLUSTER_NODE_LEFT: "phoenix.member.dead",
    events.AGENT_MIGRATED: "phoenix.agent.migrated",
}
"""The span (or span event) name each decision event of the bus is recorded as."""


class DecisionTracer(Protocol):
    """What the helpers use of a node's tracer."""

    @property
    def node_name(self) -> str: ...

    @property
    def current_span(self) -> Callable[[], OtelSpan]: ...

    def event(self, name: str, attributes: Mapping[str, object] | None = None) -> None: ...

    def span(self, name: str, attributes: Mapping[str, object] | None = None,
             ) -> contextlib.AbstractContextManager[Span]: ...


_tracers: dict[str, DecisionTracer] = {}
"""The open tracers of this process by node name (for :func:`event` and :func:`span`)."""


def register(tracer: DecisionTracer, bus: TelemetryBus | None, handler_id: str) -> None:
    """Make ``tracer`` the one of its node, recording its bus's decisions."""
    if bus is not None:
        bus.attach(handler_id, DECISION_LABELS,
                   lambda name, measurements, metadata:
                   record_decision(tracer, name, measurements, metadata))
    _tracers[tracer.node_name] = tracer


def unregister(tracer: DecisionTracer, bus: TelemetryBus | None, handler_id: str) -> None:
    """Undo :func:`register` (a newer tracer of the same node name stays)."""
    if bus is not None:
        bus.detach(handler_id)
    if _tracers.get(tracer.node_name) is tracer:
        del _tracers[tracer.node_name]


def record_decision(tracer: DecisionTracer, name: EventName,
                    measurements: Mapping[str, float], metadata: Mapping[str, object]) -> None:
    """Record a decision event of the bus as an event of ``tracer``'s node."""
    if metadata.get("node") != tracer.node_name:
        return  # another node of this process (they may share one bus)
    if name == events.CLUSTER_NODE_LEFT and metadata.get("reason") != "dead":
        return  # a graceful leave is no failover
    label = DECISION_LABELS.get(name, "phoenix." + ".".join(name[1:]))
    prefix = label.rsplit(".", 1)[0] + "."
    attrs: dict[str, object] = {prefix + k: v for k, v in metadata.items() if k != "node"}
    for k, v in measurements.items():  # metadata wins (``reachable`` is both there)
        attrs.setdefault(prefix + k, v)
    attrs["phoenix.node"] = tracer.node_name
    tracer.event(label, attrs)


def _pick(node: str | None) -> DecisionTracer | None:
    if node is not None:
        return _tracers.get(node)
    if len(_tracers) == 1:
        return next(iter(_tracers.values()))
    return None


def event(name: str, attributes: Mapping[str, object] | None = None, *,
          node: str | None = None) -> None:
    """Record a decision (a migration, a failover, a split-brain verdict) in the traces.

    Inside a traced call or message it becomes an event of the current span; elsewhere a
    short span of its own from the tracer of ``node`` (default: the process's only
    traced node). Costs one dict test when no node of this process traces.
    """
    if not _tracers:
        return
    tracer = _pick(node)
    if tracer is None:
        tracer = next(iter(_tracers.values()))
        current = tracer.current_span()
        if current.is_recording():
            current.add_event(name, clean_attributes(attributes))
        return  # several nodes and none named: only a current span can take it
    tracer.event(name, attributes)


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, object] | None = None, *,
         node: str | None = None) -> Iterator[Span]:
    """An INTERNAL span around a block, current inside it (use within one task)::

        with tracing.span("phoenix.migration", {"phoenix.key": key}, node=me) as s:
            s.event("state_sent", {"bytes": n})

    A no-op (yields a :class:`~.spans.Span` that records nothing) when ``node`` does not
    trace.
    """
    tracer = _pick(node) if _tracers else None
    if tracer is None:
        yield NO_SPAN
        return
    with tracer.span(name, attributes) as opened:
        yield opened
