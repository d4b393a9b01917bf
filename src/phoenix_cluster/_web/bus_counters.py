"""The base of the endpoint's collectors: bus handlers that count one node's events.

A subclass names its handlers per event; :meth:`BusCounters.attach` subscribes them so
that each runs only for events whose ``metadata["node"]`` is this node (several nodes
may share the process-wide bus), and :meth:`BusCounters.detach` unsubscribes them.
The helpers build prometheus-client metric families from plain counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily

from .._telemetry.bus import EventName
from .histogram import Buckets
from .view import NodeView

__all__ = ["DURATION_BUCKETS", "BusCounters", "Measurements", "Metadata", "histogram_family",
           "labelled_counter"]

DURATION_BUCKETS = (
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""Histogram bounds in seconds: fine below a millisecond, where Phoenix's calls live."""

Measurements = Mapping[str, float]
Metadata = Mapping[str, object]
EventHandler = Callable[[Measurements, Metadata], None]


class BusCounters:
    """Counts one node's telemetry events while attached."""

    def __init__(self, node: NodeView) -> None:
        self._node = node
        self._handler_prefix = f"phoenix.web.{type(self).__name__}.{node.name}.{id(self):x}"
        self._attached: list[str] = []

    def _handlers(self) -> dict[EventName, EventHandler]:
        raise NotImplementedError

    def attach(self) -> None:
        """Start counting this node's events (idempotent)."""
        if self._attached:
            return
        bus = self._node.telemetry
        for event, fn in self._handlers().items():
            handler_id = f"{self._handler_prefix}.{'.'.join(event)}"
            bus.attach(handler_id, [event], self._only_mine(fn))
            self._attached.append(handler_id)

    def detach(self) -> None:
        """Stop counting (the counts stay readable)."""
        bus = self._node.telemetry
        for handler_id in self._attached:
            bus.detach(handler_id)
        self._attached.clear()

    def _only_mine(self, fn: EventHandler) -> Callable[[EventName, Measurements, Metadata], None]:
        name = self._node.name

        def handler(event: EventName, m: Measurements, md: Metadata) -> None:
            if md.get("node") == name:
                fn(m, md)

        return handler


def labelled_counter(name: str, doc: str, labels: list[str],
                     values: Mapping[tuple[str, ...], float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def histogram_family(name: str, doc: str, labels: list[str],
                     values: Mapping[tuple[str, ...], Buckets]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, buckets in sorted(values.items()):
        family.add_metric(list(key), buckets.cumulative(), sum_value=buckets.sum)
    return family
