"""The registry and pub/sub benchmarks behind ``phx bench registry``.

One :class:`~phoenix_cluster.testing.LocalCluster` of 3 member processes on loopback
(they import this module for its agent kinds) and a ``role="client"`` node in this
process, from which everything is measured (sizes divided by 10 with ``quick``):

- registration latency: sequential ``register`` calls from the client, each stored on a
  majority of the name's 3 owners before it returns;
- registration throughput: 64 concurrent registrars on the client;
- cached lookups: ``lookup`` answered by the client's cache, one hot name and a
  round-robin over 1,000 names;
- uncached lookups: ``lookup(name, cached=False)``, one at a time (latency) and 64 in
  flight (throughput); each asks the name's coordinator;
- the baseline, measured right after the lookups on the same cluster from the same
  client: calls to an unreplicated agent kind (``durability="none"``, 1,000 keys spread
  over the members), 64 in flight; one round trip to a member each, like a lookup, so
  the ratio of the two rates says what the registry costs beyond a round trip whatever
  else the machine is doing;
- pub/sub fan-out: 1,000 agents (spread over the 3 members by the ring) each subscribed
  on the member hosting it; the client publishes one message at a time and the time
  until every subscriber *handled* it is measured: each subscriber records
  ``time.monotonic()`` in its handler, which on Linux is one system-wide clock shared by
  every process;
- memory per 100,000 names, in a fresh process with tracemalloc: an owner's store of
  100,000 registrations, and an embedded node that registered 100,000 names (its store,
  its own holdings and its lookup cache).

"Per member" figures divide a cluster-wide rate by the 3 members; every registration
is handled by all 3 of them (the coordinator and 2 replicas). The nodes run on ``phx
node``'s loop (uvloop); ``loop`` picks the measuring client's (``auto``: uvloop when
installed; figures before 2026-12-07 were measured with an ``asyncio`` client).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from phoenix_cluster.testing import LocalCluster

from .._agents.agent import Agent
from .._agents.ref import AgentRef
from .._node import Node
from .bench_agents import BenchVolatile
from .bench_local import LoopName, loop_factory, machine_info, save_json

__all__ = ["BenchProbe", "BenchSink", "RegistryBenchSizes", "print_report", "run_registry",
           "save_json"]

MEMBERS = 3
CONCURRENCY = 64
GOAL_OPS_PER_MEMBER = 20_000.0
GOAL_REGISTER_P95_MS = 1.0
GOAL_CACHED_LOOKUPS = 50_000.0
GOAL_MEMORY_MB = 100.0
_IMPORTS = ("phoenix_cluster._cli.bench_registry", "phoenix_cluster._cli.bench_agents")
_BASELINE_KEYS = 1_000
_TOPIC = "bench"

# Per node process: when each message reached each subscriber (monotonic seconds).
_ARRIVALS: dict[int, list[float]] = {}
_WAITERS: dict[int, tuple[int, asyncio.Event]] = {}


class BenchSink(Agent, kind="bench.registry.sink"):
    """A subscriber: records when each message arrives on its node."""

    async def join(self, topic: str) -> str:
        await self.node.pubsub.subscribe(topic, self.node.ref(BenchSink, self.key),
                                         "on_message")
        return str(self.node.name)

    async def on_message(self, seq: int) -> None:
        arrived = _ARRIVALS.setdefault(seq, [])
        arrived.append(time.monotonic())
        waiter = _WAITERS.get(seq)
        if waiter is not None and len(arrived) >= waiter[0]:
            waiter[1].set()


class BenchProbe(Agent, kind="bench.registry.probe"):
    """Reads the arrivals recorded on the node that hosts it."""

    async def where(self) -> str:
        return str(self.node.name)

    async def arrivals(self, seq: int, expected: int, timeout_s: float) -> list[float]:
        """Wait until ``expected`` subscribers here handled message ``seq``; their times."""
        done = asyncio.Event()
        _WAITERS[seq] = (expected, done)
        try:
            if len(_ARRIVALS.get(seq, ())) < expected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout_s)
        finally:
            del _WAITERS[seq]
        return _ARRIVALS.pop(seq, [])


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryBenchSizes:
    """How much work each measurement does."""

    register_latency: int = 2_000
    register_throughput: int = 10_000
    cached_lookups: int = 200_000
    uncached_lookups: int = 5_000
    pipelined_lookups: int = 20_000
    subscribers: int = 1_000
    messages: int = 50
    memory_names: int = 100_000

    @classmethod
    def quick(cls) -> RegistryBenchSizes:
        return cls(register_latency=200, register_throughput=1_000, cached_lookups=20_000,
                   uncached_lookups=500, pipelined_lookups=2_000, subscribers=1_000,
                   messages=10, memory_names=10_000)


def _percentiles_ms(samples_ns: list[int]) -> dict[str, float]:
    samples_ns = sorted(samples_ns)

    def at(q: float) -> float:
        return samples_ns[min(len(samples_ns) - 1, int(q * len(samples_ns)))] / 1e6

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": samples_ns[-1] / 1e6,
            "per_s": len(samples_ns) / (sum(samples_ns) / 1e9)}


async def _timed(op: Callable[[int], Any], n: int) -> list[int]:
    samples = []
    for i in range(n):
        started = time.perf_counter_ns()
        await op(i)
        samples.append(time.perf_counter_ns() - started)
    return samples


async def _rate(op: Callable[[int], Any], n: int, concurrency: int = CONCURRENCY) -> float:
    """Operations per second with ``concurrency`` workers sharing ``n`` operations."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def _names(client: Node, sizes: RegistryBenchSizes,
                 say: Callable[[str], None]) -> dict[str, Any]:
    reg = client.registry
    say(f"registration latency: {sizes.register_latency:,} sequential registrations")
    latency = _percentiles_ms(await _timed(
        lambda i: reg.register(f"lat/{i}", i), sizes.register_latency))
    say(f"registration throughput: {sizes.register_throughput:,} names, "
        f"{CONCURRENCY} in flight")
    registrations = await _rate(lambda i: reg.register(f"thr/{i}", i),
                                sizes.register_throughput)
    say(f"cached lookups: {sizes.cached_lookups:,}")
    await reg.lookup("lat/0")
    started = time.perf_counter()
    for _ in range(sizes.cached_lookups):
        await reg.lookup("lat/0")
    cached_hot = sizes.cached_lookups / (time.perf_counter() - started)
    spread = min(1_000, sizes.register_latency)
    for i in range(spread):
        await reg.lookup(f"lat/{i}")
    started = time.perf_counter()
    for i in range(sizes.cached_lookups):
        await reg.lookup(f"lat/{i % spread}")
    cached_spread = sizes.cached_lookups / (time.perf_counter() - started)
    say(f"uncached lookups: {sizes.uncached_lookups:,} one at a time, "
        f"{sizes.pipelined_lookups:,} with {CONCURRENCY} in flight")
    n = sizes.register_throughput
    uncached = _percentiles_ms(await _timed(
        lambda i: reg.lookup(f"thr/{i % n}", cached=False), sizes.uncached_lookups))
    pipelined = await _rate(lambda i: reg.lookup(f"thr/{i % n}", cached=False),
                            sizes.pipelined_lookups)
    say(f"baseline: {sizes.pipelined_lookups:,} calls to an unreplicated agent kind, "
        f"{CONCURRENCY} in flight")
    refs = [client.ref(BenchVolatile, f"base-{i}") for i in range(_BASELINE_KEYS)]
    await asyncio.gather(*(r.get() for r in refs))  # activated before they are timed
    agent_calls = await _rate(lambda i: refs[i % _BASELINE_KEYS].get(),
                              sizes.pipelined_lookups)
    return {
        "register_latency": latency,
        "registrations_per_s": registrations,
        "cached_lookups_per_s": cached_hot,
        "cached_lookups_1000_names_per_s": cached_spread,
        "uncached_lookup_latency": uncached,
        "uncached_lookups_per_s": pipelined,
        "registry_ops_per_member_per_s": (registrations + pipelined) / MEMBERS,
        "baseline_agent_calls_per_s": agent_calls,
        "uncached_lookups_per_agent_call": pipelined / agent_calls,
        "registrations_per_agent_call": registrations / agent_calls,
    }


