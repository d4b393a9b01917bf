"""CPU per quorum update against an unreplicated one, all nodes in one process.

Starts a 3-member :class:`~phoenix_cluster.testing.memory.MemoryCluster` and a client
node in this process, on the in-memory network (no sockets, no system calls), with
the collector tuned as ``phx node`` tunes it. Per round, 256 callers on distinct keys
make ``--updates`` state-changing calls to a ``durability="quorum"`` kind, then to a
``durability="none"`` kind with the same body, and the CPU time of the whole process
(``time.process_time``: the three nodes and the client together) is divided by the
updates. Because nothing else runs in the process, CPU per update says what an update
costs whatever the machine's load, and its ratio between the two kinds is the ceiling
of the quorum/none rate ratio that ``phx bench compare`` measures between processes.

Run: ``PYTHONPATH=src python benchmarks/quorum_cpu.py --rounds 3``; ``--profile
out.txt`` writes a cProfile summary of the quorum updates of the last round (cProfile
inflates cheap calls; compare profiles, not absolute figures).

CPU time still moves with what else runs on the machine (caches and cores are shared).
The instructions per update do not: under valgrind,
``valgrind --tool=callgrind --instr-atstart=no python benchmarks/quorum_cpu.py
--callgrind --rounds 2 --updates 2560`` counts only the updates (instrumentation is
switched on around each phase with ``callgrind_control``) and runs the loop in virtual
time (``VirtualTimeLoop``: valgrind's slowness must fire no timeout), so the figures
are of the stdlib loop, not uvloop. Instructions leave out memory stalls: compare them
beside the CPU time, not instead of it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import statistics
import subprocess
import time
from pathlib import Path

import phoenix_cluster as phx
from phoenix_cluster._cli.bench_local import loop_factory
from phoenix_cluster._foundation.gc_tuning import tune_for_serving
from phoenix_cluster.testing.memory import MemoryCluster, VirtualTimeLoop

IN_FLIGHT = 256


class QuorumCounter(phx.Agent, kind="cpu.quorum"):
    def __init__(self) -> None:
        self.n = 0

    async def add(self, by: int) -> int:
        self.n += by
        return self.n


class PlainCounter(phx.Agent, kind="cpu.none", durability="none"):
    def __init__(self) -> None:
        self.n = 0

    async def add(self, by: int) -> int:
        self.n += by
        return self.n


class Callgrind:
    """Counts the instructions of the updates when running under valgrind's callgrind
    (started with ``--instr-atstart=no``; its dumps are ``callgrind.out.<pid>.<n>``)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.dumps = 0

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True,
                       stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self._control("-z")
        self._control("-i", "on")

    def stop(self) -> int:
        """Instructions since :meth:`start`."""
        self._control("-i", "off")
        self._control("-d")
        self.dumps += 1
        dump = Path(f"callgrind.out.{self.pid}.{self.dumps}")
        for line in dump.read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
        raise RuntimeError(f"{dump} has no totals")


async def _updates(client: phx.Node, kind: type[phx.Agent], total: int,
                   profile: cProfile.Profile | None = None,
                   callgrind: Callgrind | None = None) -> tuple[float, float]:
    """(CPU µs per update, updates/s) of ``total`` updates from 256 callers; under
    ``callgrind``, (instructions per update, 0.0)."""
    refs = [client.ref(kind, f"k{i}") for i in range(IN_FLIGHT)]
    per = total // IN_FLIGHT

    async def caller(ref: phx.AgentRef) -> None:
        for _ in range(per):
            await ref.add(1)

    done = per * IN_FLIGHT
    if callgrind is not None:
        callgrind.start()
        await asyncio.gather(*(caller(r) for r in refs))
        return callgrind.stop() / done, 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    await asyncio.gather(*(caller(r) for r in refs))
    if profile is not None:
        profile.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / done * 1e6, done / wall


def _sent(cluster: MemoryCluster) -> tuple[int, int]:
    """Replication batches and items the members sent so far."""
    stats = [r.statistics() for n in cluster.nodes if (r := n._runtime.replicator) is not None]
    return sum(s.batches_sent for s in stats), sum(s.items_sent for s in stats)


async def main(rounds: int, updates: int, profile_to: str | None,
               quorum_only: bool, callgrind: Callgrind | None = None) -> str:
    """Print the figures of every round and their medians; returns the cProfile
    summary (empty without ``profile_to``)."""
    async with MemoryCluster(3) as cluster:
        client = await cluster.add("client", role="client")
        for kind in (QuorumCounter, PlainCounter):  # activate every key once
            await asyncio.gather(*(client.ref(kind, f"k{i}").add(0)
                                   for i in range(IN_FLIGHT)))
        tune_for_serving()
        seen: list[tuple[float, float, float, float]] = []
        summary = ""
        for r in range(rounds):
            profile = cProfile.Profile() if profile_to and r == rounds - 1 else None
            before = _sent(cluster)
            q_us, q_rate = await _updates(client, QuorumCounter, updates, profile, callgrind)
            batches, items = (a - b for a, b in zip(_sent(cluster), before, strict=True))
            n_us, n_rate = (await _updates(client, PlainCounter, updates, None, callgrind)
                            if not quorum_only else (q_us, q_rate))
            seen.append((q_us, n_us, q_rate, n_rate))
            if callgrind is not None:
                print(f"round {r + 1}: instructions per update quorum {q_us:,.0f}, none "
                      f"{n_us:,.0f} (ratio none/quorum {n_us / q_us:.3f})", flush=True)
                continue
            print(f"round {r + 1}: CPU per update quorum {q_us:6.1f} µs, none {n_us:5.1f} µs "
                  f"(ratio none/quorum {n_us / q_us:.2f}); {q_rate:7,.0f} and {n_rate:7,.0f} "
                  f"updates/s in one process; {batches / updates:.2f} replication batches "
                  f"and {items / updates:.2f} items per quorum update", flush=True)
            if profile is not None:
                out = io.StringIO()
                stats = pstats.Stats(profile, stream=out)
                stats.sort_stats("tottime").print_stats(40)
                stats.sort_stats("cumulative").print_stats(60)
                summary = out.getvalue()
        q_us, n_us, q_rate, n_rate = (statistics.median(x) for x in zip(*seen, strict=True))
        unit = "instructions" if callgrind is not None else "µs"
        print(f"median: quorum {q_us:.1f} {unit}, none {n_us:.1f} {unit} per update; "
              f"none/quorum {n_us / q_us:.2f}")
    gc.unfreeze()
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=25_600)
    parser.add_argument("--profile", metavar="FILE", default=None)
    parser.add_argument("--quorum-only", action="store_true",
                        help="skip the unreplicated kind (to sample the quorum path alone)")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions under valgrind --tool=callgrind "
                             "--instr-atstart=no (the loop runs in virtual time)")
    args = parser.parse_args()
    counter = Callgrind() if args.callgrind else None
    factory = VirtualTimeLoop if counter is not None else loop_factory(args.loop)[1]
    with asyncio.Runner(loop_factory=factory) as runner:
        profiled = runner.run(main(args.rounds, args.updates, args.profile, args.quorum_only,
                                   counter))
    if args.profile:
        Path(args.profile).write_text(profiled)
