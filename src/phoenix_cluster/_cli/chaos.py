"""``phx chaos``: the Jepsen-style checker on a local cluster, for as long as you like.

Real node processes on loopback; the nemesis kills, pauses, gracefully restarts, rolls
and isolates nodes (isolation needs root and iptables) while clients add to counters; at
the end every acknowledged write must be present exactly once (see
:mod:`phoenix_cluster.testing.chaos`).
"""

from __future__ import annotations

import asyncio
import random
import time

import click

__all__ = ["chaos"]


@click.command()
@click.option("--minutes", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="How long the nemesis strikes.")
@click.option("--seed", type=int, default=None,
              help="Seed of every random choice (printed, so a run can be repeated).")
@click.option("--nodes", type=click.IntRange(3, 9), default=3, show_default=True)
@click.option("--keys", type=click.IntRange(1, 10_000), default=24, show_default=True,
              help="Counter agents the clients write to.")
@click.option("--workers", type=click.IntRange(1, 1_000), default=8, show_default=True,
              help="Concurrent writers.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Nodes keep their replicas here (restarts reload them).")
def chaos(minutes: float, seed: int | None, nodes: int, keys: int, workers: int,
          data_dir: str | None) -> None:
    """Check that no acknowledged write is lost while nodes are killed, paused, restarted
    (SIGTERM, one node or a roll of all) and cut off.

    Exits 0 when every check holds, 1 on any violation (each is printed).
    """
    from ..testing.chaos import run_chaos

    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
    started = time.monotonic()

    def say(text: str) -> None:
        click.echo(f"[{time.monotonic() - started:7.1f}s] {text}")

    say(f"seed {seed}: {nodes} nodes, {keys} counters, {workers} writers, "
        f"{minutes:g} minutes")
    report = asyncio.run(run_chaos(seconds=minutes * 60, seed=seed, nodes=nodes, keys=keys,
                                   workers=workers, data_dir=data_dir, say=say))
    counts = report.counts
    say(f"operations: {counts['ok']:,} acknowledged, {counts['unknown']:,} unknown outcome, "
        f"{counts['failed']:,} failed definitely; faults: {len(report.faults)}")
    for note in report.unhealed:
        click.echo(f"availability: {note}")
    for violation in report.violations:
        click.echo(f"VIOLATION: {violation}")
    if not report.ok:
        raise SystemExit(1)
    click.echo(f"result: OK (seed {seed})")