async def _fanout(client: Node, cluster: LocalCluster, sizes: RegistryBenchSizes,
                  say: Callable[[str], None]) -> dict[str, Any]:
    say(f"pub/sub: subscribing {sizes.subscribers:,} agents on their members")
    hosts = await asyncio.gather(*(client.ref(BenchSink, f"sink-{i}").join(_TOPIC)
                                   for i in range(sizes.subscribers)))
    per_node = {n.name: hosts.count(n.name) for n in cluster.nodes}
    probes: dict[str, AgentRef] = {}
    for i in range(10_000):
        ref = client.ref(BenchProbe, f"probe-{i}")
        probes.setdefault(await ref.where(), ref)
        if len(probes) == MEMBERS:
            break
    say(f"pub/sub fan-out: {sizes.messages} messages to {sizes.subscribers:,} subscribers")
    everyone_ns: list[int] = []
    each_ns: list[int] = []
    for seq in range(sizes.messages):
        started = time.monotonic()
        await client.pubsub.publish(_TOPIC, seq)
        arrivals = await asyncio.gather(*(probes[node].arrivals(seq, count, 30.0)
                                          for node, count in per_node.items()))
        times = sorted(t for node_times in arrivals for t in node_times)
        if len(times) != sizes.subscribers:
            raise RuntimeError(f"message {seq} reached {len(times)} of "
                               f"{sizes.subscribers} subscribers")
        everyone_ns.append(int((times[-1] - started) * 1e9))
        each_ns.append(int((statistics.median(times) - started) * 1e9))
    return {"subscribers_per_member": per_node,
            "all_subscribers": _percentiles_ms(everyone_ns),
            "median_subscriber": _percentiles_ms(each_ns)}


