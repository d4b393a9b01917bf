"""The memory figures of ``phx bench local``: bytes per idle agent, each in a fresh process.

RSS is only honest in a process whose allocator has not already grown and shrunk for
something else, and tracemalloc's own bookkeeping must not be counted as RSS, so
:func:`memory_in_subprocess` runs each measurement as ``python -m
phoenix_cluster._cli.bench_local_memory memory ...`` and reads the figure from its JSON
output. A measurement activates agents (after a warm-up batch) and leaves them idle, or
waits for them to passivate (state kept as bytes), and divides the growth by their number.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable

from .._node import Node
from .bench_local_harness import (
    BenchCounter,
    LoopName,
    bench_settings,
    loop_factory,
    probe,
    rss_bytes,
    run_on_fresh_node,
)

__all__ = ["memory_in_subprocess"]

_MODULE = "phoenix_cluster._cli.bench_local_memory"


async def _wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _fill(node: Node, prefix: str, n: int, batch: int, passive: bool) -> None:
    """Activate ``n`` agents in batches (so the peak of queued messages stays small)."""
    for first in range(0, n, batch):
        keys = range(first, min(n, first + batch))
        done = probe.expect(probe.count + len(keys))
        for i in keys:
            await node.ref(BenchCounter, f"{prefix}{i:07d}").touch.cast()
        await done.wait()
        if passive:
            # Wait for this batch to passivate before the next, as long-lived idle
            # agents would have, so few agents are ever active at once.
            await _wait_for(lambda: node.statistics().agents.active_agents == 0, "passivation")
    await _wait_for(lambda: node.statistics().agents.busy_agents == 0, "idle agents")


def _measure_memory(
    state: str, n: int, batch: int, loop: LoopName, use_tracemalloc: bool
) -> dict[str, float]:
    """Run in a fresh process: bytes per agent, active-idle or passivated."""
    passive = state == "passive"
    settings = (
        bench_settings(idle_timeout_s=0.05, passivation_sweep_s=0.02)
        if passive
        else bench_settings()
    )
    _, factory = loop_factory(loop)

    def used() -> int:
        gc.collect()
        if use_tracemalloc:
            return tracemalloc.get_traced_memory()[0]
        value = rss_bytes()
        if value is None:
            raise RuntimeError("cannot read this process's RSS (install psutil)")
        return value

    async def measure(node: Node) -> dict[str, float]:
        # Warm up first: code paths, caches and the dicts' first growth are fixed costs,
        # not per-agent ones.
        await _fill(node, "w", batch, batch, passive)
        before = used()
        await _fill(node, "m", n, batch, passive)
        after = used()
        stats = node.statistics().agents
        expected = (stats.passive_agents if passive else stats.active_agents) - batch
        if expected != n:
            raise RuntimeError(f"expected {n} {state} agents, found {expected}")
        return {"bytes_per_agent": (after - before) / n, "agents": float(n)}

    if use_tracemalloc:
        tracemalloc.start()
    return run_on_fresh_node(factory, measure, settings)  # type: ignore[no-any-return]


def memory_in_subprocess(
    loop: LoopName, state: str, n: int, batch: int, use_tracemalloc: bool
) -> float:
    """Bytes per agent (``state``: ``active`` or ``passive``), measured in a fresh process."""
    argv = [sys.executable, "-m", _MODULE, "memory", state, str(n), str(batch), loop]
    if use_tracemalloc:
        argv.append("tracemalloc")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed ({' '.join(argv[3:])}):\n{proc.stderr}")
    return float(json.loads(proc.stdout)["bytes_per_agent"])


def _probe_main(argv: list[str]) -> None:
    """``python -m phoenix_cluster._cli.bench_local_memory memory STATE N BATCH LOOP
    [tracemalloc]``."""
    loops: tuple[LoopName, ...] = ("auto", "uvloop", "asyncio")
    if (
        len(argv) < 5
        or argv[0] != "memory"
        or argv[1] not in ("active", "passive")
        or argv[4] not in loops
    ):
        raise SystemExit(
            "usage: python -m phoenix_cluster._cli.bench_local_memory "
            "memory active|passive N BATCH auto|uvloop|asyncio [tracemalloc]"
        )
    loop = loops[loops.index(argv[4])]
    result = _measure_memory(argv[1], int(argv[2]), int(argv[3]), loop, "tracemalloc" in argv[5:])
    print(json.dumps(result))


if __name__ == "__main__":
    _probe_main(sys.argv[1:])
