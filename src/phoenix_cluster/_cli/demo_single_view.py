"""The view of ``phx demo --single``: a live table on a terminal, plain lines elsewhere, and
the end-of-run summary.

On a terminal the figures refresh in place about four times a second; otherwise (CI,
tests, a pipe) a plain line is printed every second.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from .demo_single_stats import Outcome, SingleDemoConfig, SingleDemoStats

if TYPE_CHECKING:
    from rich.console import RenderableType

    from .._node import Node

__all__ = ["render", "show", "summary"]

_REFRESH_S = 0.25
_PLAIN_EVERY = 4  # ticks between plain lines (one a second)


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:,.1f} MB"


def render(
    node: Node, config: SingleDemoConfig, stats: SingleDemoStats, elapsed: float
) -> RenderableType:
    """The live table: agents, rates and latencies of the last second, errors, memory."""
    from rich.table import Table

    from .bench_local import rss_bytes

    agents = node.statistics().agents
    calls_s, casts_s = stats.rate()
    p50, p95 = stats.window_percentiles_us()
    until = "Ctrl-C to stop" if config.duration_s is None else f"of {config.duration_s:.0f} s"
    table = Table(
        title=f"Phoenix demo on {node.name}: {elapsed:5.1f} s {until}",
        title_justify="left",
        show_header=False,
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("active agents", f"{agents.active_agents:,}")
    table.add_row("passivated agents", f"{agents.passive_agents:,}")
    table.add_row("calls/s", f"{calls_s:,.0f}")
    table.add_row("casts/s", f"{casts_s:,.0f}")
    table.add_row("call latency p50 / p95", f"{p50:,.0f} µs / {p95:,.0f} µs")
    table.add_row("errors rolled back", f"{stats.rolled_back:,}")
    table.add_row("overloaded / timed out", f"{stats.overloaded:,} / {stats.timeouts:,}")
    table.add_row("memory (RSS)", _mb(rss_bytes()))
    return table


def _plain_line(node: Node, stats: SingleDemoStats, elapsed: float) -> str:
    from .bench_local import rss_bytes

    agents = node.statistics().agents
    calls_s, casts_s = stats.rate()
    p50, p95 = stats.window_percentiles_us()
    return (
        f"[{elapsed:6.1f}s] agents {agents.active_agents:,} active "
        f"{agents.passive_agents:,} passive | {calls_s:,.0f} calls/s {casts_s:,.0f} casts/s | "
        f"p50 {p50:,.0f} µs p95 {p95:,.0f} µs | rolled back {stats.rolled_back:,} | "
        f"RSS {_mb(rss_bytes())}"
    )


async def show(
    node: Node,
    config: SingleDemoConfig,
    stats: SingleDemoStats,
    started: float,
    update: Callable[[RenderableType], None] | None,
) -> None:
    """Tick the statistics and refresh the view (``update``; ``None``: plain lines) forever."""
    for tick in itertools.count(1):
        await asyncio.sleep(_REFRESH_S)
        now = time.perf_counter()
        stats.tick(now)
        if update is not None:
            update(render(node, config, stats, now - started))
        elif tick % _PLAIN_EVERY == 0:
            click.echo(_plain_line(node, stats, now - started))


def summary(
    node: Node, config: SingleDemoConfig, stats: SingleDemoStats, elapsed: float, outcome: Outcome
) -> list[str]:
    """The end-of-run summary, line by line, with the verdict of each invariant."""
    agents = node.statistics().agents
    hist = stats.whole_run
    verdict = {True: "invariant OK", False: "INVARIANT VIOLATED"}
    return [
        f"Summary: {elapsed:.1f} s, {config.accounts + config.counters:,} agents "
        f"({config.accounts:,} accounts, {config.counters:,} counters), "
        f"{config.clients:,} clients, seed {config.seed}",
        f"  calls: {stats.calls:,} ({stats.calls / elapsed:,.0f}/s), "
        f"transfers: {stats.transfers:,}, casts: {stats.casts:,} ({stats.casts / elapsed:,.0f}/s)",
        f"  call latency p50 {hist.percentile_us(0.5):,.0f} µs, "
        f"p95 {hist.percentile_us(0.95):,.0f} µs, p99 {hist.percentile_us(0.99):,.0f} µs",
        f"  errors rolled back: {stats.rolled_back:,} ({stats.injected_rolled_back:,} failures "
        f"injected after a debit, {stats.overdrafts_refused:,} overdrafts refused, "
        f"{stats.other_errors:,} other)",
        f"  overloaded: {stats.overloaded:,}, timed out: {stats.timeouts:,}",
        f"  activations: {agents.activations:,}, passivations: {agents.passivations:,}, "
        f"messages handled: {agents.messages_handled:,}",
        f"  money: {outcome.money_expected:,} expected, {outcome.money_found:,} found: "
        f"{verdict[outcome.money_ok]}",
        f"  counters: {outcome.increments_accepted:,} increments accepted, "
        f"{outcome.increments_counted:,} counted: {verdict[outcome.counters_ok]}",
    ]
