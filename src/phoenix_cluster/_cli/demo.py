"""``phx demo``: what Phoenix is for, in about half a minute.

By default: a three-node cluster on loopback (real processes), a workload of 10,000
agents from a client, one node killed and restarted, every acknowledged write verified
at the end (``demo_cluster.py``). ``--single`` runs the older single-node workload
(``demo_single.py``).

The heavy imports (rich, the cluster, the agents) happen when the command runs, so
``phx --help`` stays fast.
"""

from __future__ import annotations

import random
import sys

import click

from .._foundation.extras import require_extra

__all__ = ["demo"]


@click.command()
@click.option("--single", is_flag=True,
              help="Run the single-node workload (accounts and counters) instead.")
@click.option("--quick", is_flag=True,
              help="A short run for tests: 2,000 agents, 2 s phases (--single: 300 agents, 3 s).")
@click.option("--agents", type=click.IntRange(min=4), default=None,
              help="Agents in all [default: 10,000; 5,000 with --single].")
@click.option("--seconds", type=click.FloatRange(min=0.5), default=None,
              help="Seconds of steady workload before the kill and after the restart "
              "[default: 3].")
@click.option("--rate", type=click.IntRange(min=0), default=None,
              help="Operations per second offered; 0 = as fast as possible "
              "[default: 2,000; 20,000 with --single].")
@click.option("--workers", "--clients", "workers", type=click.IntRange(min=1), default=None,
              help="Concurrent workers sending writes [default: 100; 200 with --single].")
@click.option("--duration", type=click.FloatRange(min=0.5), default=20.0, show_default=True,
              help="With --single: seconds of workload before the final checks.")
@click.option("--forever", is_flag=True,
              help="Keep the workload running until Ctrl-C (then verify and exit).")
@click.option("--seed", type=int, default=None, help="Seed of the workers' random choices.")
def demo(single: bool, quick: bool, agents: int | None, seconds: float | None,
         rate: int | None, workers: int | None, duration: float, forever: bool,
         seed: int | None) -> None:
    """Run a three-node cluster on loopback with a live view, kill a node, bring it back.

    A client writes to 10,000 agents and records every acknowledged write. One node is
    killed (SIGKILL): the view shows it suspected, declared dead, its agents answering
    again from the survivors, then the node restarted and the agents rebalanced back to
    it. At the end every agent is read and the acknowledged writes are verified: each was
    committed to a majority of its agent's replicas before the reply, so none may be
    missing, the killed node's included. Exit status 0 when every one is present; 2 when
    the ``demo`` extra is not installed (pip install 'phoenix-cluster[demo]').
    """
    require_extra("demo", "phx demo")
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
    if single:
        from .demo_single import run_single

        ok = run_single(duration=3.0 if quick else duration,
                        agents=agents or (300 if quick else 5_000),
                        clients=workers or 200, rate=20_000 if rate is None else rate,
                        forever=forever, seed=seed)
    else:
        from .demo_cluster import ClusterDemoConfig, run_cluster

        ok = run_cluster(ClusterDemoConfig(
            agents=agents or (2_000 if quick else 10_000),
            seconds=seconds or (2.0 if quick else 3.0),
            rate=2_000 if rate is None else rate,
            workers=workers or 100,
            forever=forever,
            seed=seed,
            live=sys.stdout.isatty(),
        ))
    if not ok:
        sys.exit(1)
