"""The side-by-side benchmark behind ``phx bench compare``: Phoenix against its limits.

One invocation measures, in rounds (3 by default), each round in this order:

- **raw**: the bare asyncio request/response baseline of ``phx bench remote``
  (:mod:`.bench_remote`): Call/Reply frames over one loopback TCP connection to an echo
  server process, no Phoenix in the path;
- **Phoenix, 1 node and 3 nodes**: a fresh :class:`~phoenix_cluster.testing.LocalCluster`
  of that many ``phx node`` processes, measured from a ``role="client"`` node in this
  process, for two kinds with the same body: ``quorum`` (the default durability: every
  state change is on a majority of the replicas before the reply; on one node the
  majority is that node) and ``none`` (memory only, the unreplicated reference);
- **Ray** actors, when ``ray`` is importable (one local Ray instance, one actor with the
  same ``inc``); otherwise the report says it was absent.

Each series gets the same two measures: call latency with one call in flight
(``latency_calls`` sequential calls after a warm-up; p50 and p95), and calls per second
with 256 in flight (256 concurrent callers, each on its own key: distinct agents, or for
Ray one actor, ``pipelined_calls`` in all), with the CPU the client and the nodes used
meanwhile (from ``/proc``). Every figure is the median of the rounds, with its spread
(max - min over the median). Each ratio is the median of the rounds' ratios, whose two
sides were measured in the same round, so load that comes and goes moves both.

This module is imported only when ``phx bench compare`` runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from phoenix_cluster._agents.agent import Agent
from phoenix_cluster._agents.ref import AgentRef

from .bench_agents import NODE_LOOP_ENV, BenchQuorum, BenchVolatile
from .bench_cluster_harness import Session, run_on_cluster, summarize
from .bench_cluster_report import report_title
from .bench_local import LoopName, loop_factory, machine_info, save_json
from .bench_remote import RemoteBenchSizes
from .bench_remote_baseline import run_baseline
from .bench_replication import _cpu_seconds

__all__ = ["IN_FLIGHT", "CompareSizes", "print_report", "run_compare", "save_json"]

IN_FLIGHT = 256
"""Concurrent callers of the pipelined measure."""

MEMBERS = (1, 3)
KINDS: dict[str, type[Agent]] = {"quorum": BenchQuorum, "none": BenchVolatile}

# Issue 18's goals, as ratios of medians measured in the same run.
GOAL_P95_OF_RAW = 2.0          # Phoenix p95 <= 2x the raw p95
GOAL_CALLS_OF_RAW = 0.25       # Phoenix calls/s >= 1/4 of raw at 256 in flight
GOAL_QUORUM_OF_NONE = 0.7      # quorum calls/s >= 0.7x the unreplicated kind's
GOAL_CALLS_OF_RAY = 10.0       # >= 10x Ray's calls/s
GOAL_P95_OF_RAY = 4.0          # p95 >= 4x better than Ray's


@dataclasses.dataclass(frozen=True, slots=True)
class CompareSizes:
    """How much work each measurement does."""

    rounds: int = 3
    latency_warmup: int = 500
    latency_calls: int = 5_000
    pipelined_calls: int = 25_600

    @classmethod
    def quick(cls) -> CompareSizes:
        """About a tenth of the full sizes, one round (tests, smoke runs)."""
        return cls(rounds=1, latency_warmup=50, latency_calls=500, pipelined_calls=2_560)


# --------------------------------------------------------------------------- Phoenix


async def _phoenix(session: Session, sizes: CompareSizes, round_no: int) -> dict[str, Any]:
    """Both kinds on this cluster: latency, then 256 in flight (the order alternates by
    round, so neither kind always runs on the warmer cluster)."""
    client = session.client
    pids = [n.process.pid for n in session.cluster.nodes if n.process is not None]
    order = list(KINDS.items())
    if round_no % 2:
        order.reverse()
    out: dict[str, Any] = {}
    for name, kind in order:
        ref = client.ref(kind, f"latency-{round_no}")
        inc = ref.inc
        for _ in range(sizes.latency_warmup):
            await inc(1)
        clock = time.perf_counter_ns
        samples: list[int] = []
        append = samples.append
        gc.collect()
        for _ in range(sizes.latency_calls):
            started = clock()
            await inc(1)
            append(clock() - started)
        lat = summarize(samples)

        refs = [client.ref(kind, f"t{round_no}-{i}") for i in range(IN_FLIGHT)]
        await asyncio.gather(*(r.inc(0) for r in refs))  # activate, open connections
        per_caller = max(1, sizes.pipelined_calls // IN_FLIGHT)

        async def caller(r: AgentRef, calls: int = per_caller) -> None:
            call = r.inc
            for _ in range(calls):
                await call(1)

        gc.collect()
        nodes_cpu, client_cpu = _cpu_seconds(pids), time.process_time()
        started_s = time.perf_counter()
        await asyncio.gather(*(caller(r) for r in refs))
        elapsed = time.perf_counter() - started_s
        out[name] = {
            "p50_us": lat["p50_us"], "p95_us": lat["p95_us"],
            "calls_per_s": IN_FLIGHT * per_caller / elapsed,
            "client_cores": (time.process_time() - client_cpu) / elapsed,
            "nodes_cores": (_cpu_seconds(pids) - nodes_cpu) / elapsed,
        }
    return out


# --------------------------------------------------------------------------- Ray


def _ray(sizes: CompareSizes) -> dict[str, float] | None:
    """One Ray actor with the same ``inc``, or ``None`` when ``ray`` is not importable."""
    try:
        ray: Any = importlib.import_module("ray")  # optional; not a dependency
    except ImportError:
        return None

    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def inc(self, by: int) -> int:
            self.count += by
            return self.count

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = ray.remote(Counter).remote()
        for _ in range(sizes.latency_warmup):
            ray.get(actor.inc.remote(1))
        clock = time.perf_counter_ns
        samples: list[int] = []
        for _ in range(sizes.latency_calls):
            started = clock()
            ray.get(actor.inc.remote(1))
            samples.append(clock() - started)
        lat = summarize(samples)
        # 256 in flight: keep the window full, replacing each answered call.
        total = max(IN_FLIGHT, sizes.pipelined_calls)
        started_s = time.perf_counter()
        pending = [actor.inc.remote(1) for _ in range(IN_FLIGHT)]
        sent = IN_FLIGHT
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
            if sent < total:
                pending.append(actor.inc.remote(1))
                sent += 1
        elapsed = time.perf_counter() - started_s
        return {"p50_us": lat["p50_us"], "p95_us": lat["p95_us"],
                "calls_per_s": total / elapsed}
    finally:
        if started_ray:
            ray.shutdown()


# --------------------------------------------------------------------------- driver


def _series_name(members: int, kind: str) -> str:
    return f"{kind}, {members} node{'s' if members > 1 else ''}"


def _aggregate(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per series and measure: the median of the rounds and its spread."""
    out: dict[str, dict[str, float]] = {}
    for series in runs[0]:
        values: dict[str, float] = {}
        for measure in runs[0][series]:
            xs = [run[series][measure] for run in runs]
            median = statistics.median(xs)
            values[measure] = median
            values[f"{measure}_spread"] = (max(xs) - min(xs)) / median if median else 0.0
        out[series] = values
    return out


