"""Metrics of the data layers: registry, pub/sub and replication, from their events.

Counted on the node that emits each event (``metadata["node"]``); see
``docs/monitoring.md`` for the meaning of each metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, Metric

from .._telemetry import events
from .._telemetry.bus import EventName
from .bus_counters import (
    DURATION_BUCKETS,
    BusCounters,
    EventHandler,
    Measurements,
    Metadata,
    histogram_family,
    labelled_counter,
)
from .histogram import Buckets
from .view import NodeView

__all__ = ["DataMetrics"]


class DataMetrics(BusCounters):
    """Registry lookups and registrations, pub/sub traffic, replication commits and
    partition leadership of one node."""

    def __init__(self, node: NodeView) -> None:
        super().__init__(node)
        self.lookups = Buckets(DURATION_BUCKETS)
        self.registrations = Buckets(DURATION_BUCKETS)
        self.conflicts = 0
        self.published = self.delivered = 0.0
        self.dropped: dict[tuple[str, ...], float] = {}
        self.commits = Buckets(DURATION_BUCKETS)
        self.elections = Buckets(DURATION_BUCKETS)
        self.fenced: Counter[tuple[str, ...]] = Counter()

    def _handlers(self) -> dict[EventName, EventHandler]:
        return {
            events.REGISTRY_LOOKUP: lambda m, md: self.lookups.observe(m.get("duration", 0.0)),
            events.REGISTRY_REGISTERED:
                lambda m, md: self.registrations.observe(m.get("duration", 0.0)),
            events.REGISTRY_NAME_CONFLICT: self._on_conflict,
            events.PUBSUB_PUBLISHED: self._on_published,
            events.PUBSUB_DELIVERED: self._on_delivered,
            events.PUBSUB_DROPPED: self._on_dropped,
            events.REPLICATION_COMMITTED:
                lambda m, md: self.commits.observe(m.get("duration", 0.0)),
            events.REPLICATION_EPOCH_CHANGED:
                lambda m, md: self.elections.observe(m.get("duration", 0.0)),
            events.REPLICATION_FENCED: self._on_fenced,
        }

    def _on_conflict(self, m: Measurements, md: Metadata) -> None:
        self.conflicts += 1

    def _on_published(self, m: Measurements, md: Metadata) -> None:
        self.published += 1

    def _on_delivered(self, m: Measurements, md: Metadata) -> None:
        self.delivered += m.get("subscribers", 0.0)

    def _on_dropped(self, m: Measurements, md: Metadata) -> None:
        key = (str(md.get("reason", "")),)
        self.dropped[key] = self.dropped.get(key, 0.0) + m.get("messages", 1.0)

    def _on_fenced(self, m: Measurements, md: Metadata) -> None:
        self.fenced[(str(md.get("reason", "")),)] += 1

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's collector hook."""
        yield histogram_family("phoenix_registry_lookup_duration_seconds", "Time to resolve "
                               "a name through the registry.", [], {(): self.lookups})
        yield histogram_family("phoenix_registry_register_duration_seconds", "Time to "
                               "register a name on a majority of its owners.", [],
                               {(): self.registrations})
        yield CounterMetricFamily("phoenix_registry_name_conflicts_total", "Names this node "
                                  "held that lost a conflict after a partition healed.",
                                  value=self.conflicts)
        yield CounterMetricFamily("phoenix_pubsub_published_total", "Messages published "
                                  "from this node.", value=self.published)
        yield CounterMetricFamily("phoenix_pubsub_delivered_total", "Published messages "
                                  "handed to subscribers on this node (one per subscriber).",
                                  value=self.delivered)
        yield labelled_counter("phoenix_pubsub_dropped_total", "Messages a subscriber "
                               "missed, by reason.", ["reason"], self.dropped)
        yield histogram_family("phoenix_replication_commit_duration_seconds", "Time from a "
                               "state change to its acknowledgement by the replica quorum.",
                               [], {(): self.commits})
        yield histogram_family("phoenix_replication_election_duration_seconds", "Elections "
                               "this node won for a partition (its count: partitions it "
                               "became leader of) and how long each took.", [],
                               {(): self.elections})
        yield labelled_counter("phoenix_replication_leadership_lost_total", "Partitions this "
                               "node stopped leading, by reason.", ["reason"], self.fenced)
