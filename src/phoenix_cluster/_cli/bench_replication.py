"""The replication benchmarks behind ``phx bench replication``.

One 3-member :class:`~phoenix_cluster.testing.LocalCluster` (real ``phx node`` processes
on loopback importing :mod:`.bench_agents`, replication factor 3) measured from a
``role="client"`` node in this process (sizes divided by 10 with ``quick``):

- update latency: 5,000 sequential state-changing calls spread over 200 agents (after
  one warm-up call each), for each durability: ``quorum`` (reply after a majority
  stored the new state), ``async`` (reply first), ``none`` (memory only, the
  baseline) and an active-active ``crdt`` kind (a GCounter merged into its replicas,
  reply once a majority holds the delta);
- update throughput: 20,000 updates from 100 concurrent callers over 200 agents, per
  durability; reported per member (total updates/s divided by 3), with the cores the
  client and the nodes kept busy meanwhile (from ``/proc``), which tells whether the
  machine ran out of CPU;
- migration: agents holding 0 B to 1 MiB of state are moved one at a time to another
  member; the bytes a handoff carries (the msgpack :class:`HandoffRecord` with the
  agent's encoded state, without its dedup window) and the time per move;
- failover and recovery, last because it kills a member: 900 ``quorum`` agents get a
  few acknowledged updates, one caller keeps updating one agent of the victim, the
  victim is killed with SIGKILL. Measured from the kill: the first successful call on
  the watched agent (its result must be the last acknowledged count + 1, or more only
  by calls whose outcome was unknown), and the time until every agent the victim
  hosted answered with its full acknowledged count. Any shortfall counts as a lost
  committed write.

This module is imported only when ``phx bench replication`` runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import msgspec

from phoenix_cluster._agents.handoff import HandoffRecord
from phoenix_cluster.testing import LocalCluster, wait_until

from .._agents.agent import Agent
from .._agents.ref import AgentRef
from .._node import Node
from ..errors import PhoenixError
from .bench_agents import BenchAsync, BenchBlob, BenchCrdt, BenchQuorum, BenchVolatile
from .bench_cluster_harness import summarize
from .bench_cluster_report import report_title
from .bench_local import save_json
from .bench_placement import run_on_three_members

__all__ = ["print_report", "run_replication", "save_json"]

GOAL_UPDATE_P95_MS = 5.0
SPEC_UPDATE_P95_MS = 50.0
GOAL_UPDATES_PER_NODE = 5_000.0
SPEC_UPDATES_PER_NODE = 1_000.0
GOAL_RECOVERY_S = 5.0
SPEC_RECOVERY_S = 30.0
MIGRATION_SIZES = (0, 1024, 64 * 1024, 1024 * 1024)
_KINDS: dict[str, type[Agent]] = {
    "quorum": BenchQuorum, "async": BenchAsync, "none": BenchVolatile,
    # Active-active (consistency="crdt"): replies once a majority holds the delta.
    "crdt": BenchCrdt,
}
_RETRY_S = 0.02
_DEADLINE_S = 120.0


async def _latency(client: Node, kind: type[Agent], agents: int,
                   calls: int) -> dict[str, float]:
    refs = [client.ref(kind, f"lat-{i}") for i in range(agents)]
    for ref in refs:
        await ref.inc(1)
    clock = time.perf_counter_ns
    samples: list[int] = []
    for i in range(calls):
        started = clock()
        await refs[i % agents].inc(1)
        samples.append(clock() - started)
    s = summarize(samples)
    return {"calls": s["calls"], "p50_ms": s["p50_us"] / 1000, "p95_ms": s["p95_us"] / 1000,
            "p99_ms": s["p99_us"] / 1000, "max_ms": s["max_us"] / 1000,
            "updates_per_s": s["calls_per_s"]}


async def _throughput(cluster: LocalCluster, client: Node, kind: type[Agent],
                      agents: int, callers: int, updates: int) -> dict[str, float]:
    refs = [client.ref(kind, f"tp-{i}") for i in range(agents)]
    await asyncio.gather(*(r.inc(1) for r in refs))
    per_caller = updates // callers

    async def caller(c: int) -> None:
        mine = refs[c::callers]
        for i in range(per_caller):
            await mine[i % len(mine)].inc(1)

    pids = [n.process.pid for n in cluster.nodes if n.process is not None]
    nodes_cpu, client_cpu = _cpu_seconds(pids), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    nodes_cpu = _cpu_seconds(pids) - nodes_cpu
    total = per_caller * callers
    return {"updates": float(total), "callers": float(callers), "seconds": elapsed,
            "updates_per_s": total / elapsed,
            "updates_per_s_per_node": total / elapsed / len(cluster.nodes),
            # Cores busy while measuring (the machine has results["cpu_count"]): tells
            # whether the client or the nodes ran out of CPU.
            "client_cores": client_cpu / elapsed, "nodes_cores": nodes_cpu / elapsed}


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of processes so far, from /proc; 0 where unavailable."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


async def _migrations(client: Node, names: list[str], agents: int) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for size in MIGRATION_SIZES:
        refs = [client.ref(BenchBlob, f"blob-{size}-{i}") for i in range(agents)]
        await asyncio.gather(*(r.fill(size) for r in refs))
        samples: list[int] = []
        moved = 0
        for ref in refs:
            before: bytes = await ref.state()
            host: str = await ref.where()
            target = names[(names.index(host) + 1) % len(names)]
            started = time.perf_counter_ns()
            await client.migrate(ref, to=target)
            samples.append(time.perf_counter_ns() - started)
            # What the handoff carried: the record with the agent's encoded state.
            moved = len(msgspec.msgpack.encode(HandoffRecord(ref.kind, ref.key, before)))
            if await ref.where() != target or await ref.state() != before:
                raise RuntimeError(f"agent {ref.key} lost its state or place in a migration")
        summary = summarize(samples)
        out.append({"state_bytes": float(size), "handoff_bytes": float(moved),
                    "migrate_p50_ms": summary["p50_us"] / 1000,
                    "migrate_p95_ms": summary["p95_us"] / 1000, "migrations": float(agents)})
    return out


async def _until_ok(ref: AgentRef, method: str, started: float) -> tuple[float, int]:
    """Call ``method`` until it succeeds; (seconds since ``started``, its result)."""
    while True:
        try:
            value: int = await getattr(ref, method)()
        except PhoenixError:
            if time.perf_counter() - started > _DEADLINE_S:
                raise RuntimeError(f"{ref.key} did not answer within {_DEADLINE_S:.0f} s "
                                   "of the kill") from None
            await asyncio.sleep(_RETRY_S)
        else:
            return time.perf_counter() - started, value


class _Watcher:
    """Keeps updating one agent; after the kill, notes the first success and checks it."""

    def __init__(self, ref: AgentRef) -> None:
        self.ref = ref.options(timeout=2.0)
        self.acked = 0          # the last acknowledged count
        self.unknown = 0        # calls since then whose outcome was not known
        self.killed_at: float | None = None
        self.failover_s = 0.0
        self.first = 0

    async def run(self) -> None:
        while True:
            # Only a call sent after the kill shows the failover: one answered just
            # before the victim died is an ordinary acknowledged write.
            after_kill = self.killed_at is not None
            try:
                value: int = await self.ref.inc(1)
            except PhoenixError as exc:
                self.unknown += 0 if exc.definite else 1
                if (self.killed_at is not None
                        and time.perf_counter() - self.killed_at > _DEADLINE_S):
                    raise RuntimeError(f"{self.ref.key} did not answer within "
                                       f"{_DEADLINE_S:.0f} s of the kill") from exc
                await asyncio.sleep(_RETRY_S)
                continue
            if after_kill and self.killed_at is not None:
                self.failover_s = time.perf_counter() - self.killed_at
                self.first = value
                return
            self.acked, self.unknown = value, 0

    def lost(self) -> int:
        """Acknowledged updates missing from the first answer after the failover."""
        return max(0, self.acked + 1 - self.first)

    def extra(self) -> int:
        """Updates applied beyond what was sent (a duplicate would show here)."""
        return max(0, self.first - (self.acked + 1 + self.unknown))


async def _failover(cluster: LocalCluster, client: Node, agents: int,
                    updates: int) -> dict[str, float]:
    names = [n.name for n in cluster.nodes]
    refs = [client.ref(BenchQuorum, f"fo-{i}") for i in range(agents)]
    for _ in range(updates):
        await asyncio.gather(*(r.inc(1) for r in refs))
    hosts: list[str] = await asyncio.gather(*(r.where() for r in refs))
    victim = hosts[0]
    watcher = _Watcher(refs[0])
    hosted = [r for r, h in zip(refs, hosts, strict=True) if h == victim][1:]
    watching = asyncio.create_task(watcher.run())
    await wait_until(lambda: watcher.acked >= 20 or watching.done(), timeout=_DEADLINE_S,
                     what="updates of the watched agent")

    async def declared_dead() -> float:
        await wait_until(lambda: any(m.name == victim and m.status == "dead"
                                     for m in client.members()),
                         timeout=_DEADLINE_S, what=f"{victim} declared dead")
        return time.perf_counter() - killed_at

    cluster.kill(names.index(victim))
    killed_at = watcher.killed_at = time.perf_counter()
    detecting = asyncio.create_task(declared_dead())
    gate = asyncio.Semaphore(32)

    async def recover(ref: AgentRef) -> tuple[float, int]:
        async with gate:
            return await _until_ok(ref.options(timeout=2.0), "get", killed_at)

    answers = await asyncio.gather(*(recover(r) for r in hosted))
    await watching
    detected_s = await detecting
    lost = sum(max(0, updates - value) for _, value in answers) + watcher.lost()
    extra = sum(max(0, value - updates) for _, value in answers) + watcher.extra()
    return {"victim_agents": float(len(hosted) + 1), "detected_s": detected_s,
            "failover_s": watcher.failover_s,
            "recovery_s": max([watcher.failover_s, *(s for s, _ in answers)]),
            "committed_checked": float(updates * len(hosted) + watcher.acked),
            "lost_writes": float(lost), "extra_writes": float(extra)}


def run_replication(*, quick: bool, progress: Any) -> dict[str, Any]:
    async def measure(cluster: LocalCluster, client: Node, results: dict[str, Any],
                      scale: int) -> None:
        names = [n.name for n in cluster.nodes]
        results["latency"] = {}
        for durability, kind in _KINDS.items():
            progress(f"{durability} update latency (3 members, RF=3)")
            results["latency"][durability] = await _latency(
                client, kind, 200 // scale, 5000 // scale)
        results["throughput"] = {}
        for durability, kind in _KINDS.items():
            progress(f"{durability} updates/s with 100 callers")
            results["throughput"][durability] = await _throughput(
                cluster, client, kind, 200, 100, 20_000 // scale)
        progress("migrations of agents with 0 B to 1 MiB of state")
        results["migration"] = await _migrations(client, names, max(3, 20 // scale))
        progress("kill -9 of a member: failover and recovery")
        results["failover"] = await _failover(cluster, client, 900 // scale, 3)

    return run_on_three_members(quick=quick, measure=measure)


def _size(n: float) -> str:
    return f"{n / 1024:,.0f} KiB" if n >= 1024 else f"{n:,.0f} B"


def print_report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    lat, tp, f = results["latency"], results["throughput"], results["failover"]
    table = Table(title=report_title("replication", results))
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("goal (spec)", justify="right")
    for durability, r in lat.items():
        goal = "—" if durability in ("none", "crdt") else \
            f"p95 < {GOAL_UPDATE_P95_MS:g} ms ({SPEC_UPDATE_P95_MS:g})"
        table.add_row(f"{durability} update p50/p95/p99",
                      f"{r['p50_ms']:.2f}/{r['p95_ms']:.2f}/{r['p99_ms']:.2f} ms", goal)
    for durability, r in tp.items():
        goal = "—" if durability in ("none", "crdt") else \
            f"> {GOAL_UPDATES_PER_NODE:,.0f} ({SPEC_UPDATES_PER_NODE:,.0f})"
        table.add_row(f"{durability} updates/s per node (cores¹)",
                      f"{r['updates_per_s_per_node']:,.0f} "
                      f"({r['client_cores']:.1f}+{r['nodes_cores']:.1f})", goal)
    for m in results["migration"]:
        table.add_row(f"migrate {_size(m['state_bytes'])} state: bytes, p50",
                      f"{m['handoff_bytes']:,.0f} B, {m['migrate_p50_ms']:.2f} ms", "—")
    table.add_row("kill -9 → member declared dead", f"{f['detected_s']:.2f} s", "—")
    table.add_row("kill -9 → first call answered",
                  f"{f['failover_s']:.2f} s", "—")
    table.add_row(f"kill -9 → all {f['victim_agents']:,.0f} agents answered",
                  f"{f['recovery_s']:.2f} s",
                  f"< {GOAL_RECOVERY_S:g} s ({SPEC_RECOVERY_S:g})")
    table.add_row(f"writes lost (of {f['committed_checked']:,.0f} acked)",
                  f"{f['lost_writes']:,.0f} (extra: {f['extra_writes']:,.0f})", "0 (0)")
    console = Console()
    console.print(table)
    console.print(f"¹ cores busy while measuring: client + the 3 nodes, of "
                  f"{results['cpu_count']} on this machine")
