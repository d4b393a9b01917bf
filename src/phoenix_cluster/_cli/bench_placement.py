"""The distributed-agent benchmarks behind ``phx bench agents``.

Each measurement starts a fresh 3-member :class:`~phoenix_cluster.testing.LocalCluster`
(real ``phx node`` processes on loopback importing :mod:`.bench_agents`) and measures
from a ``role="client"`` node in this process (sizes divided by 10 with ``quick``):

- routed call latency: 5,000 sequential calls from the client to 500 agents spread over
  the three members by their homes (after one warm-up call each);
- migration: 200 agents holding 100 integers each are moved one at a time to another
  member (time per agent: ``node.migrate`` until it returns, the agent active on the
  target), then 1,000 agents are moved with 32 moves in flight (agents per second);
- join: 3,000 agents are activated, a fourth member joins, and the time until its
  rebalancing has settled (its count of hosted agents stops growing for one second) is
  measured, with the number of agents it received.

This module is imported only when ``phx bench agents`` runs; ``bench.py`` stays cheap.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from phoenix_cluster.testing import LocalCluster

from .._agents.ref import AgentRef
from .._foundation.settings import Settings
from .._node import Node
from .bench_agents import BenchAccount, BenchTarget
from .bench_cluster_harness import summarize
from .bench_cluster_report import report_title
from .bench_local import machine_info, save_json

__all__ = ["print_report", "run_agents", "save_json"]

_IMPORTS = ["phoenix_cluster._cli.bench_agents"]
GOAL_CALL_P95_US = 300.0
SPEC_CALL_P95_US = 10_000.0


async def _client(cluster: LocalCluster) -> Node:
    settings = Settings(name=f"bench-client-{secrets.token_hex(3)}", role="client",
                            seeds=cluster.addresses, cookie=cluster.cookie)
    client = Node(settings=settings)
    await client.start()
    return client


async def _routed_calls(client: Node, agents: int, calls: int) -> dict[str, float]:
    refs = [client.ref(BenchTarget, f"route-{i}") for i in range(agents)]
    for ref in refs:
        await ref.inc(1)
    clock = time.perf_counter_ns
    samples: list[int] = []
    for i in range(calls):
        started = clock()
        await refs[i % agents].inc(1)
        samples.append(clock() - started)
    return summarize(samples)


async def _migrations(client: Node, names: list[str], one_by_one: int,
                      concurrent: int) -> dict[str, float]:
    async def prepare(prefix: str, count: int) -> list[tuple[AgentRef, str]]:
        refs = [client.ref(BenchAccount, f"{prefix}-{i}") for i in range(count)]
        await asyncio.gather(*(r.fill(100) for r in refs))
        hosts = await asyncio.gather(*(client.where(r) for r in refs))
        return [(r, names[(names.index(h) + 1) % len(names)]) for r, h in zip(refs, hosts,
                                                                                strict=True)]

    samples: list[int] = []
    for ref, target in await prepare("move", one_by_one):
        started = time.perf_counter_ns()
        await client.migrate(ref, to=target)
        samples.append(time.perf_counter_ns() - started)
    single = summarize(samples)
    moves = await prepare("bulk", concurrent)
    gate = asyncio.Semaphore(32)

    async def move(ref: AgentRef, target: str) -> None:
        async with gate:
            await client.migrate(ref, to=target)

    bulk_started = time.perf_counter()
    await asyncio.gather(*(move(r, t) for r, t in moves))
    elapsed = time.perf_counter() - bulk_started
    sizes = await asyncio.gather(*(r.size() for r, _ in moves))
    if any(s != 100 for s in sizes):
        raise RuntimeError("an agent lost state in a migration")
    return {"migrate_p50_ms": single["p50_us"] / 1000, "migrate_p95_ms": single["p95_us"] / 1000,
            "migrated_per_s": concurrent / elapsed, "migrations": float(one_by_one + concurrent)}


async def _hosted(client: Node, address: str) -> int:
    rpc = client._rpc
    assert rpc is not None
    reply = await rpc.call(address, "node", "status", b"", 2.0)
    return int(msgspec.msgpack.decode(reply)["agents"])


async def _join(cluster: LocalCluster, client: Node, agents: int) -> dict[str, float]:
    refs = [client.ref(BenchAccount, f"join-{i}") for i in range(agents)]
    for chunk in range(0, agents, 500):
        await asyncio.gather(*(r.fill(10) for r in refs[chunk:chunk + 500]))
    started = time.perf_counter()
    index = await cluster.add_node()
    address = cluster.nodes[index].address
    last, stable_since = -1, time.perf_counter()
    while True:
        count = await _hosted(client, address)
        now = time.perf_counter()
        if count != last:
            last, stable_since = count, now
        elif count > 0 and now - stable_since >= 1.0:
            break
        if now - started > 120:
            raise RuntimeError(f"the joining node settled at no share ({count} agents)")
        await asyncio.sleep(0.05)
    return {"join_settled_s": stable_since - started, "join_received": float(last),
            "join_agents": float(agents)}


Measure = Callable[[LocalCluster, Node, dict[str, Any], int], Awaitable[None]]
"""``measure(cluster, client, results, scale)``: fill ``results``; sizes divided by
``scale`` (10 with ``--quick``)."""


def run_on_three_members(*, quick: bool, measure: Measure) -> dict[str, Any]:
    """Run ``measure`` against a fresh 3-member cluster from a client node in this
    process; returns the machine description with what ``measure`` added."""

    async def main() -> dict[str, Any]:
        results: dict[str, Any] = machine_info("asyncio", quick)
        results["node_loop"] = "uvloop when installed"
        async with LocalCluster(3, _IMPORTS) as cluster:
            client = await _client(cluster)
            try:
                await measure(cluster, client, results, 10 if quick else 1)
            finally:
                await client.aclose()
        return results

    return asyncio.run(main())


def run_agents(*, quick: bool, progress: Any) -> dict[str, Any]:
    async def measure(cluster: LocalCluster, client: Node, results: dict[str, Any],
                      scale: int) -> None:
        names = [n.name for n in cluster.nodes]
        progress("routed calls through a client (3 members)")
        results["routed"] = await _routed_calls(client, 500 // scale, 5000 // scale)
        progress("migrations")
        results["migration"] = await _migrations(client, names, 200 // scale, 1000 // scale)
        progress("a joining node receiving its share")
        results["join"] = await _join(cluster, client, 3000 // scale)

    return run_on_three_members(quick=quick, measure=measure)


def print_report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    r, m, j = results["routed"], results["migration"], results["join"]
    table = Table(title=report_title("agents", results))
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("goal (spec)", justify="right")
    table.add_row("routed call p50 / p95 / p99 (client → 3 members)",
                  f"{r['p50_us']:,.0f} / {r['p95_us']:,.0f} / {r['p99_us']:,.0f} µs",
                  f"p95 < {GOAL_CALL_P95_US:,.0f} µs ({SPEC_CALL_P95_US:,.0f})")
    table.add_row("migration of one agent p50 / p95",
                  f"{m['migrate_p50_ms']:.2f} / {m['migrate_p95_ms']:.2f} ms", "—")
    table.add_row("agents migrated per second (32 in flight)",
                  f"{m['migrated_per_s']:,.0f}", "—")
    table.add_row("joining node: time to receive its share",
                  f"{j['join_settled_s']:.2f} s ({j['join_received']:,.0f} of "
                  f"{j['join_agents']:,.0f} agents)", "—")
    Console().print(table)
