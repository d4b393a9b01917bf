"""The verdicts and the report of ``phx bench membership``: figures against the goals.

The figures come from :func:`phoenix_cluster._cli.bench_membership.run_membership`;
:func:`verdicts` (saved with them) says which detection goal was met and whether the
simulated join spread grows like log n; :func:`print_report` prints the real-process
figures and the simulated rounds as two rich tables.
"""

from __future__ import annotations

from typing import Any

__all__ = ["print_report", "verdicts"]

# The project's goals (issue 4): aim < 3 s, reach < 10 s, spec < 30 s.
AIM_DETECTION_S = 3.0
REACH_DETECTION_S = 10.0
GOAL_RECOVERY_S = 5.0
SPEC_RECOVERY_S = 30.0
# rounds/log2(n) at the largest size over that at the smallest: below this, log-like.
LOG_GROWTH_TOLERANCE = 1.5


def verdicts(results: dict[str, Any]) -> dict[str, str]:
    """The goals met: failure detection (with no false death under load) and join spread."""
    det = results["detection"]
    load = results["load"]
    clean = load["false_deaths"] == 0 and load["nodes_exited"] == 0
    if det["max_s"] < AIM_DETECTION_S and clean:
        detection = "aim met"
    elif det["max_s"] < REACH_DETECTION_S and clean:
        detection = "reach met" + (" (aim met at p50)" if det["p50_s"] < AIM_DETECTION_S else "")
    else:
        detection = "missed"
    growth = "not measured"
    spread = results["simulation"]["join_spread"]
    ratios = [v["rounds_per_log2_n"] for v in spread.values()]
    if ratios and None not in ratios:
        growth = ("grows like log n" if max(ratios) <= LOG_GROWTH_TOLERANCE * min(ratios)
                  else "grows faster than log n")
    return {"detection": detection, "join_spread": growth}


def _verdict(value: float, aim: float, reach: float | None = None) -> str:
    if value < aim:
        return "[green]aim met[/]"
    if reach is not None and value < reach:
        return "[yellow]reach met[/]"
    return "[red]missed[/]"


def print_report(results: dict[str, Any]) -> None:
    """Print the results as two rich tables (fit 80 columns)."""
    from rich.console import Console
    from rich.table import Table

    m = results["machine"]
    s = results["settings"]
    sizes = results["sizes"]
    load = results["load"]
    table = Table(
        title=(
            f"phx bench membership: {m['cpu_count']} CPUs, {m['implementation']} "
            f"{m['python']}, {m['loop']}{' (quick)' if m['quick'] else ''}"
        ),
        caption=(
            f"{sizes['nodes']} phx node processes on loopback, a fresh cluster per trial "
            f"({sizes['trials']} trials). Detection: SIGKILL until every survivor says dead; "
            f"recovery: until every key answers. Probe every {s['probe_interval_s']} s, "
            f"timeout {s['probe_timeout_s']} s, suspicion_mult {s['suspicion_mult']}. Load: "
            f"{load['burners']} busy loops for {load['seconds']:.0f} s."
        ),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("measurement")
    table.add_column("p50", justify="right")
    table.add_column("max", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("verdict")

    table.add_row("processes ready", f"{results['ready']['p50_s']:.2f} s",
                  f"{results['ready']['max_s']:.2f} s")
    cold = results["cold_start"]
    table.add_row(f"cold start ({sizes['nodes']} nodes)", f"{cold['p50_s']:.2f} s",
                  f"{cold['max_s']:.2f} s")
    det = results["detection"]
    table.add_row(
        "failure detection", f"{det['p50_s']:.2f} s", f"{det['max_s']:.2f} s",
        f"< {AIM_DETECTION_S:.0f} s (reach {REACH_DETECTION_S:.0f})",
        _verdict(det["max_s"], AIM_DETECTION_S, REACH_DETECTION_S),
    )
    rec = results["recovery"]
    table.add_row(
        f"recovery ({sizes['keys']} keys)", f"{rec['p50_s']:.2f} s",
        f"{rec['max_s']:.2f} s", f"< {GOAL_RECOVERY_S:.0f} s",
        _verdict(rec["max_s"], GOAL_RECOVERY_S, SPEC_RECOVERY_S),
    )
    fp = load["false_deaths"]
    table.add_row(
        "false deaths, CPU load", str(fp), "", "0",
        "[green]met[/]" if fp == 0 and load["nodes_exited"] == 0 else "[red]missed[/]",
    )
    table.add_row("suspicions, CPU load", str(load["suspicions"]))
    table.add_row("loop-lag events, load", str(load["loop_lag_events"]))
    if load["nodes_exited"]:
        table.add_row("[red]nodes exited, load[/]", str(load["nodes_exited"]))
    console = Console()
    console.print(table)

    sim = results["simulation"]
    sim_table = Table(
        title="SWIM rounds to converge (simulated network, real SwimProtocol)",
        caption=(
            f"Median over {sim['seeds']} seed(s); {sim['loss']:.0%} datagram loss, "
            f"datagrams ≤ {sim['max_datagram_bytes']:,} bytes. Join: one newcomer, "
            "gossip only. Cold start: all join at once through one seed, with push-pull "
            f"every {s['sync_interval_s']:.0f} s. Verdict: {results['verdicts']['join_spread']}."
        ),
        title_justify="left",
        caption_justify="left",
    )
    sim_table.add_column("members", justify="right")
    sim_table.add_column("join rounds", justify="right")
    sim_table.add_column("/ log2 n", justify="right")
    sim_table.add_column("cold start rounds", justify="right")
    sim_table.add_column("/ log2 n", justify="right")

    def fmt(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    for n, join in sim["join_spread"].items():
        cold_n = sim["cold_start"].get(n, {})
        sim_table.add_row(
            f"{int(n):,}", fmt(join["rounds_p50"]), fmt(join["rounds_per_log2_n"], 2),
            fmt(cold_n.get("rounds_p50")), fmt(cold_n.get("rounds_per_log2_n"), 2),
        )
    console.print(sim_table)
