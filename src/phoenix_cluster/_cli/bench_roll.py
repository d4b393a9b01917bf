"""``phx bench roll``: rolling restarts under load, counting what was lost.

Starts ``--nodes`` real node processes on loopback, drives counters from a client, and
rolls the cluster ``--rolls`` times: each node in turn gets SIGTERM (a graceful leave),
is started again at once under the same name and address, and the next node is taken as
soon as the restarted one prints READY (what a StatefulSet rolling update waits for).
Prints acknowledged writes, acknowledged writes lost (must be 0), calls that failed
during the rolls (by error type) and the duration of each roll
(:mod:`phoenix_cluster.testing.roll`). Imported only when the command runs.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from typing import Any

import click

from ..testing.roll import RollReport, run_rolls
from .bench_local import save_json

__all__ = ["print_report", "run_roll_bench", "save_json"]


def run_roll_bench(*, nodes: int, rolls: int, durable: bool, keys: int, workers: int,
                   seed: int, upgrade: bool = False) -> dict[str, Any]:
    started = time.monotonic()

    def say(text: str) -> None:
        click.echo(f"[{time.monotonic() - started:7.1f}s] {text}", err=True)

    report = asyncio.run(run_rolls(nodes=nodes, rolls=rolls, durable=durable, keys=keys,
                                   workers=workers, seed=seed, upgrade=upgrade, say=say))
    return _results(report, seed)


def _results(report: RollReport, seed: int) -> dict[str, Any]:
    durations = report.roll_seconds
    return {
        "command": "phx bench roll",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "nodes": report.nodes,
        "rolls": report.rolls,
        "data_dir": report.durable,
        "upgrade_to": report.app_version,
        "seed": seed,
        "acknowledged": report.counts["ok"],
        "unknown": report.counts["unknown"],
        "failed": report.counts["failed"],
        "lost": report.lost,
        "failed_during_rolls": report.failed_during_rolls,
        "errors": report.errors,
        "roll_seconds": durations,
        "roll_seconds_median": statistics.median(durations) if durations else 0.0,
        "violations": report.violations,
    }


def print_report(results: dict[str, Any]) -> None:
    storage = "data_dir" if results["data_dir"] else "memory only"
    echo = click.echo
    kind = f"upgrades to {results['upgrade_to']}" if results.get("upgrade_to") else "rolls"
    echo(f"phx bench roll: {results['nodes']} nodes ({storage}), {results['rolls']} {kind}, "
         f"{results['cpu_count']} CPUs, CPython {results['python']}, seed {results['seed']}")
    durations = results["roll_seconds"]
    if durations:
        echo(f"  roll duration      median {results['roll_seconds_median']:.1f} s "
             f"(min {min(durations):.1f}, max {max(durations):.1f})")
    echo(f"  acknowledged       {results['acknowledged']:,}")
    echo(f"  lost               {results['lost']:,}")
    errors = ", ".join(f"{n} {name}" for name, n in sorted(results["errors"].items()))
    echo(f"  failed during roll {results['failed_during_rolls']:,}"
         + (f" ({errors})" if errors else ""))
    echo(f"  outcome unknown    {results['unknown']:,} (indefinite errors, all runs)")
    for violation in results["violations"]:
        echo(f"  VIOLATION: {violation}")
    echo("result: " + ("OK" if not results["violations"] else "FAILED"))
