"""The single-node benchmarks behind ``phx bench local``.

Each measurement runs in a fresh event loop with a fresh :class:`phoenix_cluster.Node`
built from default :class:`~phoenix_cluster.Settings` (no ``phoenix.toml``, no ``PHX_*``
variables), so one measurement's garbage and caches do not leak into the next
(``bench_local_harness.py``). The memory measurements run in a fresh Python process each
(``bench_local_memory.py``): RSS is only honest in a process whose allocator has not
already grown and shrunk for something else, and tracemalloc's own bookkeeping must not be
counted as RSS. The table of figures and goals is printed by ``bench_local_report.py``.

What is measured, and how (sizes are divided by 10 with ``quick``):

- call latency: one caller, one agent, 20,000 sequential calls after 2,000 warm-up calls,
  each timed with ``time.perf_counter_ns``;
- failing-call latency: 5,000 sequential calls whose handler changes the state and raises
  (rollback and error reporting);
- call throughput: 1, 100 and 1,000 concurrent callers, each on its own agent and all on
  one shared agent, 100,000 calls in all;
- cast throughput: 200,000 ``await ref.touch.cast()`` to one agent, and to 1,000 agents
  round-robin, at the default ``mailbox_limit`` (10,000: a sender waits for room when it
  is full), timed until every message has been handled;
- activations: the first message to 50,000 distinct keys, timed until every agent has
  handled it;
- memory: 100,000 agents activated then idle (tracemalloc delta and RSS delta, each
  divided by the number of agents), and the same agents once passivated (state kept as
  bytes).

This module is imported only when ``phx bench local`` runs; ``bench.py`` stays cheap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import gc
import json
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .._agents.ref import AgentRef
from .._node import Node
from .._version import __version__
from ..errors import AgentError
from .bench_local_harness import (
    BenchCounter,
    LoopName,
    collected,
    loop_factory,
    probe,
    rss_bytes,
    run_on_fresh_node,
)
from .bench_local_memory import memory_in_subprocess
from .bench_local_report import print_report

__all__ = [
    "BenchSizes",
    "LoopName",
    "loop_factory",
    "machine_info",
    "print_report",
    "rss_bytes",
    "run_local",
    "save_json",
]


@dataclasses.dataclass(frozen=True, slots=True)
class BenchSizes:
    """How much work each measurement does."""

    latency_warmup: int = 2_000
    latency_calls: int = 20_000
    error_calls: int = 5_000
    throughput_calls: int = 100_000
    casts: int = 200_000
    cast_agents: int = 1_000
    activations: int = 50_000
    memory_agents: int = 100_000
    memory_batch: int = 1_000

    @classmethod
    def quick(cls) -> BenchSizes:
        """About a tenth of the full sizes: seconds instead of a minute (tests, smoke runs)."""
        return cls(
            latency_warmup=200,
            latency_calls=2_000,
            error_calls=500,
            throughput_calls=10_000,
            casts=20_000,
            cast_agents=100,
            activations=5_000,
            memory_agents=10_000,
            memory_batch=1_000,
        )


CONCURRENCY = (1, 100, 1_000)

# --------------------------------------------------------------------------- measurements


def _percentile(sorted_ns: list[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[index] / 1_000.0


def _summarize(samples: list[int]) -> dict[str, float]:
    samples.sort()
    return {
        "calls": float(len(samples)),
        "p50_us": _percentile(samples, 0.50),
        "p95_us": _percentile(samples, 0.95),
        "p99_us": _percentile(samples, 0.99),
        "mean_us": sum(samples) / len(samples) / 1_000.0,
        "max_us": samples[-1] / 1_000.0,
    }


async def _latency(node: Node, sizes: BenchSizes) -> dict[str, float]:
    ref = node.ref(BenchCounter, "latency")
    inc = ref.inc
    for _ in range(sizes.latency_warmup):
        await inc(1)
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    with collected():
        for _ in range(sizes.latency_calls):
            started = clock()
            await inc(1)
            append(clock() - started)
    return _summarize(samples)


async def _error_latency(node: Node, sizes: BenchSizes) -> dict[str, float]:
    """Calls whose handler changes the state and raises: rollback and error reporting."""
    fail = node.ref(BenchCounter, "errors").fail
    clock = time.perf_counter_ns
    samples: list[int] = []
    for i in range(sizes.latency_warmup // 10 + sizes.error_calls):
        if i == sizes.latency_warmup // 10:
            gc.collect()
            samples.clear()
        started = clock()
        try:
            await fail()
        except AgentError:
            pass
        else:  # pragma: no cover - would be a runtime bug
            raise RuntimeError("a failing handler did not fail the call")
        samples.append(clock() - started)
    return _summarize(samples)


async def _throughput(node: Node, sizes: BenchSizes, callers: int, shared: bool) -> float:
    refs = [node.ref(BenchCounter, "shared" if shared else f"t{i}") for i in range(callers)]
    # Activate every agent before the clock starts: this measures calls, not activations.
    await asyncio.gather(*(r.inc(0) for r in refs))
    per_caller = max(1, sizes.throughput_calls // callers)

    async def caller(ref: AgentRef) -> None:
        inc = ref.inc
        for _ in range(per_caller):
            await inc(1)

    with collected():
        started = time.perf_counter()
        await asyncio.gather(*(caller(r) for r in refs))
        elapsed = time.perf_counter() - started
    return callers * per_caller / elapsed


async def _casts(node: Node, sizes: BenchSizes, agents: int) -> float:
    refs = [node.ref(BenchCounter, f"c{i}") for i in range(agents)]
    await asyncio.gather(*(r.inc(0) for r in refs))
    touches = [r.touch for r in refs]
    per_agent = max(1, sizes.casts // agents)
    total = per_agent * agents
    done = probe.expect(probe.count + total)
    with collected():
        started = time.perf_counter()
        for _ in range(per_agent):
            for touch in touches:
                await touch.cast()
        await done.wait()
        # Every agent has handled its casts once the probe fired; a final call checks
        # that nothing is left behind in any mailbox.
        await asyncio.gather(*(r.inc(0) for r in refs))
        elapsed = time.perf_counter() - started
    return total / elapsed


async def _activations(node: Node, sizes: BenchSizes) -> float:
    n = sizes.activations
    refs = [node.ref(BenchCounter, f"a{i}") for i in range(n)]
    done = probe.expect(probe.count + n)
    with collected():
        started = time.perf_counter()
        for ref in refs:
            await ref.touch.cast()
        await done.wait()
        elapsed = time.perf_counter() - started
    activated = node.statistics().agents.activations
    if activated < n:  # pragma: no cover - would be a runtime bug
        raise RuntimeError(f"expected {n} activations, the runtime counted {activated}")
    return n / elapsed


# --------------------------------------------------------------------------- driver


def machine_info(loop_name: str, quick: bool) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count() or 0,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "loop": loop_name,
        "uvloop": loop_name.startswith("uvloop"),
        "phoenix_version": __version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
    }


def run_local(
    *,
    quick: bool = False,
    loop: LoopName = "auto",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every local measurement and return the results as JSON-ready data.

    Args:
        quick: shrink every size about tenfold (seconds instead of about a minute).
        loop: ``auto`` (uvloop when importable), ``uvloop`` or ``asyncio``.
        progress: called with a short description before each measurement.
    """
    sizes = BenchSizes.quick() if quick else BenchSizes()
    loop_name, factory = loop_factory(loop)
    say = progress or (lambda _text: None)
    results: dict[str, Any] = {
        "machine": machine_info(loop_name, quick),
        "sizes": dataclasses.asdict(sizes),
    }

    # Memory first, each in its own process (see the module docstring).
    memory: dict[str, float] = {"agents": float(sizes.memory_agents)}
    for state in ("active", "passive"):
        for tool, use_tm in (("rss", False), ("tracemalloc", True)):
            say(f"memory: {sizes.memory_agents:,} {state} agents ({tool})")
            memory[f"{state}_{tool}_bytes_per_agent"] = memory_in_subprocess(
                loop, state, sizes.memory_agents, sizes.memory_batch, use_tm
            )
    say(f"call latency: {sizes.latency_calls:,} sequential calls")
    results["call_latency"] = run_on_fresh_node(factory, lambda node: _latency(node, sizes))
    say(f"failing-call latency: {sizes.error_calls:,} calls that raise and roll back")
    results["failing_call_latency"] = run_on_fresh_node(
        factory, lambda node: _error_latency(node, sizes)
    )

    throughput: dict[str, dict[str, float]] = {"distinct_agents": {}, "shared_agent": {}}
    for shared in (False, True):
        where = "shared_agent" if shared else "distinct_agents"
        for callers in CONCURRENCY:
            say(f"call throughput: {callers:,} callers, {where.replace('_', ' ')}")
            throughput[where][str(callers)] = run_on_fresh_node(
                factory, partial(_throughput, sizes=sizes, callers=callers, shared=shared)
            )
    results["call_throughput_per_s"] = throughput

    casts: dict[str, float] = {}
    for agents in (1, sizes.cast_agents):
        say(f"cast throughput: {sizes.casts:,} casts to {agents:,} agent(s)")
        casts[f"{agents}_agents" if agents > 1 else "1_agent"] = run_on_fresh_node(
            factory, partial(_casts, sizes=sizes, agents=agents)
        )
    results["cast_throughput_per_s"] = casts

    say(f"activations: first message to {sizes.activations:,} keys")
    results["activations_per_s"] = run_on_fresh_node(
        factory, lambda node: _activations(node, sizes)
    )
    results["memory"] = memory
    return results


def save_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