def _ratios_of(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each Phoenix series of one round against raw, the unreplicated kind and Ray."""
    raw, ray = run["raw"], run.get("ray")
    out: dict[str, dict[str, float]] = {}
    for series, v in run.items():
        if series in ("raw", "ray"):
            continue
        r = {"p95_of_raw": v["p95_us"] / raw["p95_us"],
             "calls_of_raw": v["calls_per_s"] / raw["calls_per_s"]}
        if series.startswith("quorum"):
            none = run[series.replace("quorum", "none")]
            r["calls_of_none"] = v["calls_per_s"] / none["calls_per_s"]
        if ray is not None:
            r["calls_of_ray"] = v["calls_per_s"] / ray["calls_per_s"]
            r["p95_better_than_ray"] = ray["p95_us"] / v["p95_us"]
        out[series] = r
    return out


def _ratios(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The median over the rounds of each round's ratios: the two sides of a ratio were
    measured minutes apart at most (the quorum and none kinds seconds apart, on the same
    cluster), so load that comes and goes moves both."""
    per_round = [_ratios_of(run) for run in runs]
    return {series: {name: statistics.median(r[series][name] for r in per_round)
                     for name in per_round[0][series]}
            for series in per_round[0]}


def run_compare(
    *,
    quick: bool = False,
    rounds: int | None = None,
    loop: LoopName = "auto",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every round of every series; return JSON-ready data (runs, medians, ratios).

    Args:
        quick: a tenth of the sizes and one round.
        rounds: how many rounds (the medians are over them); default 3, 1 with quick.
        loop: the client's loop (``auto``: uvloop when importable); ``asyncio`` keeps
            the nodes and the echo server off uvloop too.
        progress: called with a short description before each measurement.
    """
    sizes = CompareSizes.quick() if quick else CompareSizes()
    if rounds is not None:
        sizes = dataclasses.replace(sizes, rounds=rounds)
    loop_name, factory = loop_factory(loop)
    say = progress or (lambda _text: None)
    node_env = {NODE_LOOP_ENV: "asyncio" if loop == "asyncio" else "auto"}
    node_loops: set[str] = set()
    raw_sizes = RemoteBenchSizes(latency_warmup=sizes.latency_warmup,
                                 latency_calls=sizes.latency_calls,
                                 sequential_calls=sizes.latency_calls,
                                 pipelined_calls=sizes.pipelined_calls)
    runs: list[dict[str, dict[str, float]]] = []
    ray_present = True
    for round_no in range(sizes.rounds):
        run: dict[str, dict[str, float]] = {}
        say(f"round {round_no + 1}/{sizes.rounds}: raw asyncio baseline")
        gc.collect()
        with asyncio.Runner(loop_factory=factory) as runner:
            raw = runner.run(run_baseline(raw_sizes, node_env))
        run["raw"] = {"p50_us": raw["call_latency"]["p50_us"],
                      "p95_us": raw["call_latency"]["p95_us"],
                      "calls_per_s": raw["calls_per_s"][str(IN_FLIGHT)]}
        for members in MEMBERS:
            say(f"round {round_no + 1}/{sizes.rounds}: quorum and none kinds, "
                f"{members} node(s)")
            figures = run_on_cluster(
                factory, members, partial(_phoenix, sizes=sizes, round_no=round_no),
                node_env, node_loops)
            for kind in KINDS:
                run[_series_name(members, kind)] = figures[kind]
        if ray_present:
            say(f"round {round_no + 1}/{sizes.rounds}: Ray actor")
            ray = _ray(sizes)
            if ray is None:
                ray_present = False
            else:
                run["ray"] = ray
        runs.append(run)
    median = _aggregate(runs)
    machine = machine_info(loop_name, quick)
    machine["node_loop"] = ", ".join(sorted(node_loops))
    return {
        "machine": machine,
        "sizes": {**dataclasses.asdict(sizes), "in_flight": IN_FLIGHT},
        "ray": "measured" if ray_present else "absent (ray is not importable)",
        "runs": runs,
        "median": median,
        "ratios": _ratios(runs),
    }


# --------------------------------------------------------------------------- report


def _met(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]miss[/]"


def print_report(results: dict[str, Any]) -> None:
    """Print the medians (with spread) and the ratios as two rich tables."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    m, sizes, median = results["machine"], results["sizes"], results["median"]
    console = Console()
    figures = Table(
        title=report_title("compare", m),
        caption=(
            f"Medians of {sizes['rounds']} round(s), spread = (max - min) / median. "
            f"p50/p95: {sizes['latency_calls']:,} sequential calls; calls/s: "
            f"{sizes['pipelined_calls']:,} calls from {IN_FLIGHT} concurrent callers on "
            "distinct keys; cores: CPU used meanwhile by the client + the nodes. "
            f"Ray: {results['ray']}."
        ),
        title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
    )
    figures.add_column("series", no_wrap=True)
    figures.add_column("p50", justify="right", no_wrap=True)
    figures.add_column("p95 (spread)", justify="right", no_wrap=True)
    figures.add_column(f"calls/s @{IN_FLIGHT} (spr.)", justify="right", no_wrap=True)
    figures.add_column("cores", justify="right", no_wrap=True)
    for series, v in median.items():
        cores = (f"{v['client_cores']:.1f}+{v['nodes_cores']:.1f}"
                 if "client_cores" in v else "")
        figures.add_row(series, f"{v['p50_us']:,.0f} µs",
                        f"{v['p95_us']:,.0f} µs ({100 * v['p95_us_spread']:.0f} %)",
                        f"{v['calls_per_s']:,.0f} ({100 * v['calls_per_s_spread']:.0f} %)",
                        cores)
    console.print(figures)

    ratios = Table(
        title="ratios, median of the rounds' (goals of issue 18)",
        caption=(f"p95 x raw: Phoenix p95 / raw p95 (goal ≤ {GOAL_P95_OF_RAW:g}); of raw: "
                 f"Phoenix calls/s / raw calls/s (≥ {GOAL_CALLS_OF_RAW:g}); of none: quorum "
                 f"calls/s / the unreplicated kind's (≥ {GOAL_QUORUM_OF_NONE:g}); Ray: "
                 f"calls/s x Ray's (≥ {GOAL_CALLS_OF_RAY:g}), p95 x better than Ray's "
                 f"(≥ {GOAL_P95_OF_RAY:g})."),
        title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
    )
    ratios.add_column("series", no_wrap=True)
    ratios.add_column("p95 x raw", justify="right", no_wrap=True)
    ratios.add_column("of raw", justify="right", no_wrap=True)
    ratios.add_column("of none", justify="right", no_wrap=True)
    ratios.add_column("Ray: calls, p95", justify="right", no_wrap=True)
    for series, r in results["ratios"].items():
        of_none = (f"{r['calls_of_none']:.2f} {_met(r['calls_of_none'] >= GOAL_QUORUM_OF_NONE)}"
                   if "calls_of_none" in r else "")
        ray = (f"{r['calls_of_ray']:.1f}x, {r['p95_better_than_ray']:.1f}x"
               if "calls_of_ray" in r else "absent")
        ratios.add_row(
            series,
            f"{r['p95_of_raw']:.1f} {_met(r['p95_of_raw'] <= GOAL_P95_OF_RAW)}",
            f"{r['calls_of_raw']:.2f} {_met(r['calls_of_raw'] >= GOAL_CALLS_OF_RAW)}",
            of_none, ray)
    console.print(ratios)
