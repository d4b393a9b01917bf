"""The single-node benchmarks behind ``phx bench local``.

Each measurement runs in a fresh event loop with a fresh :class:`phoenix_cluster.Node`
built from default :class:`~phoenix_cluster.Settings` (no ``phoenix.toml``, no ``PHX_*``
variables), so one measurement's garbage and caches do not leak into the next. The
memory measurements run in a fresh Python process each (``python -m
phoenix_cluster._cli.bench_local memory ...``): RSS is only honest in a process whose
allocator has not already grown and shrunk for something else, and tracemalloc's own
bookkeeping must not be counted as RSS.

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
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import phoenix_cluster as phx

__all__ = [
    "BenchSizes",
    "LoopName",
    "loop_factory",
    "print_report",
    "rss_bytes",
    "run_local",
    "save_json",
]

LoopName = Literal["auto", "uvloop", "asyncio"]

# The project's goals, shown next to the measured figures.
GOAL_CALL_P95_US = 50.0
REACH_CALL_P95_US = 100.0
GOAL_PIPELINED_CALLS_PER_S = 30_000.0
GOAL_CASTS_PER_S = 100_000.0
GOAL_ACTIVATIONS_PER_S = 50_000.0
GOAL_IDLE_AGENT_BYTES = 600.0
REACH_IDLE_AGENT_BYTES = 1024.0


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

_MODULE = "phoenix_cluster._cli.bench_local"


# --------------------------------------------------------------------------- agents


class _Probe:
    """Counts handled ``touch`` messages and wakes a waiter at a target count."""

    __slots__ = ("count", "event", "target")

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.event: asyncio.Event | None = None

    def expect(self, target: int) -> asyncio.Event:
        self.target = target
        self.event = asyncio.Event()
        if self.count >= target:
            self.event.set()
        return self.event

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target and self.event is not None:
            self.event.set()


_probe = _Probe()


class BenchCounter(phx.Agent, kind="bench.counter"):
    """The measured agent: one small integer of state, at the default mailbox limit
    (a run of casts fills the mailbox and then waits for room, as a user's loop would)."""

    def __init__(self) -> None:
        self.count = 0

    async def inc(self, by: int = 1) -> int:
        self.count += by
        return self.count

    async def touch(self) -> None:
        self.count += 1
        _probe.hit()

    async def fail(self) -> None:
        self.count += 1
        raise _BenchFailure("rolled back")


class _BenchFailure(Exception):
    pass


# --------------------------------------------------------------------------- helpers


def loop_factory(loop: LoopName) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop to measure with: uvloop when importable (``auto``), else asyncio."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            return f"uvloop {importlib.metadata.version('uvloop')}", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def rss_bytes() -> int | None:
    """This process's resident set size in bytes (psutil, else /proc), or None."""
    try:
        psutil: Any = importlib.import_module("psutil")  # optional; no stubs needed
    except ImportError:
        pass
    else:
        return int(psutil.Process().memory_info().rss)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _settings(**options: Any) -> phx.Settings:
    return phx.Settings(name="bench", **options)


def _run(
    factory: Callable[[], asyncio.AbstractEventLoop],
    measure: Callable[[phx.Node], Awaitable[Any]],
    settings: phx.Settings | None = None,
) -> Any:
    """Run ``measure(node)`` in a fresh loop with a fresh node."""

    async def main() -> Any:
        async with phx.Node(settings=settings or _settings()) as node:
            return await measure(node)

    gc.collect()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


@contextmanager
def _collected() -> Iterator[None]:
    # Collect before a timed section so it does not pay for the set-up's garbage. The
    # collector stays on while timing: real programs run with it.
    gc.collect()
    yield


def _percentile(sorted_ns: list[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[index] / 1_000.0


# --------------------------------------------------------------------------- measurements


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


async def _latency(node: phx.Node, sizes: BenchSizes) -> dict[str, float]:
    ref = node.ref(BenchCounter, "latency")
    inc = ref.inc
    for _ in range(sizes.latency_warmup):
        await inc(1)
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    with _collected():
        for _ in range(sizes.latency_calls):
            started = clock()
            await inc(1)
            append(clock() - started)
    return _summarize(samples)


async def _error_latency(node: phx.Node, sizes: BenchSizes) -> dict[str, float]:
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
        except phx.AgentError:
            pass
        else:  # pragma: no cover - would be a runtime bug
            raise RuntimeError("a failing handler did not fail the call")
        samples.append(clock() - started)
    return _summarize(samples)


async def _throughput(node: phx.Node, sizes: BenchSizes, callers: int, shared: bool) -> float:
    refs = [node.ref(BenchCounter, "shared" if shared else f"t{i}") for i in range(callers)]
    # Activate every agent before the clock starts: this measures calls, not activations.
    await asyncio.gather(*(r.inc(0) for r in refs))
    per_caller = max(1, sizes.throughput_calls // callers)

    async def caller(ref: phx.AgentRef) -> None:
        inc = ref.inc
        for _ in range(per_caller):
            await inc(1)

    with _collected():
        started = time.perf_counter()
        await asyncio.gather(*(caller(r) for r in refs))
        elapsed = time.perf_counter() - started
    return callers * per_caller / elapsed


async def _casts(node: phx.Node, sizes: BenchSizes, agents: int) -> float:
    refs = [node.ref(BenchCounter, f"c{i}") for i in range(agents)]
    await asyncio.gather(*(r.inc(0) for r in refs))
    touches = [r.touch for r in refs]
    per_agent = max(1, sizes.casts // agents)
    total = per_agent * agents
    done = _probe.expect(_probe.count + total)
    with _collected():
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


async def _activations(node: phx.Node, sizes: BenchSizes) -> float:
    n = sizes.activations
    refs = [node.ref(BenchCounter, f"a{i}") for i in range(n)]
    done = _probe.expect(_probe.count + n)
    with _collected():
        started = time.perf_counter()
        for ref in refs:
            await ref.touch.cast()
        await done.wait()
        elapsed = time.perf_counter() - started
    activated = node.statistics().agents.activations
    if activated < n:  # pragma: no cover - would be a runtime bug
        raise RuntimeError(f"expected {n} activations, the runtime counted {activated}")
    return n / elapsed


# --------------------------------------------------------------------------- memory


async def _wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _fill(node: phx.Node, prefix: str, n: int, batch: int, passive: bool) -> None:
    """Activate ``n`` agents in batches (so the peak of queued messages stays small)."""
    for first in range(0, n, batch):
        keys = range(first, min(n, first + batch))
        done = _probe.expect(_probe.count + len(keys))
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
    settings = _settings(idle_timeout_s=0.05, passivation_sweep_s=0.02) if passive else _settings()
    _, factory = loop_factory(loop)

    def used() -> int:
        gc.collect()
        if use_tracemalloc:
            return tracemalloc.get_traced_memory()[0]
        value = rss_bytes()
        if value is None:
            raise RuntimeError("cannot read this process's RSS (install psutil)")
        return value

    async def measure(node: phx.Node) -> dict[str, float]:
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
    return _run(factory, measure, settings)  # type: ignore[no-any-return]


def _memory_in_subprocess(
    loop: LoopName, state: str, n: int, batch: int, use_tracemalloc: bool
) -> float:
    argv = [sys.executable, "-m", _MODULE, "memory", state, str(n), str(batch), loop]
    if use_tracemalloc:
        argv.append("tracemalloc")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed ({' '.join(argv[3:])}):\n{proc.stderr}")
    return float(json.loads(proc.stdout)["bytes_per_agent"])


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
        "phoenix_version": phx.__version__,
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
            memory[f"{state}_{tool}_bytes_per_agent"] = _memory_in_subprocess(
                loop, state, sizes.memory_agents, sizes.memory_batch, use_tm
            )
    say(f"call latency: {sizes.latency_calls:,} sequential calls")
    results["call_latency"] = _run(factory, lambda node: _latency(node, sizes))
    say(f"failing-call latency: {sizes.error_calls:,} calls that raise and roll back")
    results["failing_call_latency"] = _run(factory, lambda node: _error_latency(node, sizes))

    throughput: dict[str, dict[str, float]] = {"distinct_agents": {}, "shared_agent": {}}
    for shared in (False, True):
        where = "shared_agent" if shared else "distinct_agents"
        for callers in CONCURRENCY:
            say(f"call throughput: {callers:,} callers, {where.replace('_', ' ')}")
            throughput[where][str(callers)] = _run(
                factory, partial(_throughput, sizes=sizes, callers=callers, shared=shared)
            )
    results["call_throughput_per_s"] = throughput

    casts: dict[str, float] = {}
    for agents in (1, sizes.cast_agents):
        say(f"cast throughput: {sizes.casts:,} casts to {agents:,} agent(s)")
        casts[f"{agents}_agents" if agents > 1 else "1_agent"] = _run(
            factory, partial(_casts, sizes=sizes, agents=agents)
        )
    results["cast_throughput_per_s"] = casts

    say(f"activations: first message to {sizes.activations:,} keys")
    results["activations_per_s"] = _run(factory, lambda node: _activations(node, sizes))
    results["memory"] = memory
    return results


def save_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def _verdict(value: float, goal: float, reach: float | None = None, *, lower: bool) -> str:
    def met(bound: float) -> bool:
        return value < bound if lower else value > bound

    if met(goal):
        return "[green]goal met[/]"
    if reach is not None and met(reach):
        return "[yellow]within reach[/]"
    return "[red]missed[/]"


def print_report(results: dict[str, Any]) -> None:
    """Print the results as a rich table."""
    from rich.console import Console
    from rich.table import Table

    m = results["machine"]
    sizes = results["sizes"]
    lat = results["call_latency"]
    thr = results["call_throughput_per_s"]
    mem = results["memory"]

    table = Table(
        title=(
            f"phx bench local: {m['cpu_count']} CPUs, {m['implementation']} {m['python']}, "
            f"{m['loop']}{' (quick)' if m['quick'] else ''}"
        ),
        caption=(
            f"{sizes['latency_calls']:,} sequential calls; {sizes['throughput_calls']:,} "
            f"calls per throughput row; {sizes['casts']:,} casts; {sizes['activations']:,} "
            f"new keys; {sizes['memory_agents']:,} agents for memory"
        ),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("measurement")
    table.add_column("figure", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("verdict")

    def row(label: str, figure: str, goal: str = "", verdict: str = "") -> None:
        table.add_row(label, figure, goal, verdict)

    row("call latency p50", f"{lat['p50_us']:.1f} µs")
    row(
        "call latency p95",
        f"{lat['p95_us']:.1f} µs",
        f"< {GOAL_CALL_P95_US:.0f} µs",
        _verdict(lat["p95_us"], GOAL_CALL_P95_US, REACH_CALL_P95_US, lower=True),
    )
    row("call latency p99", f"{lat['p99_us']:.1f} µs")
    err = results["failing_call_latency"]
    row("failing call (rollback) p50 / p95", f"{err['p50_us']:.0f} / {err['p95_us']:.0f} µs")
    for where, label in (("distinct_agents", "own agents"), ("shared_agent", "one agent")):
        for callers, value in thr[where].items():
            n = int(callers)
            goal = f"> {GOAL_PIPELINED_CALLS_PER_S:,.0f}" if n > 1 else ""
            verdict = _verdict(value, GOAL_PIPELINED_CALLS_PER_S, lower=False) if n > 1 else ""
            row(
                f"calls/s, {n:,} caller{'s' if n > 1 else ''}, {label}",
                f"{value:,.0f}",
                goal,
                verdict,
            )
    for name, value in results["cast_throughput_per_s"].items():
        row(
            f"casts/s, {name.replace('_', ' ')}",
            f"{value:,.0f}",
            f"> {GOAL_CASTS_PER_S:,.0f}",
            _verdict(value, GOAL_CASTS_PER_S, lower=False),
        )
    act = results["activations_per_s"]
    row(
        "activations/s",
        f"{act:,.0f}",
        f"> {GOAL_ACTIVATIONS_PER_S:,.0f}",
        _verdict(act, GOAL_ACTIVATIONS_PER_S, lower=False),
    )
    for tool in ("tracemalloc", "rss"):
        value = mem[f"active_{tool}_bytes_per_agent"]
        row(
            f"idle agent, {tool}",
            f"{value:,.0f} B",
            f"< {GOAL_IDLE_AGENT_BYTES:.0f} B",
            _verdict(value, GOAL_IDLE_AGENT_BYTES, REACH_IDLE_AGENT_BYTES, lower=True),
        )
    for tool in ("tracemalloc", "rss"):
        row(f"passivated agent, {tool}", f"{mem[f'passive_{tool}_bytes_per_agent']:,.0f} B")
    Console().print(table)


def _probe_main(argv: list[str]) -> None:
    """``python -m phoenix_cluster._cli.bench_local memory STATE N BATCH LOOP [tracemalloc]``."""
    loops: tuple[LoopName, ...] = ("auto", "uvloop", "asyncio")
    if (
        len(argv) < 5
        or argv[0] != "memory"
        or argv[1] not in ("active", "passive")
        or argv[4] not in loops
    ):
        raise SystemExit(
            "usage: python -m phoenix_cluster._cli.bench_local "
            "memory active|passive N BATCH auto|uvloop|asyncio [tracemalloc]"
        )
    loop = loops[loops.index(argv[4])]
    result = _measure_memory(argv[1], int(argv[2]), int(argv[3]), loop, "tracemalloc" in argv[5:])
    print(json.dumps(result))


if __name__ == "__main__":
    _probe_main(sys.argv[1:])
