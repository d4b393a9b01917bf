"""``phx chaos``: the Jepsen-style checkers on a local cluster, for as long as you like.

Real node processes on loopback; the nemesis kills, pauses, gracefully restarts, rolls
and isolates nodes (isolation needs root and iptables) while clients either add to
counters (``--workload counter``: every acknowledged write must be present exactly once,
see :mod:`phoenix_cluster.testing.chaos`) or read, write and compare-and-set registers
(``--workload register``: every key's history must be linearizable, see
:mod:`phoenix_cluster.testing.register`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Callable

import click

__all__ = ["chaos"]

SHOWN_KEYS = 40
"""Register keys listed one per line in the text report; more go to ``--json``."""


def _faults(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    from ..testing.chaos import FAULTS

    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        raise click.BadParameter(f"choose from {','.join(FAULTS)}, got {value!r}")
    if kinds == ("isolate",):
        from ..testing import LocalCluster

        if (why := LocalCluster.network_faults_unavailable()) is not None:
            raise click.BadParameter(f"isolate is unavailable here: {why}")
    return kinds


@click.command()
@click.option("--workload", type=click.Choice(["counter", "register"]), default="counter",
              show_default=True,
              help="counter: adds to counters, checked for lost, phantom and duplicate "
                   "items; register: read / write / compare-and-set, checked for "
                   "linearizability.")
@click.option("--minutes", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="How long the nemesis strikes.")
@click.option("--seed", type=int, default=None,
              help="Seed of every random choice (printed, so a run can be repeated).")
@click.option("--nodes", type=click.IntRange(3, 9), default=3, show_default=True)
@click.option("--keys", type=click.IntRange(1, 10_000), default=None,
              help="Counters (default 24), or registers in use at a time (default 4).")
@click.option("--workers", type=click.IntRange(1, 1_000), default=None,
              help="Concurrent clients (default 8 for counters, 15 for registers).")
@click.option("--ops-per-key", type=click.IntRange(10, 100_000), default=1_000,
              show_default=True,
              help="register: operations on a key before a fresh key replaces it "
                   "(bounds the linearizability search per key).")
@click.option("--faults", default="kill,pause,restart,roll,isolate", show_default=True,
              callback=_faults,
              help="What the nemesis does, comma-separated (isolate only as root with "
                   "iptables; left out otherwise).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Nodes keep their replicas here (restarts reload them).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as one JSON object at the end.")
def chaos(workload: str, minutes: float, seed: int | None, nodes: int, keys: int | None,
          workers: int | None, ops_per_key: int, faults: tuple[str, ...],
          data_dir: str | None, as_json: bool) -> None:
    """Strike a local cluster with faults (kill -9, SIGSTOP, SIGTERM restarts, rolls of
    every node, isolation) under a workload, and check what the clients saw.

    \b
    Exit codes:
      0  every check holds
      1  a violation: a lost, phantom or duplicate write, a key that is not
         linearizable, or a key that never answered after the heal (each is printed)
      2  bad usage
      3  register: no violation found, but the search of some key ran out of steps
         (undecided; use a smaller --ops-per-key)
    """
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
    started = time.monotonic()

    def say(text: str) -> None:
        click.echo(f"[{time.monotonic() - started:7.1f}s] {text}", err=as_json)

    if workload == "register":
        _register(seed, minutes, nodes, keys or 4, workers or 15, ops_per_key, faults,
                  data_dir, as_json, say)
    else:
        _counter(seed, minutes, nodes, keys or 24, workers or 8, faults, data_dir, as_json,
                 say)


def _counter(seed: int, minutes: float, nodes: int, keys: int, workers: int,
             faults: tuple[str, ...], data_dir: str | None, as_json: bool,
             say: Callable[[str], None]) -> None:
    from ..testing.chaos import run_chaos

    say(f"seed {seed}: {nodes} nodes, {keys} counters, {workers} writers, "
        f"{minutes:g} minutes, faults {','.join(faults)}")
    report = asyncio.run(run_chaos(seconds=minutes * 60, seed=seed, nodes=nodes, keys=keys,
                                   workers=workers, data_dir=data_dir, faults=faults,
                                   say=say))
    if as_json:
        click.echo(json.dumps({"workload": "counter", "ok": report.ok,
                               **dataclasses.asdict(report)}))
        if not report.ok:
            raise SystemExit(1)
        return
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


def _register(seed: int, minutes: float, nodes: int, keys: int, workers: int,
              ops_per_key: int, faults: tuple[str, ...], data_dir: str | None,
              as_json: bool, say: Callable[[str], None]) -> None:
    from ..testing.register import run_register

    say(f"seed {seed}: {nodes} nodes, {keys} registers at a time ({ops_per_key:,} "
        f"operations each), {workers} clients, {minutes:g} minutes, "
        f"faults {','.join(faults)}")
    report = asyncio.run(run_register(seconds=minutes * 60, seed=seed, nodes=nodes,
                                      keys=keys, clients=workers, ops_per_key=ops_per_key,
                                      faults=faults, data_dir=data_dir, say=say))
    code = 1 if report.violations else 3 if report.undecided else 0
    if as_json:
        click.echo(json.dumps(report.to_json()))
        if code:
            raise SystemExit(code)
        return
    counts = report.counts
    say(f"operations: {sum(counts.values()):,}: {counts['ok']:,} ok, {counts['fail']:,} "
        f"failed definitely, {counts['info']:,} indefinite "
        f"({report.indefinite_share:.2%}); faults: {len(report.faults)}; acknowledged "
        f"writes lost: {sum(report.lost.values())}; {len(report.results)} keys checked in "
        f"{report.check_seconds:.1f} s")
    for note in report.unhealed:
        click.echo(f"availability: {note}")
    for n, (key, result) in enumerate(report.results.items()):
        verdict = {True: "linearizable", False: "NOT linearizable",
                   None: "undecided"}[result.linearizable]
        if n < SHOWN_KEYS or result.linearizable is not True:
            c = result.counts
            click.echo(f"key {key}: {verdict} ({c['ok']} ok, {c['fail']} fail, "
                       f"{c['info']} info)")
    hidden = sum(1 for n, r in enumerate(report.results.values())
                 if n >= SHOWN_KEYS and r.linearizable is True)
    if hidden:
        click.echo(f"... and {hidden} more keys, all linearizable (--json lists them)")
    for violation in report.violations:
        click.echo(f"VIOLATION: {violation}")
    for key in report.undecided:
        click.echo(f"UNDECIDED: {key}: {report.results[key].explanation}")
    if code:
        raise SystemExit(code)
    click.echo(f"result: OK, every key linearizable (seed {seed})")
