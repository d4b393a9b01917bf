"""The report of ``phx bench cluster``: its figures as a rich table, next to the goals and Ray.

The figures come from :func:`phoenix_cluster._cli.bench_cluster.run_cluster`.
:func:`report_title` is shared by the other cross-node benchmarks' reports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["print_report", "report_title"]

# The project's goals, shown next to the measured figures.
GOAL_CALL_P95_US = 300.0
SPEC_CALL_P95_US = 10_000.0
GOAL_PIPELINED_CALLS_PER_S = 30_000.0
GOAL_CASTS_PER_S = 100_000.0
# Ray 2.60 on this project's 2-core machines, one driver and one actor.
RAY_CALL_P50_US = 660.0
RAY_CALL_P95_US = 890.0
RAY_SEQUENTIAL_CALLS_PER_S = 1_400.0
RAY_PIPELINED_CALLS_PER_S = 3_500.0


def _verdict(value: float, goal: float, spec: float | None = None, *, lower: bool) -> str:
    def met(bound: float) -> bool:
        return value < bound if lower else value > bound

    if met(goal):
        return "[green]goal met[/]"
    if spec is not None and met(spec):
        return "[yellow]spec met[/]"
    return "[red]missed[/]"


def _ray(ray: str, value: float, ray_value: float, *, lower: bool) -> str:
    """Ray's figure, and how many times better (or worse) ours is."""
    ratio = ray_value / value if lower else value / ray_value
    return f"{ray} ({ratio:.1f}x)" if ratio >= 1 else f"{ray} (1/{1 / ratio:.1f})"


def report_title(command: str, m: dict[str, Any]) -> str:
    """``phx bench COMMAND: 2 CPUs, CPython 3.11.7, uvloop`` (the loops of client and nodes)."""
    loops = (
        m["loop"] if m["loop"] == m["node_loop"] else f"client {m['loop']}, nodes {m['node_loop']}"
    )
    return (f"phx bench {command}: {m['cpu_count']} CPUs, {m['implementation']} "
            f"{m['python']}, {loops}{' (quick)' if m['quick'] else ''}")


def print_report(results: dict[str, Any]) -> None:
    """Print the results as a rich table (fits 80 columns)."""
    from rich.console import Console
    from rich.table import Table

    m = results["machine"]
    sizes = results["sizes"]
    table = Table(
        title=report_title("cluster", m),
        caption=(
            "Node processes on loopback, a fresh cluster per row; casts on 1 member. "
            f"{sizes['latency_calls']:,} sequential calls per latency row, "
            f"{sizes['throughput_calls']:,} per callers row, {sizes['casts']:,} casts per "
            "cast row. Ray 2.60 (driver → actor, same kind of machine), and in brackets how many "
            "times better Phoenix is."
        ),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("measurement")
    table.add_column("figure", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("verdict")
    table.add_column("Ray", justify="right")

    for key, label in (
        ("call_latency", "client → member"),
        ("member_call_latency", "member → member"),
    ):
        lat = results[key]
        p50, p95, per_s = lat["p50_us"], lat["p95_us"], lat["calls_per_s"]
        ray_p50 = _ray(f"{RAY_CALL_P50_US:.0f} µs", p50, RAY_CALL_P50_US, lower=True)
        table.add_row(f"{label} p50", f"{p50:.0f} µs", "", "", ray_p50)
        table.add_row(
            f"{label} p95",
            f"{p95:.0f} µs",
            f"< {GOAL_CALL_P95_US:.0f} µs",
            _verdict(p95, GOAL_CALL_P95_US, SPEC_CALL_P95_US, lower=True),
            _ray(f"{RAY_CALL_P95_US:.0f} µs", p95, RAY_CALL_P95_US, lower=True),
        )
        table.add_row(f"{label} p99", f"{lat['p99_us']:.0f} µs")
        ray_seq = f"{RAY_SEQUENTIAL_CALLS_PER_S:,.0f}/s"
        table.add_row(
            f"{label} sync",
            f"{per_s:,.0f}/s",
            "",
            "",
            _ray(ray_seq, per_s, RAY_SEQUENTIAL_CALLS_PER_S, lower=False),
        )
    for where, per_callers in results["call_throughput_per_s"].items():
        members = where.replace("_", " ")
        for callers, value in per_callers.items():
            table.add_row(
                f"{int(callers):,} callers, {members}",
                f"{value:,.0f}/s",
                f"> {GOAL_PIPELINED_CALLS_PER_S:,.0f}",
                _verdict(value, GOAL_PIPELINED_CALLS_PER_S, lower=False),
                _ray(
                    f"{RAY_PIPELINED_CALLS_PER_S:,.0f}/s",
                    value,
                    RAY_PIPELINED_CALLS_PER_S,
                    lower=False,
                ),
            )
    for name, value in results["cast_throughput_per_s"].items():
        n = name.split("_")[0]
        table.add_row(
            f"casts, {int(n):,} agent{'s' if int(n) > 1 else ''}",
            f"{value:,.0f}/s",
            f"> {GOAL_CASTS_PER_S:,.0f}",
            _verdict(value, GOAL_CASTS_PER_S, lower=False),
            "",
        )
    Console().print(table)
