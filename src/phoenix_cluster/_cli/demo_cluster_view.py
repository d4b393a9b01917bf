"""What ``phx demo`` shows: a live view while it runs, a summary table at the end.

On a terminal a rich table (members, agents per node, calls/s, latency) refreshes in
place four times a second, with the story's steps printed above it; otherwise (CI, tests,
a pipe) the steps and one plain status line a second are printed.
"""

from __future__ import annotations

import math
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import click

if TYPE_CHECKING:
    from rich.console import RenderableType

    from .._membership.snapshot import Member
    from ..testing import LocalCluster
    from .demo_ledger import Ledger, PhaseCalls, Timeline, Traffic, Verification

__all__ = ["DemoState", "LiveView", "print_summary"]

_PLAIN_EVERY = 4  # ticks between plain lines (one a second)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f} ms"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


class DemoState(Protocol):
    """What the view reads of the running demo (``demo_cluster.py``)."""

    @property
    def cluster(self) -> LocalCluster | None: ...

    @property
    def active(self) -> dict[str, int | None]: ...

    @property
    def phase(self) -> str: ...

    @property
    def calls_by_phase(self) -> dict[str, PhaseCalls]: ...

    @property
    def ledger(self) -> Ledger: ...

    @property
    def traffic(self) -> Traffic: ...

    @property
    def timeline(self) -> Timeline: ...

    @property
    def dashboard(self) -> str | None: ...

    def members(self) -> dict[str, Member]: ...

    def node_names(self) -> list[str]: ...

    def elapsed(self) -> float: ...

    def phase_calls(self) -> PhaseCalls: ...

    def retried_in_phase(self) -> int: ...


class LiveView:
    """The running view of the demo (a context manager); ``live``: a rich table
    refreshed in place (a terminal), else plain lines."""

    def __init__(self, demo: DemoState, *, live: bool) -> None:
        self.demo = demo
        self.live: Any = None
        self._live = live
        self._ticks = 0

    def __enter__(self) -> LiveView:
        if self._live:
            from rich.live import Live

            self.live = Live(self.render(), auto_refresh=False)
            self.live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live is not None:
            self.live.update(self.render(), refresh=True)
            self.live.__exit__(exc_type, exc, tb)
            self.live = None

    def say(self, line: str) -> None:
        """Print a line above the live view (or just print it)."""
        if self.live is not None:
            self.live.console.print(line, highlight=False, markup=False)
        else:
            click.echo(line)

    def refresh(self) -> None:
        self._ticks += 1
        if self.live is not None:
            self.live.update(self.render(), refresh=True)
        elif self._ticks % _PLAIN_EVERY == 0:
            click.echo(self.plain_line())

    def plain_line(self) -> str:
        demo = self.demo
        members = demo.members()
        nodes = " | ".join(
            f"{name} {members[name].status if name in members else '?'} "
            f"{_count(demo.active.get(name))}"
            for name in (demo.node_names() if demo.cluster else []))
        p50, p95 = demo.traffic.window_percentiles_ms()
        return (f"[{demo.elapsed():6.1f}s] {demo.phase}: {nodes} | "
                f"{demo.traffic.rate():,.0f} calls/s p50 {_ms(p50)} p95 {_ms(p95)} | "
                f"{phase_calls_line(demo)}")

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        demo = self.demo
        members = demo.members()
        by_ack = demo.ledger.hosts_per_node()
        table = Table(title=f"Phoenix demo: {demo.phase} ({demo.elapsed():.1f} s)",
                      title_justify="left")
        for column in ("node", "status", "incarnation", "active agents", "agents (last ack)"):
            table.add_column(column, justify="left" if column in ("node", "status")
                             else "right")
        styles = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "red"}
        for name in demo.node_names() if demo.cluster else []:
            member = members.get(name)
            status = member.status if member is not None else "unknown"
            table.add_row(name, Text(status, style=styles.get(status, "")),
                          "-" if member is None else str(member.incarnation),
                          _count(demo.active.get(name)), _count(by_ack.get(name)))
        p50, p95 = demo.traffic.window_percentiles_ms()
        traffic = demo.traffic
        failed = ", ".join(f"{k} {v:,}" for k, v in sorted(traffic.failed.items())) or "none"
        lines = [
            f"calls/s {traffic.rate():,.0f}   p50 {_ms(p50)}   p95 {_ms(p95)}",
            f"acknowledged writes {demo.ledger.total_acked:,}   failed calls: {failed}",
            f"{demo.phase}: {phase_calls_line(demo)}",
            f"dashboard: {demo.dashboard or 'not built yet'}",
        ]
        return Group(table, Text("\n".join(lines)))


