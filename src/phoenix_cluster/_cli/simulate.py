"""``phx simulate``: the deterministic whole-system simulation (docs/simulation.md)."""

from __future__ import annotations

import json
import random
import sys
from typing import IO

import click

__all__ = ["simulate"]


def _plan(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
    from ..testing.simulation import DEFAULT_FAULTS, FaultPlan

    try:
        return FaultPlan.parse(DEFAULT_FAULTS if value is None else value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--nodes", type=click.IntRange(3, 100_000), default=100, show_default=True,
              help="Members of the membership-and-ring layer.")
@click.option("--stack-nodes", type=click.IntRange(0, 64), default=None,
              help="Whole nodes (membership, ring, placement, replication, agents) under "
                   "the workload; 0 runs the membership layer alone. Default: "
                   "min(4, nodes).")
@click.option("--seed", type=click.IntRange(0), default=None,
              help="Seed of the run (default: a random one, printed).")
@click.option("--runs", type=click.IntRange(1), default=1, show_default=True,
              help="Run seeds SEED, SEED+1, ... (a soak); one report per run.")
@click.option("--faults", default=None, callback=_plan, metavar="PLAN",
              help="Comma-separated: loss=P, dup=P, delay=LO-HI (ms), partition, pause, "
                   "crash, crash-disk, overlap (whole nodes: faults back to back), or "
                   "none. Default: "
                   "loss=0.01,dup=0.01,delay=0.5-30,partition,pause,crash,crash-disk.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, writable=True),
              default=None, help="Write the event trace to this file (last run's).")
@click.option("--json", "as_json", is_flag=True,
              help="Print each report as one JSON object (one line per run).")
def simulate(nodes: int, stack_nodes: int | None, seed: int | None, runs: int,
             faults: object, trace_path: str | None, as_json: bool) -> None:
    """Run every node of a cluster in this process on a simulated network and clock,
    driven by one seed, and check what happened.

    The membership-and-ring layer runs at --nodes (a join, a crash, then the fault
    plan and a heal); whole nodes run at --stack-nodes under a workload of appends
    whose every acknowledged write is checked. The same seed gives the same
    trace_sha256. A failing run prints its seed and the command that replays it.

    \b
    Exit codes:
      0  every run converged, lost no acknowledged write, duplicated no activation
      1  a run failed a check (its seed and replay command are printed on stderr)
      2  bad usage (an unknown fault, a number out of range)
    """
    from ..testing.simulation import DEFAULT_FAULTS, FaultPlan
    from ..testing.simulation import simulate as run

    plan = faults if isinstance(faults, FaultPlan) else FaultPlan.parse(DEFAULT_FAULTS)
    stack = min(4, nodes) if stack_nodes is None else stack_nodes
    if stack in (1, 2):
        raise click.BadParameter("must be 0 or at least 3", param_hint="--stack-nodes")
    first = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
    failed = False
    for run_seed in range(first, first + runs):
        out: IO[str] | None = None
        if trace_path is not None and run_seed == first + runs - 1:
            out = open(trace_path, "w")  # noqa: SIM115 - closed below
        try:
            report = run(nodes, run_seed, plan, stack_nodes=stack, trace_out=out)
        finally:
            if out is not None:
                out.close()
        data = report.as_dict()
        if as_json:
            click.echo(json.dumps(data, sort_keys=True))
        else:
            _print_text(data)
        if not report.ok:
            failed = True
            click.echo(f"phx simulate: seed {run_seed} FAILED: {'; '.join(report.failures)}"
                       f"\nreplay: {data['replay']}", err=True)
    sys.exit(1 if failed else 0)


def _print_text(data: dict[str, object]) -> None:
    m = data["membership"]
    s = data["stack"]
    assert isinstance(m, dict)
    click.echo(f"seed {data['seed']}: {data['nodes']} members, faults {data['faults']}")
    click.echo(f"  membership: join {m['join_rounds']} rounds, crash {m['crash_rounds']}"
               f" rounds, heal {m['convergence_rounds']} rounds;"
               f" {m['gossip_per_node_round']} datagrams per node per round;"
               f" {m['sim_seconds_per_wall_second']} simulated s per wall s")
    if isinstance(s, dict):
        click.echo(f"  {s['nodes']} whole nodes: {s['acknowledged']} writes acknowledged,"
                   f" {s['lost_acked_writes']} lost, {s['duplicate_writes']} applied twice,"
                   f" {s['duplicate_activations']} duplicate activations; settled"
                   f" {s['settle_rounds']} rounds after the heal")
    click.echo(f"  trace {data['trace_sha256']} ({data['trace_events']} events),"
               f" {data['sim_seconds_per_wall_second']} simulated s per wall s:"
               f" {'ok' if data['ok'] else 'FAILED'}")