def _memory_in_subprocess(names: int) -> dict[str, float]:
    argv = [sys.executable, "-m", "phoenix_cluster._cli.bench_registry", "memory", str(names)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def _measure_memory(names: int) -> dict[str, float]:
    """In this (fresh) process: bytes per name in an owner's store and in a node."""
    from phoenix_cluster._registry.entries import Entry
    from phoenix_cluster._registry.messages import StoreRequest, decode, encode
    from phoenix_cluster._registry.store import NameStore

    # An owner receives its names over the wire: encode them first (outside the
    # measurement), then decode and store them as the "store" service does.
    batches = [
        encode(StoreRequest("replicate", [
            Entry(f"service/{i:08d}", f"node-{i % 3}", 1_790_000_000_000,
                  1_790_000_000_000 + i, (i * 2_654_435_761) % (1 << 63) | 1,
                  kind="app.worker", key=f"worker-{i}")
            for i in range(start, min(names, start + 1_000))]))
        for start in range(0, names, 1_000)
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = NameStore()
    for batch in batches:
        for entry in decode(StoreRequest, batch).entries:
            store.merge(entry, 0.0)
    store_bytes = tracemalloc.get_traced_memory()[0] - before
    del store, batches

    async def node_part() -> int:
        async with Node(name="memory") as node:
            refs = [node.ref("bench.registry.sink", f"worker-{i}") for i in range(names)]
            start = tracemalloc.get_traced_memory()[0]
            for i, ref in enumerate(refs):
                await node.registry.register(f"service/{i:08d}", ref)
            used = tracemalloc.get_traced_memory()[0] - start
            assert node.registry.statistics()["stored"] == names
            return used

    node_bytes = asyncio.run(node_part())
    return {"names": float(names),
            "store_bytes_per_name": store_bytes / names,
            "node_bytes_per_name": node_bytes / names,
            "store_mb_per_100k": store_bytes / names * 100_000 / 1e6,
            "node_mb_per_100k": node_bytes / names * 100_000 / 1e6}


def run_registry(*, quick: bool = False, loop: LoopName = "auto",
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every registry measurement and return the results as JSON-ready data."""
    sizes = RegistryBenchSizes.quick() if quick else RegistryBenchSizes()
    say = progress or (lambda _text: None)
    loop_name, factory = loop_factory(loop)
    results: dict[str, Any] = {
        "machine": machine_info(loop_name, quick),
        "sizes": dataclasses.asdict(sizes),
        "members": MEMBERS,
        "concurrency": CONCURRENCY,
    }

    async def main() -> None:
        async with LocalCluster(nodes=MEMBERS, imports=_IMPORTS) as cluster:
            client = await cluster.client()
            results["names"] = await _names(client, sizes, say)
            results["pubsub"] = await _fanout(client, cluster, sizes, say)

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    say(f"memory: {sizes.memory_names:,} names in a fresh process (tracemalloc)")
    results["memory"] = _memory_in_subprocess(sizes.memory_names)
    return results


def _verdict(ok: bool) -> str:
    return "[green]goal met[/]" if ok else "[red]missed[/]"


def print_report(results: dict[str, Any]) -> None:
    """Print the results as a rich table."""
    from rich.console import Console
    from rich.table import Table

    m, names, pubsub, mem = (results["machine"], results["names"], results["pubsub"],
                             results["memory"])
    table = Table(
        title=(f"phx bench registry: {m['cpu_count']} CPUs, {m['implementation']} "
               f"{m['python']}{' (quick)' if m['quick'] else ''}"),
        caption=(f"{results['members']} member processes on loopback, measured from a client "
                 f"node; {results['concurrency']} in flight for rates; fan-out to "
                 f"{results['sizes']['subscribers']:,} agents subscribed on their members"),
        title_justify="left", caption_justify="left")
    for column in ("measurement", "figure", "goal", "verdict"):
        table.add_column(column, justify="right" if column in ("figure", "goal") else "left")
    lat = names["register_latency"]
    table.add_row("registration p50", f"{lat['p50_ms']:.2f} ms")
    table.add_row("registration p95", f"{lat['p95_ms']:.2f} ms",
                  f"< {GOAL_REGISTER_P95_MS:.0f} ms",
                  _verdict(lat["p95_ms"] < GOAL_REGISTER_P95_MS))
    table.add_row("registrations", f"{names['registrations_per_s']:,.0f}/s")
    table.add_row("cached lookups (1 name)", f"{names['cached_lookups_per_s']:,.0f}/s",
                  f"> {GOAL_CACHED_LOOKUPS:,.0f}",
                  _verdict(names["cached_lookups_per_s"] > GOAL_CACHED_LOOKUPS))
    table.add_row("cached lookups (1,000 names)",
                  f"{names['cached_lookups_1000_names_per_s']:,.0f}/s")
    unc = names["uncached_lookup_latency"]
    table.add_row("uncached lookup p50 / p95", f"{unc['p50_ms']:.2f} / {unc['p95_ms']:.2f} ms",
                  f"p95 < {GOAL_REGISTER_P95_MS:.0f} ms",
                  _verdict(unc["p95_ms"] < GOAL_REGISTER_P95_MS))
    table.add_row("uncached lookups", f"{names['uncached_lookups_per_s']:,.0f}/s")
    table.add_row("baseline: unreplicated agent calls",
                  f"{names['baseline_agent_calls_per_s']:,.0f}/s")
    table.add_row("uncached lookups / agent calls",
                  f"{names['uncached_lookups_per_agent_call']:.2f}")
    table.add_row("registrations / agent calls",
                  f"{names['registrations_per_agent_call']:.2f}")
    per_member = names["registry_ops_per_member_per_s"]
    table.add_row("registry ops per member", f"{per_member:,.0f}/s",
                  f"> {GOAL_OPS_PER_MEMBER:,.0f}", _verdict(per_member > GOAL_OPS_PER_MEMBER))
    everyone, each = pubsub["all_subscribers"], pubsub["median_subscriber"]
    table.add_row("fan-out, all subscribers p50", f"{everyone['p50_ms']:.1f} ms")
    table.add_row("fan-out, all subscribers p95", f"{everyone['p95_ms']:.1f} ms")
    table.add_row("fan-out, median subscriber p50", f"{each['p50_ms']:.1f} ms")
    table.add_row("memory per 100k names (store)", f"{mem['store_mb_per_100k']:.1f} MB",
                  f"< {GOAL_MEMORY_MB:.0f} MB", _verdict(mem["store_mb_per_100k"] < GOAL_MEMORY_MB))
    table.add_row("memory per 100k names (node)", f"{mem['node_mb_per_100k']:.1f} MB",
                  f"< {GOAL_MEMORY_MB:.0f} MB", _verdict(mem["node_mb_per_100k"] < GOAL_MEMORY_MB))
    Console().print(table)


def _probe_main(argv: list[str]) -> None:
    """``python -m phoenix_cluster._cli.bench_registry memory N``: print JSON."""
    if len(argv) != 2 or argv[0] != "memory":
        raise SystemExit("usage: python -m phoenix_cluster._cli.bench_registry memory N")
    print(json.dumps(_measure_memory(int(argv[1]))))


if __name__ == "__main__":
    _probe_main(sys.argv[1:])
