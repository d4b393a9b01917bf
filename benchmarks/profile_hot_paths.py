"""Profiles of the hot paths (a remote call, a quorum commit, the registry) under py-spy.

Starts a ``LocalCluster`` (real ``phx node`` processes on loopback importing the bench
agents) and a client node in this process; 256 concurrent callers on distinct keys call
``inc`` on a kind for ``--seconds`` while ``py-spy record`` samples every node process
and this one. Each profile is summarised as the functions with the most samples, by
self time and by inclusive time, in ``phoenix_cluster`` and overall.

Run: ``PYTHONPATH=src python benchmarks/profile_hot_paths.py --kind quorum --nodes 3``
(the summaries in ``docs/design/performance.md`` come from it); ``--workload registry
--in-flight 64`` profiles registrations and uncached lookups instead. Needs ``py-spy`` on the
PATH or next to the Python executable.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import phoenix_cluster as phx
from phoenix_cluster._cli.bench_agents import BenchQuorum, BenchVolatile
from phoenix_cluster.testing import LocalCluster

KINDS: dict[str, type[phx.Agent]] = {"quorum": BenchQuorum, "none": BenchVolatile}


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return found


def _summarise(raw: Path, top: int, label: str) -> None:
    """Self and inclusive sample counts per function, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" if " (" in f else f for f in stack.split(";")]
        total += count
        if frames:
            own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    print(f"\n== {label}: {total} samples")
    print("-- self")
    for name, n in own.most_common(top):
        print(f"{100 * n / total:5.1f} %  {name}")
    print("-- inclusive (phoenix_cluster and the loop)")
    shown = 0
    for name, n in inclusive.most_common():
        if shown >= top:
            break
        if "<module>" in name or name.startswith(("run (", "_run_once", "run_forever")):
            continue
        print(f"{100 * n / total:5.1f} %  {name}")
        shown += 1


def _start_spies(spy: str, pids: dict[str, int], seconds: int,
                 out: Path) -> dict[str, subprocess.Popen[bytes]]:
    """One ``py-spy record`` per process, writing collapsed stacks to ``out``."""
    return {
        name: subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "500",
             "--format", "raw", "--nonblocking", "--output", str(out / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, pid in pids.items()
    }


async def main(args: argparse.Namespace) -> None:
    kind = KINDS[args.kind]
    spy = _py_spy()
    out = Path(tempfile.mkdtemp(prefix="phx-profile-"))
    async with LocalCluster(nodes=args.nodes,
                            imports=("phoenix_cluster._cli.bench_agents",)) as cluster:
        settings = phx.Settings(name=f"profile-client-{secrets.token_hex(3)}", role="client",
                                seeds=cluster.addresses, cookie=cluster.cookie)
        async with phx.Node(settings=settings) as client:
            refs = [client.ref(kind, f"p{i}") for i in range(args.in_flight)]
            await asyncio.gather(*(r.inc(0) for r in refs))
            stop = time.monotonic() + args.seconds + 2
            calls = 0

            async def caller(ref: phx.AgentRef) -> None:
                nonlocal calls
                while time.monotonic() < stop:
                    await ref.inc(1)
                    calls += 1

            async def registrar(i: int) -> None:
                # One registration (coordinator + 2 replicas) and one uncached lookup
                # (the coordinator) per round: the two operations of phx bench registry.
                nonlocal calls
                n = 0
                while time.monotonic() < stop:
                    name = f"profile/{i}/{n}"
                    await client.registry.register(name, n)
                    await client.registry.lookup(name, cached=False)
                    calls += 2
                    n += 1

            pids = {f"node{i}": n.process.pid for i, n in enumerate(cluster.nodes)
                    if n.process is not None}
            pids["client"] = os.getpid()
            spies = _start_spies(spy, pids, args.seconds, out)
            started = time.monotonic()
            if args.workload == "registry":
                await asyncio.gather(*(registrar(i) for i in range(args.in_flight)))
            else:
                await asyncio.gather(*(caller(r) for r in refs))
            elapsed = time.monotonic() - started
            for proc in spies.values():
                await asyncio.to_thread(proc.wait)
    what = "registry ops" if args.workload == "registry" else f"{args.kind} kind calls"
    print(f"{what}, {args.nodes} node(s), {args.in_flight} in flight: "
          f"{calls / elapsed:,.0f}/s while profiled (py-spy slows every process)")
    for name in pids:
        path = out / f"{name}.txt"
        if path.exists():
            _summarise(path, args.top, name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["calls", "registry"], default="calls",
                        help="calls: agent calls to --kind; registry: each caller registers"
                             " a fresh name, then looks it up uncached")
    parser.add_argument("--kind", choices=sorted(KINDS), default="quorum")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    asyncio.run(main(parser.parse_args()))
