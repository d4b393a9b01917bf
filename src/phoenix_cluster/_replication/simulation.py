"""Several replicators in one process: the failure-case tests and the micro-benchmark.

:class:`ReplicaCluster` runs one :class:`~.service.Replicator` per node name on a
:class:`~.memory.MemoryNetwork`, plays membership (which nodes are alive, hence the
partition table each node gets) and injects faults: kill, restart (with or without the
node's SQLite file), join, pause, network cuts. Each node may be given its own view
(:meth:`ReplicaCluster.update`), so tests can make views disagree.

:func:`bench_commits` measures replicated commits per second through three replicas.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._foundation.env import Clock, Env, ManualClock
from .._ring.partitions import PartitionTable
from .._ring.ring import HashRing
from .memory import MemoryNetwork
from .service import Durability, ReplicationSettings, Replicator
from .storage import SqliteStorage, storage_path
from .types import Record

__all__ = ["BenchResult", "ReplicaCluster", "SimClock", "bench_commits", "table_of"]


class SimClock(ManualClock):
    """Virtual time that jumps to the next deadline only when the event loop is idle.

    ``ManualClock(autojump=True)`` jumps after a fixed number of loop iterations, which
    a chain of many hops (a request, its delivery task, the handler, the reply, the
    waiting quorum) outlasts: timeouts would fire while work is still ready. This one
    waits until no callback is ready to run (it reads the loop's ready queue). Work in
    other threads is invisible to it: :class:`ReplicaCluster` counts its SQLite
    operations in :attr:`busy`, during which time stands still too.
    """

    def __init__(self, start: float = 0.0) -> None:
        super().__init__(start, autojump=True)
        self.busy = 0

    def _jump_stage(self, loop: asyncio.AbstractEventLoop, stage: int) -> None:
        if self.busy or getattr(loop, "_ready", None):
            self._jumper = loop.call_soon(self._jump_stage, loop, stage)
            return
        super()._jump_stage(loop, 3)


def table_of(members: Iterable[str], replicas: int = 3, version: int = 0) -> PartitionTable:
    """The partition table every node computes from the same alive members."""
    return PartitionTable.build(HashRing(sorted(members), version=version), replicas)


class ReplicaCluster:
    """Replicators on a memory network, with membership and faults under test control.

    Args:
        clock: every node's clock (a ``ManualClock(autojump=True)`` for determinism).
        seed: seeds the network and each node's randomness.
        data_dir: where nodes keep their SQLite file (``None``: memory only).
        settings: replicator settings for every node.
        replicas: replica count of the partition table.
        direct: batches leave with no pump task when they can (the network's
            ``start_for``, as a node's open connections do); ``False``: every batch
            through ``rpc`` in a pump task.
    """

    def __init__(self, clock: Clock, *, seed: int = 0, data_dir: Path | None = None,
                 settings: ReplicationSettings | None = None, replicas: int = 3,
                 latency_s: float = 0.0, loss: float = 0.0,
                 fsync: Literal["full", "normal"] = "full", direct: bool = True) -> None:
        self.clock = clock
        self.direct = direct
        self.net = MemoryNetwork(clock, seed=seed, latency_s=latency_s, loss=loss)
        self.seed = seed
        self.data_dir = data_dir
        self.fsync = fsync
        self.settings = settings or ReplicationSettings()
        self.replicas = replicas
        self.nodes: dict[str, Replicator] = {}
        self.lost: list[tuple[str, int, str]] = []
        self._boots = 0

    @property
    def alive(self) -> list[str]:
        return sorted(self.nodes)

    async def start(self, name: str) -> Replicator:
        """Start (or restart) node ``name``; it loads its SQLite file if there is one."""
        self._boots += 1
        storage = None
        if self.data_dir is not None:
            kind = _SimStorage if isinstance(self.clock, SimClock) else SqliteStorage
            storage = kind(storage_path(self.data_dir, name), cluster="sim", node=name,
                           fsync=self.fsync)
            if isinstance(storage, _SimStorage):
                assert isinstance(self.clock, SimClock)
                storage.clock = self.clock
        rep = Replicator(
            name, self.net.rpc_for(name),
            Env(clock=self.clock, random=random.Random(self.seed * 1000 + self._boots)),
            incarnation=self._boots, storage=storage, settings=self.settings,
            on_lost=lambda p, reason: self.lost.append((name, p, reason)),
            start=self.net.start_for(name) if self.direct else None,
        )
        await rep.start()
        self.nodes[name] = rep
        self.net.attach(name, rep.handle)
        return rep

    async def start_all(self, names: Iterable[str]) -> None:
        for name in names:
            await self.start(name)
        self.update()

    def update(self, nodes: Iterable[str] | None = None,
               view: Iterable[str] | None = None) -> None:
        """Give ``nodes`` (default: every running node) the view ``view`` (default:
        every running node) as their membership."""
        members = sorted(self.nodes if view is None else view)
        table = table_of(members, self.replicas)
        for name in (self.alive if nodes is None else nodes):
            self.nodes[name].update(table, members)

    async def kill(self, name: str) -> None:
        """Stop ``name`` at once, as kill -9 does (its file, if any, stays)."""
        rep = self.nodes.pop(name)
        self.net.detach(name)
        await rep.aclose()

    async def aclose(self) -> None:
        for name in list(self.nodes):
            await self.kill(name)
        await self.net.aclose()


class _SimStorage(SqliteStorage):
    """SQLite storage that stops virtual time while its worker thread works."""

    clock: SimClock | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        clock = self.clock
        if clock is not None:
            clock.busy += 1
        try:
            return await super()._run(fn, *args)
        finally:
            if clock is not None:
                clock.busy -= 1


@dataclass(frozen=True, slots=True)
class BenchResult:
    """Replicated commits measured by :func:`bench_commits`."""

    commits: int
    seconds: float
    concurrency: int
    durability: str
    batches: int

    @property
    def per_second(self) -> float:
        return self.commits / self.seconds


async def bench_commits(*, commits: int = 20_000, concurrency: int = 64,
                        durability: Durability = "quorum", state_bytes: int = 100,
                        data_dir: Path | None = None,
                        fsync: Literal["full", "normal"] = "full") -> BenchResult:
    """Commits per second on the leader of three in-process replicas (memory network).

    ``concurrency`` agents write in parallel (keys spread over partitions, each agent
    writing sequentially, as the runtime does). Wall-clock time; the network adds no
    latency, so this measures the protocol and batching cost, not the wire.
    """
    from .._foundation.env import SystemClock

    cluster = ReplicaCluster(SystemClock(), data_dir=data_dir, fsync=fsync,
                             settings=ReplicationSettings(eager=False))
    await cluster.start_all(["a", "b", "c"])
    leader = cluster.nodes["a"]
    table = table_of(cluster.alive)
    from .service import partition_for

    keys = [k for k in (f"k{i}" for i in range(concurrency * 50))
            if table.owner(partition_for("bench", k)) == "a"][:concurrency]
    for key in keys:
        await leader.load("bench", key)
    record = Record(b"x" * state_bytes)
    per_key = commits // len(keys)

    async def writer(key: str) -> None:
        for _ in range(per_key):
            await leader.commit("bench", key, record, durability)

    batches0 = leader.statistics().batches_sent
    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in keys))
    await leader.flush()  # async: until the background replication is done
    seconds = time.perf_counter() - started
    batches = leader.statistics().batches_sent - batches0
    await cluster.aclose()
    return BenchResult(per_key * len(keys), seconds, len(keys), durability, batches)
