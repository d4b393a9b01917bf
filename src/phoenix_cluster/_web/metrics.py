"""Prometheus metrics of one node: counters fed by telemetry events, gauges read at scrape.

Every node with an HTTP endpoint gets its own :class:`CollectorRegistry` (several nodes
may share a process in tests; the global registry would mix them). Events reach this
module only through the telemetry bus, and only while it is attached, i.e. while the
node serves HTTP: a node without ``http`` pays nothing. Handlers ignore events of other
nodes on the same bus (``metadata["node"]``).

Gauges (members by status, agents, mailbox depth, ring share, loop lag) are read from
the node when Prometheus scrapes, which costs two passes over the node's activations.
The full list with types, labels and meaning is in ``docs/monitoring.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .._agents.flow import DROP_REASONS
from .._telemetry import events
from .._telemetry.bus import EventName
from .._version import __version__
from .bus_counters import (
    DURATION_BUCKETS,
    BusCounters,
    EventHandler,
    Measurements,
    Metadata,
    histogram_family,
    labelled_counter,
)
from .data_metrics import DataMetrics
from .health import readiness
from .histogram import Buckets
from .view import NodeView, StatisticsView

__all__ = ["WINDOW_CAP", "NodeMetrics"]

WINDOW_CAP = 50_000
"""Call durations kept per dashboard sample (one second); past it the second's quantiles
come from its first ``WINDOW_CAP`` calls."""

_STATUSES = ("alive", "suspect", "dead", "left")
_ROLES = ("member", "client")
_MEMBERSHIP_COUNTERS = (
    ("phoenix_membership_joins_total", "joined",
     "Members that joined (or came back as a new incarnation), as this node learned."),
    ("phoenix_membership_suspicions_total", "suspected",
     "Suspicions of members that this node learned of."),
    ("phoenix_membership_deaths_total", "dead", "Members declared dead, as this node learned."),
    ("phoenix_membership_leaves_total", "left", "Members that left the cluster gracefully."),
)


def _s(value: object) -> str:
    return "" if value is None else str(value)


class NodeMetrics(BusCounters):
    """The metrics of ``node``; :meth:`attach` to start counting, :meth:`exposition` to read.

    The data layers' metrics (registry, pub/sub, replication) are a :class:`DataMetrics`
    in the same registry, attached and detached with these.

    Args:
        node: the node to read and whose events to count.
        loop_lag: returns the event-loop lag to report (seconds).
    """

    def __init__(self, node: NodeView, loop_lag: Callable[[], float]) -> None:
        super().__init__(node)
        self._loop_lag = loop_lag
        # Counters and histograms, keyed by their label values.
        self.messages: Counter[tuple[str, ...]] = Counter()
        self.activations: Counter[str] = Counter()
        self.start_durations: dict[str, Buckets] = {}
        self.call_durations: dict[str, Buckets] = {}
        self.deactivations: Counter[str] = Counter()
        self.overloaded: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.migrations = 0
        self.sent = self.received = self.sent_bytes = self.received_bytes = 0
        self.switches: Counter[tuple[str, ...]] = Counter()
        self.membership: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.call_window: list[float] = []
        """Call durations since the dashboard sampler last took them (at most
        ``WINDOW_CAP``; the sampler swaps in a new list each second)."""
        self.data = DataMetrics(node)
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.registry.register(self.data)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    # ------------------------------------------------------------------ events

    def _handlers(self) -> dict[EventName, EventHandler]:
        return {
            events.AGENT_CALL_STOP: self._on_call_stop,
            events.AGENT_CALL_EXCEPTION: self._on_call_exception,
            events.AGENT_STARTED: self._on_started,
            events.AGENT_DEACTIVATED: self._on_deactivated,
            events.AGENT_OVERLOADED: self._on_overloaded,
            events.MESSAGE_DROPPED: self._on_dropped,
            events.AGENT_MIGRATED: self._on_migrated,
            events.TRANSPORT_MESSAGE_SENT: self._on_sent,
            events.TRANSPORT_MESSAGE_RECEIVED: self._on_received,
            events.TRANSPORT_PROTOCOL_SWITCHED: self._on_switched,
            events.CLUSTER_NODE_JOINED: self._on_membership,
            events.CLUSTER_NODE_SUSPECTED: self._on_membership,
            events.CLUSTER_NODE_LEFT: self._on_membership,
            events.CLUSTER_PARTITION_DETECTED: self._on_decision,
        }

    def attach(self) -> None:
        super().attach()
        self.data.attach()

    def detach(self) -> None:
        super().detach()
        self.data.detach()

    def _on_call_stop(self, m: Measurements, md: Metadata) -> None:
        # The one handler that runs per message: kept to dict operations and a bisect.
        kind = str(md.get("kind"))
        duration = m.get("duration", 0.0)
        self.messages[kind, "ok"] += 1
        buckets = self.call_durations.get(kind)
        if buckets is None:
            buckets = self.call_durations[kind] = Buckets(DURATION_BUCKETS)
        buckets.observe(duration)
        window = self.call_window
        if len(window) < WINDOW_CAP:
            window.append(duration)

    def _on_call_exception(self, m: Measurements, md: Metadata) -> None:
        self.messages[_s(md.get("kind")), "error"] += 1

    def _on_started(self, m: Measurements, md: Metadata) -> None:
        kind = _s(md.get("kind"))
        self.activations[kind] += 1
        buckets = self.start_durations.get(kind)
        if buckets is None:
            buckets = self.start_durations[kind] = Buckets(DURATION_BUCKETS)
        buckets.observe(m.get("duration", 0.0))

    def _on_deactivated(self, m: Measurements, md: Metadata) -> None:
        self.deactivations[_s(md.get("reason"))] += 1

    def _on_overloaded(self, m: Measurements, md: Metadata) -> None:
        self.overloaded[_s(md.get("kind"))] += 1

    def _on_dropped(self, m: Measurements, md: Metadata) -> None:
        self.dropped[_s(md.get("reason"))] += int(m.get("messages", 1.0))

    def _on_migrated(self, m: Measurements, md: Metadata) -> None:
        self.migrations += 1

    def _on_sent(self, m: Measurements, md: Metadata) -> None:
        self.sent += 1
        self.sent_bytes += int(m.get("bytes", 0))

    def _on_received(self, m: Measurements, md: Metadata) -> None:
        self.received += 1
        self.received_bytes += int(m.get("bytes", 0))

    def _on_switched(self, m: Measurements, md: Metadata) -> None:
        self.switches[_s(md.get("from")), _s(md.get("to"))] += 1

    def _on_membership(self, m: Measurements, md: Metadata) -> None:
        # node_left says dead or left in "reason"; the others in their own name.
        self.membership[_s(md.get("reason")) or _s(md.get("status"))] += 1

    def _on_decision(self, m: Measurements, md: Metadata) -> None:
        self.decisions[_s(md.get("decision"))] += 1

    # ------------------------------------------------------------------ scrape

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """Every metric of this node as ``(body, content type)``, in the format the
        ``Accept`` header asks for (Prometheus text by default, or OpenMetrics)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's collector hook: every Phoenix metric, read now."""
        stats = self._node.statistics()  # one pass over the activations per scrape
        yield from self._node_metrics(stats)
        yield from self._agent_metrics(stats)
        yield from self._transport_metrics()
        yield from self._cluster_metrics()

    def _node_metrics(self, stats: StatisticsView) -> Iterator[Metric]:
        node = self._node
        settings = node.settings
        yield InfoMetricFamily("phoenix_node", "This node: name, role, Phoenix version.", value={
            "name": node.name, "role": settings.role, "version": __version__,
            "address": node.address or ""})
        yield GaugeMetricFamily("phoenix_node_ready", "1 while the node is ready for traffic "
                                "(joined, converged, not downed), else 0.",
                                value=1.0 if readiness(node).ready else 0.0)
        yield GaugeMetricFamily("phoenix_event_loop_lag_seconds", "Largest delay of the "
                                "node's event loop seen in the last 5 seconds.",
                                value=self._loop_lag())
        yield CounterMetricFamily("phoenix_supervisor_restarts_total", "Service restarts "
                                  "by the node's root supervisor.",
                                  value=stats.restarts)

    def _agent_metrics(self, stats: StatisticsView) -> Iterator[Metric]:
        s = stats.agents
        yield GaugeMetricFamily("phoenix_agents_active", "Agents activated on this node "
                                "(in memory, with an instance).", value=s.active_agents)
        yield GaugeMetricFamily("phoenix_agents_passive", "Passivated agents on this node "
                                "(state kept, no instance, no task).", value=s.passive_agents)
        yield GaugeMetricFamily("phoenix_agents_busy", "Agents running or holding queued "
                                "messages now.", value=s.busy_agents)
        yield GaugeMetricFamily("phoenix_mailbox_depth", "Messages waiting in this node's "
                                "agent mailboxes.", value=s.queued_messages)
        yield labelled_counter("phoenix_agent_activations_total", "Agent activations "
                               "(first message, or restore after passivation).", ["kind"],
                               {(k,): n for k, n in self.activations.items()})
        yield labelled_counter("phoenix_agent_deactivations_total", "Agents passivated or "
                               "stopped, by reason.", ["reason"],
                               {(k,): n for k, n in self.deactivations.items()})
        yield labelled_counter("phoenix_agent_messages_total", "Messages (calls and casts) "
                               "handled by agents, by kind and outcome (ok, error).",
                               ["kind", "outcome"], self.messages)
        yield labelled_counter("phoenix_agent_overloaded_total", "Messages refused because "
                               "a mailbox was full.", ["kind"],
                               {(k,): n for k, n in self.overloaded.items()})
        # Every reason is exposed from the start (at 0), so alerts can watch it.
        yield labelled_counter("phoenix_messages_dropped_total", "Messages accepted and "
                               "then lost with no sender to tell, by reason; 0 unless "
                               "something went wrong.", ["reason"],
                               {(r,): float(self.dropped[r]) for r in DROP_REASONS})
        yield CounterMetricFamily("phoenix_agent_migrations_total", "Agents handed to this "
                                  "node by a migration.", value=self.migrations)
        yield histogram_family("phoenix_agent_call_duration_seconds", "Time an agent's handler "
                               "took per message.", ["kind"],
                               {(k,): b for k, b in self.call_durations.items()})
        yield histogram_family("phoenix_agent_start_duration_seconds", "Time from activation "
                               "start to the agent being ready (restore and on_activate).",
                               ["kind"],
                               {(k,): b for k, b in self.start_durations.items()})

    def _transport_metrics(self) -> Iterator[Metric]:
        yield CounterMetricFamily("phoenix_transport_messages_sent_total",
                                  "Frames sent to peers.", value=self.sent)
        yield CounterMetricFamily("phoenix_transport_messages_received_total",
                                  "Frames received from peers.", value=self.received)
        yield CounterMetricFamily("phoenix_transport_sent_bytes_total",
                                  "Bytes sent to peers, frame headers included.",
                                  value=self.sent_bytes)
        yield CounterMetricFamily("phoenix_transport_received_bytes_total",
                                  "Bytes received from peers, frame headers included.",
                                  value=self.received_bytes)
        yield labelled_counter("phoenix_transport_protocol_switches_total", "Per-peer "
                               "switches between transports (e.g. tcp to http2).",
                               ["from", "to"], self.switches)

    def _cluster_metrics(self) -> Iterator[Metric]:
        node = self._node
        seen: Counter[tuple[str, str]] = Counter((m.status, m.role) for m in node.members())
        nodes = GaugeMetricFamily("phoenix_cluster_nodes", "Members this node sees, by "
                                  "status and role.", labels=["status", "role"])
        for status in _STATUSES:
            for role in _ROLES:
                nodes.add_metric([status, role], seen.get((status, role), 0))
        yield nodes
        ring = node.ring
        yield GaugeMetricFamily("phoenix_ring_share", "Fraction of the hash ring this node "
                                "owns (0 when it hosts no agents).",
                                value=ring.share(node.name) if ring is not None else 0.0)
        for metric, event_kind, help_text in _MEMBERSHIP_COUNTERS:
            yield CounterMetricFamily(metric, help_text,
                                      value=self.membership.get(event_kind, 0))
        yield labelled_counter("phoenix_splitbrain_decisions_total", "Split-brain "
                               "decisions this node took, by action (keep, down_self).",
                               ["action"], {(a,): n for a, n in self.decisions.items()})
