"""State store figures: commits/s and latency of a store-backed kind on PostgreSQL (and
SQLite) against the in-memory quorum path, measured in one run; event replay time.

- **commit latency** (p50 / p95): sequential calls that each change an agent's state,
  round-robin over 100 keys, on one node; each call returns once its state is committed
  (a PostgreSQL transaction, a SQLite transaction, or a quorum of 3 replicas on an
  in-memory network of 3 nodes in this process).
- **commits/s**: ``--callers`` concurrent callers, each on its own keys, for the same
  number of calls.
- **replay per 10,000 events**: an event-sourced agent with 10,000 stored events and no
  snapshot is activated (first call on a fresh node); the time of that call, median of
  ``--trials`` activations.

The PostgreSQL server is a throwaway one (``phoenix_cluster.testing.postgres``) with
fsync ON (durable), on 127.0.0.1 of the same machine.

Run: ``PYTHONPATH=src python benchmarks/state_stores.py [--calls 2000] [--callers 32]``
(the figures in ``docs/benchmarks.md`` come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

import phoenix_cluster as phx
from phoenix_cluster.testing.memory import MemoryCluster
from phoenix_cluster.testing.postgres import PostgresServer


class PgCounter(phx.Agent, kind="bench.store.pg", store="pg"):
    def __init__(self) -> None:
        self.n = 0

    async def inc(self) -> int:
        self.n += 1
        return self.n


class LiteCounter(phx.Agent, kind="bench.store.sqlite", store="lite"):
    def __init__(self) -> None:
        self.n = 0

    async def inc(self) -> int:
        self.n += 1
        return self.n


class QuorumCounter(phx.Agent, kind="bench.store.quorum"):
    def __init__(self) -> None:
        self.n = 0

    async def inc(self) -> int:
        self.n += 1
        return self.n


class Added(msgspec.Struct):
    amount: int


def _replaying(store_name: str) -> type[phx.EventSourcedAgent]:
    class Replayed(phx.EventSourcedAgent, kind=f"bench.store.replay.{store_name}",
                   store=store_name, snapshot_every=10**9):
        def __init__(self) -> None:
            self.total = 0

        def apply(self, event: Added) -> None:
            self.total += event.amount

        async def get(self) -> int:
            return self.total

    return Replayed


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(call: Callable[[str], Awaitable[object]], calls: int,
                   callers: int) -> dict[str, float]:
    keys = [f"k{i}" for i in range(100)]
    for key in keys:  # activate first: the figure is commits, not activations
        await call(key)
    latencies = []
    for i in range(calls):
        started = time.perf_counter()
        await call(keys[i % len(keys)])
        latencies.append(time.perf_counter() - started)

    async def caller(c: int) -> None:
        for i in range(calls // callers):
            await call(f"c{c}-{i % 4}")

    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    elapsed = time.perf_counter() - started
    return {"p50_ms": _pct(latencies, 0.5) * 1e3, "p95_ms": _pct(latencies, 0.95) * 1e3,
            "commits_per_s": (calls // callers) * callers / elapsed}


async def _replay(node_stores: dict[str, str | phx.StateStore], store: phx.StateStore,
                  store_name: str, events: int, trials: int) -> float:
    kind = _replaying(store_name)
    encoded = [msgspec.msgpack.encode(Added(1))] * 1000
    key = f"replay-{time.time_ns()}"
    for start in range(0, events, 1000):
        await store.append(kind._phx_spec.name, key, encoded, expected=start)
    times = []
    for _ in range(trials):
        async with phx.Node(stores=node_stores) as node:
            started = time.perf_counter()
            assert await node.ref(kind, key).get() == events
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 10_000 / events


async def main(calls: int, callers: int, trials: int) -> None:
    base = tempfile.mkdtemp(prefix="phx-bench-pg-")
    server = PostgresServer(base, durable=True)
    server.start()
    try:
        lite_path = Path(base) / "lite.db"
        stores: dict[str, str | phx.StateStore] = {"pg": server.url,
                                                   "lite": f"sqlite://{lite_path}"}
        results: dict[str, dict[str, float]] = {}
        async with phx.Node(stores=stores) as node:
            results["PostgreSQL store"] = await _measure(
                lambda k: node.ref(PgCounter, k).inc(), calls, callers)
            results["SQLite store"] = await _measure(
                lambda k: node.ref(LiteCounter, k).inc(), calls, callers)
        async with MemoryCluster(3) as cluster:
            first = cluster.nodes[0]
            results["in-memory quorum (3 replicas)"] = await _measure(
                lambda k: first.ref(QuorumCounter, k).inc(), calls, callers)
        for name, r in results.items():
            print(f"{name:32} p50 {r['p50_ms']:6.2f} ms  p95 {r['p95_ms']:6.2f} ms  "
                  f"{r['commits_per_s']:8,.0f} commits/s ({callers} callers)")
        pg = phx.PostgresStore(server.url)
        lite = phx.SqliteStore(lite_path)
        try:
            for name, store, key in (("PostgreSQL", pg, "pg"), ("SQLite", lite, "lite")):
                seconds = await _replay(stores, store, key, 10_000, trials)
                print(f"replay of 10,000 events ({name}): {seconds * 1e3:.0f} ms "
                      f"(median of {trials} activations)")
        finally:
            await pg.aclose()
            await lite.aclose()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.callers, args.trials))