def phase_calls_line(demo: DemoState) -> str:
    """The current phase's calls: how many failed for the caller, how many the client
    library retried (a call retried and then answered is not a failure)."""
    calls = demo.phase_calls()
    return (f"this phase: {calls.calls:,} calls, {calls.failed:,} failed, "
            f"{demo.retried_in_phase():,} retried by the client library")


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _seconds(value: float | None) -> str:
    return "did not happen" if value is None else f"{value:.2f} s"


def print_summary(demo: DemoState, v: Verification) -> None:
    """The end-of-run table, then the verification in plain lines (easy to grep)."""
    from rich.console import Console
    from rich.table import Table

    t, traffic = demo.timeline, demo.traffic
    members = demo.members()
    by_ack = demo.ledger.hosts_per_node()
    p50, p95 = traffic.run_percentiles_ms()
    victim = demo.node_names()[-1] if demo.cluster else "?"
    table = Table(title="Summary", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("members", ", ".join(
        f"{n} ({members[n].status if n in members else 'stopped'})" for n in demo.node_names()))
    table.add_row("agents per node (active)",
                  ", ".join(f"{n} {_count(demo.active.get(n))}" for n in demo.node_names()))
    table.add_row("agents per node (last ack)",
                  ", ".join(f"{n} {by_ack.get(n, 0):,}" for n in demo.node_names()))
    retried = sum(c.retried for c in demo.calls_by_phase.values())
    table.add_row("calls made", f"{traffic.calls:,} ({traffic.ok:,} acknowledged, "
                  f"{sum(traffic.failed.values()):,} failed: " + (", ".join(
                      f"{k} {c:,}" for k, c in sorted(traffic.failed.items())) or "none")
                  + f"; {retried:,} retried by the client library)")
    for phase, calls in demo.calls_by_phase.items():
        if calls.failed or calls.retried:
            first = f" (first: {_shorten(calls.first_error, 100)})" if calls.failed else ""
            table.add_row(f"  while {phase}",
                          f"{calls.calls:,} calls, {calls.failed:,} failed{first}, "
                          f"{calls.retried:,} retried by the client library")
    table.add_row("call latency p50 / p95", f"{_ms(p50)} / {_ms(p95)}")
    table.add_row(f"detection ({victim} killed)",
                  f"suspect {_seconds(t.since_kill(t.suspect))}, "
                  f"dead {_seconds(t.since_kill(t.dead))} after the kill")
    table.add_row("recovery (every agent answers)",
                  f"{_seconds(t.since_kill(t.recovered))} after the kill "
                  f"({t.failed_over:,} agents failed over)")
    rebalanced = None if t.rebalanced is None or t.restarted is None \
        else t.rebalanced - t.restarted
    table.add_row("rebalancing after the restart",
                  f"{_seconds(rebalanced)} ({t.moved_back:,} agents on {victim})")
    table.add_row("dashboard", demo.dashboard or "not built yet")
    table.add_row("writes acknowledged", f"{v.acknowledged:,}")
    table.add_row("writes verified", f"{v.verified:,} (lost: {v.unexpected_lost:,})")
    table.add_row("writes the killed node had acknowledged",
                  f"lost: {v.lost_with_killed:,} (its {v.agents_on_killed:,} agents' state "
                  "came back from their replicas)")
    Console(width=max(100, Console().width)).print(table)
    click.echo(f"verified: {v.verified:,} of {v.acknowledged:,} acknowledged writes are "
               f"present; lost on surviving nodes' agents and across rebalancing: "
               f"{v.unexpected_lost:,} ({v.moved_agents:,} agents moved by rebalancing "
               f"carried {v.moved_writes:,} writes, {v.moved_lost:,} lost)")
    click.echo(f"lost with the killed node: {v.lost_with_killed:,} acknowledged writes on "
               f"{v.agents_on_killed:,} agents (each was committed to a majority of its "
               f"replicas before the reply)")
    if v.lost_with_killed:
        click.echo(f"ERROR: {v.lost_with_killed:,} acknowledged writes lost with the "
                   "killed node")
    if v.unknown_outcome:
        click.echo(f"unknown outcome (timed out or connection lost, never counted as "
                   f"acknowledged): {v.unknown_outcome:,}")
    if v.duplicated:
        click.echo(f"ERROR: {v.duplicated:,} writes counted more than once")
    if v.unexpected_lost:
        click.echo(f"ERROR: {v.unexpected_lost:,} acknowledged writes lost on "
                   f"{v.unexpected_agents:,} agents that never lived on the killed node")
    for problem in t.problems:
        click.echo(f"ERROR: {problem}")
    if t.interrupted:
        click.echo("interrupted with Ctrl-C: later steps were skipped")
    click.echo("result: " + ("OK" if v.ok and not t.problems else "FAILED"))
    if sys.stdout.isatty() and demo.dashboard:
        click.echo(f"(the dashboard at {demo.dashboard} is gone with the cluster)")
