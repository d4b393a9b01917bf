"""The endpoint's clockwork: event-loop lag, one dashboard sample a second, cluster pushes.

One task on the node's clock wakes every ``LAG_TICK_S``; how late it wakes is the event
loop's lag (a blocked loop delays every timer). Once a second it turns the counters into
rates and the call durations of that second into p50/p95/p99, keeps the sample for
dashboards that connect later and publishes it; every ``CLUSTER_EVERY_S``, while a
dashboard is connected, it also publishes the cluster view (members and their agents).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from .api import cluster_view
from .feed import Feed
from .histogram import quantile
from .metrics import NodeMetrics
from .view import NodeView

__all__ = ["CLUSTER_EVERY_S", "HISTORY", "LAG_TICK_S", "SAMPLE_EVERY_S", "Sampler"]

LAG_TICK_S = 0.1
"""How often the loop-lag probe wakes (ten cheap wake-ups a second)."""
LAG_WINDOW_S = 5.0
"""The loop-lag gauge reports the largest lag seen over this window."""
SAMPLE_EVERY_S = 1.0
CLUSTER_EVERY_S = 2.0
HISTORY = 300
"""Samples kept (five minutes at one a second) for a dashboard that connects later."""

_log = logging.getLogger("phoenix_cluster.web")


class Sampler:
    """Measures loop lag and produces the dashboard's samples for one node."""

    def __init__(self, node: NodeView, metrics: NodeMetrics, feed: Feed) -> None:
        self._node = node
        self._metrics = metrics
        self._feed = feed
        self._lags: deque[float] = deque(maxlen=round(LAG_WINDOW_S / LAG_TICK_S))
        self._second_lag = 0.0
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._task: asyncio.Task[None] | None = None
        self._cluster_task: asyncio.Task[None] | None = None
        self._last: tuple[float, int, int, int] | None = None

    def loop_lag(self) -> float:
        """The largest event-loop lag of the last ``LAG_WINDOW_S`` seconds."""
        return max(self._lags, default=0.0)

    def start(self) -> None:
        # The first sample's rates count from here.
        self._last = (self._node.env.clock.monotonic(),
                      self._node.statistics().agents.messages_handled,
                      self._metrics.sent, self._metrics.received)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"phoenix web sampler {self._node.name}")

    async def aclose(self) -> None:
        for task in (self._task, self._cluster_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._cluster_task = None

    async def _run(self) -> None:
        clock = self._node.env.clock
        next_sample = clock.monotonic() + SAMPLE_EVERY_S
        next_cluster = clock.monotonic()
        while True:
            before = clock.monotonic()
            await clock.sleep(LAG_TICK_S)
            now = clock.monotonic()
            lag = max(0.0, now - before - LAG_TICK_S)
            self._lags.append(lag)
            self._second_lag = max(self._second_lag, lag)
            if now < next_sample:
                continue
            next_sample = now + SAMPLE_EVERY_S
            try:
                self.sample(now)
            except Exception:  # a bug here must not stop lag measurement
                _log.exception("node %s: dashboard sample failed", self._node.name)
            if self._feed.streams and now >= next_cluster and (
                    self._cluster_task is None or self._cluster_task.done()):
                next_cluster = now + CLUSTER_EVERY_S
                # Asking the members takes a round trip: off this task, so the lag probe
                # keeps measuring the loop rather than the network.
                self._cluster_task = asyncio.get_running_loop().create_task(
                    self._push_cluster())

    def sample(self, now: float) -> dict[str, Any]:
        """Take, keep and publish one sample; rates are per second since the last one."""
        node = self._node
        agents = node.statistics().agents
        metrics = self._metrics
        window, metrics.call_window = metrics.call_window, []
        window.sort()
        sent, received = metrics.sent, metrics.received
        last = self._last
        self._last = (now, agents.messages_handled, sent, received)
        dt = now - last[0] if last is not None else 0.0

        def rate(i: int, value: int) -> float:
            return 0.0 if last is None or dt <= 0 else (value - last[i]) / dt

        sample = {
            "t": node.env.clock.wall(),
            "messages_per_s": rate(1, agents.messages_handled),
            "calls": len(window),
            "p50_s": quantile(window, 0.50),
            "p95_s": quantile(window, 0.95),
            "p99_s": quantile(window, 0.99),
            "loop_lag_s": self._second_lag,
            "active_agents": agents.active_agents,
            "mailbox_depth": agents.queued_messages,
            "sent_per_s": rate(2, sent),
            "received_per_s": rate(3, received),
        }
        self._second_lag = 0.0
        self.history.append(sample)
        self._feed.publish("sample", sample)
        return sample

    async def _push_cluster(self) -> None:
        try:
            self._feed.publish("cluster", await cluster_view(self._node))
        except Exception:
            _log.exception("node %s: cluster view for the dashboard failed", self._node.name)
