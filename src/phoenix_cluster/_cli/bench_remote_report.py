"""The report of ``phx bench remote``: per transport, Phoenix next to the raw baseline.

The figures come from :func:`phoenix_cluster._cli.bench_remote.run_remote`; each row shows
Phoenix's figure, the raw one, Phoenix's speed as a share of it, and the best goal met.
"""

from __future__ import annotations

from typing import Any

from .bench_cluster_report import report_title
from .bench_local import save_json
from .bench_remote import CAST_SENDERS

__all__ = ["print_report", "save_json"]

# Issue 3: "reach" must be met between two processes on this 2-core
# machine; "aim" is the project's figure to reach.
REACH_CALL_P95_US = 1_000.0
AIM_CALL_P95_US = 300.0
REACH_PIPELINED_CALLS_PER_S = 10_000.0
AIM_PIPELINED_CALLS_PER_S = 30_000.0
AIM_CASTS_PER_S = 100_000.0


def _latency_verdict(p95: float) -> str:
    if p95 < AIM_CALL_P95_US:
        return "[green]aim[/]"
    if p95 < REACH_CALL_P95_US:
        return "[yellow]reach[/]"
    return "[red]missed[/]"


def _throughput_verdict(per_s: float) -> str:
    if per_s > AIM_PIPELINED_CALLS_PER_S:
        return "[green]aim[/]"
    if per_s > REACH_PIPELINED_CALLS_PER_S:
        return "[yellow]reach[/]"
    return "[red]missed[/]"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f} %"


def print_report(results: dict[str, Any]) -> None:
    """Print the results as a rich table (fits 80 columns)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    m = results["machine"]
    sizes = results["sizes"]
    raw = results["baseline"]
    table = Table(
        title=report_title("remote", m),
        caption=(
            "Client in this process, one phx node process on loopback (a fresh one per row). "
            f"call p50/p95/p99: {sizes['latency_calls']:,} sequential calls (one in flight); "
            f"n in flight: calls/s with n concurrent callers ({sizes['sequential_calls']:,} "
            f"calls with 1, {sizes['pipelined_calls']:,} with 16 or 256); casts: "
            f"await cast, acknowledged once queued, to one agent until all handled "
            f"({sizes['sequential_casts']:,} from 1 sender, {sizes['casts']:,} from "
            f"{CAST_SENDERS}). raw: bare asyncio "
            "Call/Reply frames over one loopback connection to an echo process; 'of raw': "
            "Phoenix's speed as a share of it (raw latency / Phoenix latency, Phoenix calls/s "
            "/ raw calls/s); met: the best goal met. Goals (issue 3): reach "
            "p95 < 1 ms and > 10,000 calls/s pipelined; aim p95 < 300 µs, > 30,000 calls/s, "
            "> 100,000 casts/s."
        ),
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("measurement", no_wrap=True, max_width=20)
    table.add_column("figure", justify="right", no_wrap=True, min_width=9)
    table.add_column("raw", justify="right", no_wrap=True, min_width=9)
    table.add_column("of raw", justify="right", no_wrap=True, min_width=6)
    table.add_column("reach / aim", justify="right", no_wrap=True)
    table.add_column("met", no_wrap=True)

    raw_lat = raw["call_latency"]
    for transport, figures in results["transports"].items():
        share = results["of_baseline"][transport]
        lat = figures["call_latency"]
        for q in ("p50", "p95", "p99"):
            is_p95 = q == "p95"
            table.add_row(
                f"{transport} call {q}",
                f"{lat[f'{q}_us']:,.0f} µs",
                f"{raw_lat[f'{q}_us']:,.0f} µs",
                _percent(share[f"{q}_latency"]),
                "1 ms / 300 µs" if is_p95 else "",
                _latency_verdict(lat["p95_us"]) if is_p95 else "",
            )
        for n, value in figures["calls_per_s"].items():
            pipelined = int(n) > 1
            table.add_row(
                f"{transport} {n} in flight",
                f"{value:,.0f}/s",
                f"{raw['calls_per_s'][n]:,.0f}/s",
                _percent(share[f"calls_per_s_{n}"]),
                "10k / 30k" if pipelined else "",
                _throughput_verdict(value) if pipelined else "",
            )
        table.add_row(f"{transport} casts, 1 sender", f"{figures['casts_per_s']:,.0f}/s",
                      "", "", "", "")
        casts = figures[f"casts_per_s_{CAST_SENDERS}_senders"]
        table.add_row(
            f"{transport} casts, {CAST_SENDERS} senders",
            f"{casts:,.0f}/s",
            "",
            "",
            "— / 100k",
            "[green]aim[/]" if casts > AIM_CASTS_PER_S else "[red]missed[/]",
            end_section=True,
        )
    Console().print(table)
