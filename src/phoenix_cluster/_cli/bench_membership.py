"""The membership benchmarks behind ``phx bench membership``.

On real processes (:class:`~phoenix_cluster.testing.LocalCluster`: ``phx node`` processes
on loopback with the membership settings a plain ``phx node`` would use here, i.e. the
defaults plus any ``PHX_*`` variables or ``phoenix.toml``):

- **cold start**: a fresh 5-node cluster, from spawning the processes until every node
  sees every node alive (asked of each node over its connection, as
  :meth:`LocalCluster.wait_converged` does, every 50 ms); also until every process printed
  its READY line (interpreter start, imports, listening);
- **failure detection** after SIGKILL, per trial (5; ``quick`` 2), each on a fresh
  cluster: from ``kill`` until every survivor's member table shows the victim gone (dead)
  and nothing else suspect; reported as p50 and max over the trials;
- **recovery**, in the same trials: from ``kill`` until a client node has had an answer
  from every one of 200 keys (about a fifth of them lived on the victim and must be
  re-homed), retrying the keys still failing every 50 ms with a 1 s call timeout;
- **false positives under load**: a converged 5-node cluster while twice as many
  busy-loop processes as cores saturate the CPU for 60 s (``quick`` 10 s); counted from the node
  logs: "X is dead" lines about a node that is still running (false deaths), "is
  suspected" lines (suspicions, refuted ones included), "event loop lagged" lines
  (Lifeguard raising local health) and nodes that exited.

In-process, with :mod:`phoenix_cluster._membership.simulation` (the real
:class:`~phoenix_cluster._membership.swim.SwimProtocol` on a simulated network: 1 %
datagram loss, 0.5-3 ms latency, datagrams bounded at 1,400 bytes), the protocol periods
(rounds) to converge at 10, 100 and 1,000 members, median over seeds (3; ``quick``: one
seed, 10 and 100 members, since 1,000 simulated members take most of a quick run):

- **one join spreads**: a newcomer joins a converged, quiet cluster through one member;
  rounds until all ``n`` see it alive, by piggybacked gossip alone (push-pull is switched
  off so the figure is the epidemic's). SWIM's claim is O(log n): ``rounds / log2(n)``
  should stay flat;
- **cold start**: all ``n`` start at once, joining through one seed; rounds until every
  member sees every member alive (gossip and push-pull, as configured).

The verdicts and the tables are ``bench_membership_report.py``. This module is imported
only when ``phx bench membership`` runs; ``bench.py`` stays cheap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from phoenix_cluster._foundation.settings import load_settings
from phoenix_cluster._membership import simulation
from phoenix_cluster._membership.swim import SwimSettings
from phoenix_cluster.testing import LocalCluster

from .._node import Node
from .bench_agents import NODE_LOOP_ENV, BenchTarget
from .bench_local import loop_factory, machine_info, save_json
from .bench_membership_report import print_report, verdicts

__all__ = ["MembershipBenchSizes", "print_report", "run_membership", "save_json"]

_IMPORTS = ("phoenix_cluster._cli.bench_agents",)
_CONVERGE_TIMEOUT_S = 120.0
_BURN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"
_DEAD_RE = re.compile(r"membership (\S+): (\S+) is dead")
_SUSPECT_RE = re.compile(r"membership (\S+): (\S+) is suspected by")
_LAG_RE = re.compile(r"membership (\S+): event loop lagged")


@dataclasses.dataclass(frozen=True, slots=True)
class MembershipBenchSizes:
    """How much work each measurement does."""

    nodes: int = 5
    trials: int = 5
    keys: int = 200
    load_s: float = 60.0
    sim_members: tuple[int, ...] = (10, 100, 1_000)
    sim_seeds: int = 3
    sim_loss: float = 0.01

    @classmethod
    def quick(cls) -> MembershipBenchSizes:
        """Fewer trials, a shorter load, one seed per simulated size, no 1,000."""
        return cls(trials=2, load_s=10.0, sim_seeds=1, sim_members=(10, 100))


# --------------------------------------------------------------------------- helpers


def _stats(samples: list[float]) -> dict[str, Any]:
    return {
        "p50_s": statistics.median(samples),
        "max_s": max(samples),
        "min_s": min(samples),
        "samples_s": [round(s, 4) for s in samples],
    }


def _cluster(sizes: MembershipBenchSizes) -> LocalCluster:
    return LocalCluster(nodes=sizes.nodes, imports=_IMPORTS, env={NODE_LOOP_ENV: "auto"},
                        startup_timeout_s=60.0)


async def _start(cluster: LocalCluster) -> tuple[float, float]:
    """Spawn every node; seconds until all are READY, and until all see all alive."""
    started = time.perf_counter()
    await asyncio.gather(*(cluster.start_node(n.index) for n in cluster.nodes))
    ready = time.perf_counter() - started
    await cluster.wait_converged(timeout_s=_CONVERGE_TIMEOUT_S)
    return ready, time.perf_counter() - started


async def _recover(client: Node, keys: list[str]) -> None:
    """Until every key has answered a call once; failing keys retried every 50 ms."""
    pending = list(keys)
    while pending:
        results = await asyncio.gather(
            *(client.ref(BenchTarget, k).options(timeout=1.0).inc(0) for k in pending),
            return_exceptions=True,
        )
        pending = [k for k, r in zip(pending, results, strict=True)
                   if isinstance(r, BaseException)]
        if pending:
            await asyncio.sleep(0.05)


async def _trial(sizes: MembershipBenchSizes) -> dict[str, float]:
    """One cold start, one SIGKILL: start, detection and recovery times."""
    cluster = _cluster(sizes)
    try:
        ready_s, converged_s = await _start(cluster)
        client = await cluster.client()
        keys = [f"key-{i}" for i in range(sizes.keys)]
        await _recover(client, keys)  # every key answers (and is active) before the kill
        hosts = await asyncio.gather(*(client.ref(BenchTarget, k).where() for k in keys))
        victim = sizes.nodes - 1
        on_victim = sum(1 for h in hosts if h["node"] == cluster.nodes[victim].name)
        cluster.kill(victim)
        killed = time.perf_counter()

        async def detect() -> float:
            await cluster.wait(victim)
            await cluster.wait_converged(timeout_s=_CONVERGE_TIMEOUT_S)
            return time.perf_counter() - killed

        async def recover() -> float:
            await _recover(client, keys)
            return time.perf_counter() - killed

        async with asyncio.timeout(_CONVERGE_TIMEOUT_S):
            detection_s, recovery_s = await asyncio.gather(detect(), recover())
        dead_lines = sum(f"{cluster.nodes[victim].name} is dead" in n.log()
                         for n in cluster.nodes[:victim])
    finally:
        await cluster.aclose()
    return {"ready_s": ready_s, "cold_start_s": converged_s, "detection_s": detection_s,
            "recovery_s": recovery_s, "keys_on_victim": float(on_victim),
            "survivors_logging_dead": float(dead_lines)}


async def _under_load(sizes: MembershipBenchSizes) -> dict[str, Any]:
    """A converged cluster while busy loops saturate every core; count false alarms."""
    burners_n = 2 * (os.cpu_count() or 1)
    cluster = _cluster(sizes)
    try:
        await _start(cluster)
        offsets = [len(n.log()) for n in cluster.nodes]
        burners = [await asyncio.create_subprocess_exec(
                       sys.executable, "-c", _BURN.format(s=sizes.load_s),
                       stdin=asyncio.subprocess.DEVNULL)
                   for _ in range(burners_n)]
        try:
            await asyncio.sleep(sizes.load_s)
        finally:
            for burner in burners:
                if burner.returncode is None:
                    burner.kill()
                await burner.wait()
        running = {n.name for n in cluster.nodes if n.running}
        converged_after = True
        try:
            await cluster.wait_converged(timeout_s=30.0)
        except TimeoutError:
            converged_after = False
        false_deaths: list[str] = []
        suspicions = lag_events = 0
        for node, offset in zip(cluster.nodes, offsets, strict=True):
            for line in node.log()[offset:].splitlines():
                if (m := _DEAD_RE.search(line)) is not None and m.group(2) in running:
                    false_deaths.append(f"{m.group(1)} declared {m.group(2)} dead")
                if _SUSPECT_RE.search(line):
                    suspicions += 1
                if _LAG_RE.search(line):
                    lag_events += 1
    finally:
        await cluster.aclose()
    return {
        "seconds": sizes.load_s,
        "burners": burners_n,
        "false_deaths": len(false_deaths),
        "false_death_lines": false_deaths,
        "suspicions": suspicions,
        "loop_lag_events": lag_events,
        "nodes_exited": sizes.nodes - len(running),
        "converged_after": converged_after,
    }


def _simulate(sizes: MembershipBenchSizes, swim: SwimSettings,
              say: Callable[[str], None]) -> dict[str, Any]:
    gossip_only = dataclasses.replace(swim, sync_interval_s=1e9)
    out: dict[str, Any] = {
        "loss": sizes.sim_loss,
        "latency_ms": [0.5, 3.0],
        "max_datagram_bytes": swim.max_datagram_bytes,
        "seeds": sizes.sim_seeds,
    }
    for name, fn, settings in (("join_spread", simulation.join_spread, gossip_only),
                               ("cold_start", simulation.cold_start, swim)):
        per_size: dict[str, Any] = {}
        for n in sizes.sim_members:
            say(f"simulated {name.replace('_', ' ')}: {n:,} members, "
                f"{sizes.sim_seeds} seed(s)")
            runs = [fn(n, settings, seed=seed, loss=sizes.sim_loss)
                    for seed in range(1, sizes.sim_seeds + 1)]
            rounds = [r.rounds for r in runs if r.rounds is not None]
            p50 = statistics.median(rounds) if len(rounds) == len(runs) else None
            per_size[str(n)] = {
                "rounds_p50": p50,
                "rounds_per_log2_n": None if p50 is None else p50 / math.log2(n),
                "rounds": [None if r.rounds is None else round(r.rounds, 2) for r in runs],
                "max_datagram_bytes": max(r.max_datagram_bytes for r in runs),
                "datagrams": [r.datagrams for r in runs],
                "syncs": [r.syncs for r in runs],
                "suspicions": [r.suspicions for r in runs],
                "false_deaths": [r.false_deaths for r in runs],
            }
        out[name] = per_size
    return out


# --------------------------------------------------------------------------- driver


def run_membership(
    *,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every membership measurement and return the results as JSON-ready data.

    Args:
        quick: 2 trials instead of 5, 10 s of load instead of 60, one seed per size,
            simulated sizes 10 and 100 only.
        progress: called with a short description before each measurement.
    """
    sizes = MembershipBenchSizes.quick() if quick else MembershipBenchSizes()
    say = progress or (lambda _text: None)
    loop_name, factory = loop_factory("auto")
    node_settings = load_settings({})
    swim = SwimSettings(probe_interval_s=node_settings.probe_interval_s,
                        probe_timeout_s=node_settings.probe_timeout_s,
                        suspicion_mult=node_settings.suspicion_mult)
    results: dict[str, Any] = {
        "machine": machine_info(loop_name, quick),
        "sizes": dataclasses.asdict(sizes),
        "settings": {
            "probe_interval_s": swim.probe_interval_s,
            "probe_timeout_s": swim.probe_timeout_s,
            "suspicion_mult": swim.suspicion_mult,
            "indirect_probes": swim.indirect_probes,
            "sync_interval_s": swim.sync_interval_s,
            "retransmit_mult": swim.retransmit_mult,
        },
    }
    results["machine"]["nodes"] = "phx node processes on 127.0.0.x (LocalCluster)"

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    trials: list[dict[str, float]] = []
    for i in range(sizes.trials):
        say(f"trial {i + 1} of {sizes.trials}: cold start of {sizes.nodes} nodes, "
            "SIGKILL one, detection and recovery")
        trials.append(run(_trial(sizes)))
    results["trials"] = trials
    for key in ("ready_s", "cold_start_s", "detection_s", "recovery_s"):
        results[key.removesuffix("_s")] = _stats([t[key] for t in trials])

    say(f"false positives: {sizes.load_s:.0f} s of full CPU load on a "
        f"{sizes.nodes}-node cluster")
    results["load"] = run(_under_load(sizes))

    results["simulation"] = _simulate(sizes, swim, say)
    results["verdicts"] = verdicts(results)
    return results
