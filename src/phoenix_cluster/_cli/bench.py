"""``phx bench``: measure Phoenix on this machine.

Only the command definitions live here; the measuring code (``bench_local.py``,
``bench_cluster.py``, ``bench_remote.py``, ``bench_membership.py``) is imported when a
benchmark actually runs, so ``phx --help`` stays fast. Each of those modules offers
``print_report(results)`` and ``save_json(results, path)`` (``bench_remote_report.py`` for
``bench_remote.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from .._foundation.extras import require_extra

if TYPE_CHECKING:
    from .bench_local import LoopName

__all__ = ["bench"]

Progress = Callable[[str], None]

_json_option = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also save the figures and the machine description as JSON to this file.",
)


_F = TypeVar("_F", bound=Callable[..., Any])


def _quick_option(
    help: str = "Shrink every size about tenfold (a smoke run).",
) -> Callable[[_F], _F]:
    return click.option("--quick", is_flag=True, help=help)


def _loop_option(help: str) -> Callable[[_F], _F]:
    return click.option("--loop", type=click.Choice(["auto", "uvloop", "asyncio"]),
                        default="auto", show_default=True, help=help)


def _measure(module: Any, run: Callable[[Progress], Any], json_path: Path | None) -> None:
    """Run a benchmark with progress lines on stderr, print its report, save its JSON."""
    from rich.console import Console

    console = Console(stderr=True)

    def progress(text: str) -> None:
        console.print(f"[dim]measuring {text}…[/]")

    try:
        results = run(progress)
    except ImportError as exc:
        raise click.ClickException(f"cannot use the requested event loop: {exc}") from exc
    module.print_report(results)
    if json_path is not None:
        module.save_json(results, json_path)
        console.print(f"saved {json_path}")


@click.group()
def bench() -> None:
    """Measure Phoenix on this machine (see docs/benchmarks.md).

    Needs the ``bench`` extra: pip install 'phoenix-cluster[bench]'.
    """
    require_extra("bench", "phx bench")


@bench.command("local")
@_json_option
@_quick_option()
@_loop_option("Event loop to measure with; auto uses uvloop when it is installed.")
def local(json_path: Path | None, quick: bool, loop: str) -> None:
    """Single-node figures: call latency and throughput, casts, activations, memory.

    Every measurement runs on a fresh node (memory ones in a fresh process). The full
    run takes about a minute; --quick a few seconds.
    """
    from . import bench_local

    _measure(bench_local, lambda progress: bench_local.run_local(
        quick=quick, loop=cast("LoopName", loop), progress=progress), json_path)


@bench.command("cluster")
@_json_option
@_quick_option()
@_loop_option("Event loop of the measuring client; asyncio also keeps the nodes off uvloop.")
def cluster(json_path: Path | None, quick: bool, loop: str) -> None:
    """Cross-node figures: call latency, pipelined calls and casts over loopback TCP.

    Starts real node processes on 127.0.0.1 (a fresh cluster per measurement) and
    measures from a client node in this process. The full run takes about a minute;
    --quick a few seconds.
    """
    from . import bench_cluster

    _measure(bench_cluster, lambda progress: bench_cluster.run_cluster(
        quick=quick, loop=cast("LoopName", loop), progress=progress), json_path)


@bench.command("remote")
@_json_option
@_quick_option()
@click.option(
    "--transport",
    type=click.Choice(["tcp", "http2", "quic", "all"]),
    default="all",
    show_default=True,
    help="Transport between client and node; all measures tcp, http2 and quic in turn.",
)
def remote(json_path: Path | None, quick: bool, transport: str) -> None:
    """Remote calls per transport, next to a raw asyncio baseline with the same frames.

    Starts a real node process on 127.0.0.1 per measurement and measures from a client
    node in this process: call p50/p95/p99 with one call in flight, calls/s with 1, 16
    and 256 in flight, casts/s. The full run takes about a minute; --quick seconds.
    """
    from . import bench_remote, bench_remote_report

    chosen = bench_remote.TRANSPORTS if transport == "all" else (transport,)
    _measure(bench_remote_report, lambda progress: bench_remote.run_remote(
        transports=cast("tuple[bench_remote.TransportName, ...]", chosen),
        quick=quick, progress=progress), json_path)


@bench.command("compare")
@_json_option
@_quick_option(help="A tenth of the sizes and one round (a smoke run).")
@click.option("--rounds", type=click.IntRange(1, 20), default=None,
              help="Rounds to take the medians over [default: 3; 1 with --quick].")
@_loop_option("Event loop of the client; asyncio also keeps the nodes and the baseline off uvloop.")
def compare(json_path: Path | None, quick: bool, rounds: int | None, loop: str) -> None:
    """Phoenix side by side with the raw asyncio baseline (and Ray when importable).

    In one run: bare request/response frames over loopback TCP; a quorum kind (the
    default durability) and an unreplicated kind called from a client node on a 1-node
    and on a 3-node cluster; Ray actors if ray is installed. Each gets p50/p95 of
    sequential calls and calls/s with 256 in flight; prints medians of the rounds with
    their spread, and the ratios. A full run takes a few minutes; --quick under one.
    """
    from . import bench_compare

    _measure(bench_compare, lambda progress: bench_compare.run_compare(
        quick=quick, rounds=rounds, loop=cast("LoopName", loop), progress=progress),
        json_path)


@bench.command("agents")
@_json_option
@_quick_option()
def agents(json_path: Path | None, quick: bool) -> None:
    """Distributed-agent figures: routed calls, migrations, a join's rebalancing.

    Starts a real 3-member cluster on loopback and measures from a client node in this
    process. The full run takes about a minute; --quick a few seconds.
    """
    from . import bench_placement

    _measure(bench_placement, lambda progress: bench_placement.run_agents(
        quick=quick, progress=progress), json_path)


@bench.command("replication")
@_json_option
@_quick_option()
def replication(json_path: Path | None, quick: bool) -> None:
    """Replication figures: update latency and throughput per durability, failover.

    Starts a real 3-member cluster on loopback (replication factor 3) and measures from a
    client node in this process: quorum / async / none update latency, updates/s per node
    with 100 callers, bytes and time per migration, then kills a member with SIGKILL and
    times the failover and the recovery of its agents, checking that no acknowledged write
    was lost. The full run takes about a minute; --quick a few seconds.
    """
    from . import bench_replication

    _measure(bench_replication, lambda progress: bench_replication.run_replication(
        quick=quick, progress=progress), json_path)


@bench.command("roll")
@_json_option
@click.option("--nodes", type=click.IntRange(3, 9), default=3, show_default=True)
@click.option("--rolls", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many times every node is restarted in turn.")
@click.option("--data-dir", "durable", is_flag=True,
              help="Each node keeps its replicas in a data_dir (a temporary directory).")
@click.option("--keys", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--workers", type=click.IntRange(1, 1_000), default=8, show_default=True,
              help="Concurrent writers in the client.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--upgrade", is_flag=True, help="Each roll is a rolling upgrade: nodes restart "
              "with the next --app-version, so agents move to the newest members.")
def roll(json_path: Path | None, nodes: int, rolls: int, durable: bool, keys: int,
         workers: int, seed: int, upgrade: bool) -> None:
    """Rolling restarts under load: acknowledged writes, lost, failed calls, durations.

    Each node in turn gets SIGTERM, is started again at once under the same name and
    address, and the next one is taken when it prints READY. Exits 1 if any
    acknowledged write was lost or any other check failed.
    """
    from . import bench_roll

    results = bench_roll.run_roll_bench(nodes=nodes, rolls=rolls, durable=durable,
                                        keys=keys, workers=workers, seed=seed,
                                        upgrade=upgrade)
    bench_roll.print_report(results)
    if json_path is not None:
        bench_roll.save_json(results, json_path)
    if results["violations"]:
        raise SystemExit(1)


@bench.command("registry")
@_json_option
@_quick_option()
@_loop_option("Event loop of the measuring client (the nodes run phx node's, uvloop).")
def registry(json_path: Path | None, quick: bool, loop: str) -> None:
    """Registry and pub/sub figures: registrations, lookups, fan-out, memory per name.

    Starts a real 3-member cluster on loopback and measures from a client node in this
    process, with unreplicated agent calls as the baseline of the same run; memory is
    measured in a fresh process. The full run takes about a minute; --quick a few seconds.
    """
    from . import bench_registry

    _measure(bench_registry, lambda progress: bench_registry.run_registry(
        quick=quick, loop=cast("LoopName", loop), progress=progress), json_path)


@bench.command("membership")
@_json_option
@_quick_option("2 trials, 10 s of load, one seed per size, simulated 10 and 100 members.")
def membership(json_path: Path | None, quick: bool) -> None:
    """Membership figures: cold start, failure detection, false positives, SWIM rounds.

    Starts real node processes on loopback (a fresh 5-node cluster per trial), kills one
    per trial, loads every core with busy loops, then simulates 10 to 1,000 members
    in-process. The full run takes about four minutes; --quick about one.
    """
    from . import bench_membership

    _measure(bench_membership, lambda progress: bench_membership.run_membership(
        quick=quick, progress=progress), json_path)


@bench.command("startup")
@_json_option
@_quick_option("3 node starts instead of 10.")
def startup(json_path: Path | None, quick: bool) -> None:
    """Startup figures: READY to the first served call on a 1-node cluster.

    Starts one real node process per trial, seeded with its own address, and calls it
    from a client node in this process as soon as it prints READY. Ten trials take about
    ten seconds; --quick three.
    """
    from . import bench_startup

    _measure(bench_startup, lambda progress: bench_startup.run_startup(
        quick=quick, progress=progress), json_path)
