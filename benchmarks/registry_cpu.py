"""CPU per registry operation, in every process: a figure that the machine's load moves
far less than a rate.

Starts a 3-member ``LocalCluster`` and a client node in this process, then per round
runs ``phx bench registry``'s two rate measurements (10,000 registrations and 20,000
uncached lookups, 64 in flight) and reads, around each, the CPU time (user + system) of
every node process (``/proc/<pid>/stat``) and of this process. On a machine shared with
other work a rate says how much CPU the benchmark got; CPU per operation says what an
operation costs, so two versions of the code can be compared in alternating runs.

Run: ``PYTHONPATH=src python benchmarks/registry_cpu.py --rounds 3`` (Linux: it reads
``/proc``); ``--loop uvloop`` for a uvloop client (the nodes run ``phx node``'s loop).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from phoenix_cluster._cli.bench_local import loop_factory
from phoenix_cluster.testing import LocalCluster

_TICKS = os.sysconf("SC_CLK_TCK")
_IN_FLIGHT = 64


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


async def _rate(op: Callable[[int], Awaitable[object]], n: int) -> float:
    numbers = iter(range(n))

    async def worker() -> None:
        for i in numbers:
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(_IN_FLIGHT)))
    return n / (time.perf_counter() - started)


async def main(rounds: int) -> None:
    async with LocalCluster(nodes=3) as cluster:
        client = await cluster.client()
        registry = client.registry
        pids = [n.process.pid for n in cluster.nodes if n.process is not None]
        seen: dict[str, list[tuple[float, float, float]]] = {}
        for r in range(rounds):
            def register(i: int, r: int = r) -> Awaitable[None]:
                return registry.register(f"cpu/{r}/{i}", i)

            def lookup(i: int, r: int = r) -> Awaitable[object]:
                return registry.lookup(f"cpu/{r}/{i % 10_000}", cached=False)

            for what, op, n in (("registration", register, 10_000),
                                ("uncached lookup", lookup, 20_000)):
                nodes_before = sum(_cpu_s(p) for p in pids)
                own_before = time.process_time()
                rate = await _rate(op, n)
                nodes_us = (sum(_cpu_s(p) for p in pids) - nodes_before) / n * 1e6
                own_us = (time.process_time() - own_before) / n * 1e6
                seen.setdefault(what, []).append((rate, nodes_us, own_us))
                print(f"round {r + 1} {what:15s} {rate:9,.0f}/s  CPU per operation: "
                      f"{nodes_us:6.1f} µs in the 3 nodes, {own_us:5.1f} µs in the client",
                      flush=True)
        for what, runs in seen.items():
            rate, nodes_us, own_us = (statistics.median(x) for x in zip(*runs, strict=True))
            print(f"median {what:15s} {rate:9,.0f}/s  {nodes_us:6.1f} µs nodes, "
                  f"{own_us:5.1f} µs client")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="asyncio")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory(args.loop)[1]) as runner:
        runner.run(main(args.rounds))
