"""The report of ``phx bench local``: its figures as a rich table, next to the project's goals.

The figures come from :func:`phoenix_cluster._cli.bench_local.run_local` (JSON-ready data,
also what ``--json`` saves); each goal row says whether it was met, within reach or missed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["print_report"]

# The project's goals, shown next to the measured figures.
GOAL_CALL_P95_US = 50.0
REACH_CALL_P95_US = 100.0
GOAL_PIPELINED_CALLS_PER_S = 30_000.0
GOAL_CASTS_PER_S = 100_000.0
GOAL_ACTIVATIONS_PER_S = 50_000.0
GOAL_IDLE_AGENT_BYTES = 600.0
REACH_IDLE_AGENT_BYTES = 1024.0


def _verdict(value: float, goal: float, reach: float | None = None, *, lower: bool) -> str:
    def met(bound: float) -> bool:
        return value < bound if lower else value > bound

    if met(goal):
        return "[green]goal met[/]"
    if reach is not None and met(reach):
        return "[yellow]within reach[/]"
    return "[red]missed[/]"


def print_report(results: dict[str, Any]) -> None:
    """Print the results as a rich table."""
    from rich.console import Console
    from rich.table import Table

    m = results["machine"]
    sizes = results["sizes"]
    lat = results["call_latency"]
    thr = results["call_throughput_per_s"]
    mem = results["memory"]

    table = Table(
        title=(
            f"phx bench local: {m['cpu_count']} CPUs, {m['implementation']} {m['python']}, "
            f"{m['loop']}{' (quick)' if m['quick'] else ''}"
        ),
        caption=(
            f"{sizes['latency_calls']:,} sequential calls; {sizes['throughput_calls']:,} "
            f"calls per throughput row; {sizes['casts']:,} casts; {sizes['activations']:,} "
            f"new keys; {sizes['memory_agents']:,} agents for memory"
        ),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("measurement")
    table.add_column("figure", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("verdict")

    def row(label: str, figure: str, goal: str = "", verdict: str = "") -> None:
        table.add_row(label, figure, goal, verdict)

    row("call latency p50", f"{lat['p50_us']:.1f} µs")
    row(
        "call latency p95",
        f"{lat['p95_us']:.1f} µs",
        f"< {GOAL_CALL_P95_US:.0f} µs",
        _verdict(lat["p95_us"], GOAL_CALL_P95_US, REACH_CALL_P95_US, lower=True),
    )
    row("call latency p99", f"{lat['p99_us']:.1f} µs")
    err = results["failing_call_latency"]
    row("failing call (rollback) p50 / p95", f"{err['p50_us']:.0f} / {err['p95_us']:.0f} µs")
    for where, label in (("distinct_agents", "own agents"), ("shared_agent", "one agent")):
        for callers, value in thr[where].items():
            n = int(callers)
            goal = f"> {GOAL_PIPELINED_CALLS_PER_S:,.0f}" if n > 1 else ""
            verdict = _verdict(value, GOAL_PIPELINED_CALLS_PER_S, lower=False) if n > 1 else ""
            row(
                f"calls/s, {n:,} caller{'s' if n > 1 else ''}, {label}",
                f"{value:,.0f}",
                goal,
                verdict,
            )
    for name, value in results["cast_throughput_per_s"].items():
        row(
            f"casts/s, {name.replace('_', ' ')}",
            f"{value:,.0f}",
            f"> {GOAL_CASTS_PER_S:,.0f}",
            _verdict(value, GOAL_CASTS_PER_S, lower=False),
        )
    act = results["activations_per_s"]
    row(
        "activations/s",
        f"{act:,.0f}",
        f"> {GOAL_ACTIVATIONS_PER_S:,.0f}",
        _verdict(act, GOAL_ACTIVATIONS_PER_S, lower=False),
    )
    for tool in ("tracemalloc", "rss"):
        value = mem[f"active_{tool}_bytes_per_agent"]
        row(
            f"idle agent, {tool}",
            f"{value:,.0f} B",
            f"< {GOAL_IDLE_AGENT_BYTES:.0f} B",
            _verdict(value, GOAL_IDLE_AGENT_BYTES, REACH_IDLE_AGENT_BYTES, lower=True),
        )
    for tool in ("tracemalloc", "rss"):
        row(f"passivated agent, {tool}", f"{mem[f'passive_{tool}_bytes_per_agent']:,.0f} B")
    Console().print(table)
