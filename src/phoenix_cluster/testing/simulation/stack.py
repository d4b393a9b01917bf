"""Whole nodes in one process: membership, ring, placement, replication and the agent
host of every node, on the in-memory network, in virtual time, under one seed.

The nodes are :class:`~phoenix_cluster.Node` objects (the production code above the
transport) in a :class:`~phoenix_cluster.testing.memory.MemoryCluster` on a
:class:`~phoenix_cluster.testing.memory.VirtualTimeLoop`; a client node runs the
:mod:`.ledger` workload while the plan's faults strike:

- ``loss`` and ``delay`` on every link (frames and datagrams), ``dup`` and jitter of
  datagrams (frames keep their order, as on TCP);
- ``partition``: a third of the members is cut off for :data:`PARTITION_S`;
- ``pause``: one member is cut off from everyone for :data:`PAUSE_S` (its own timers
  keep running, unlike a frozen process: the membership layer freezes members for real);
- ``crash``: one member is killed and started again without its data;
- ``crash-disk``: one member is killed and started again on its ``data_dir`` (SQLite,
  written in the event loop's thread so that virtual time never passes a write).

One fault at a time, in that order (after a member joins): after each one the run waits
until the cluster settles, starting again the members that split-brain resolution
downed (with ``overlap``, the faults follow each other and the run waits once, at the
end). Then the workload stops and the checker reads every ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import tempfile
from dataclasses import dataclass
from typing import Any, Literal

from ..._node import Node, NodeState
from ..._replication.storage import SqliteStorage
from ...errors import DefiniteError, IndefiniteError, PhoenixError
from ..memory import MemoryCluster
from .faults import FaultPlan, TraceRecorder
from .ledger import Ledger, history_violations, reset_lives

__all__ = ["PARTITION_S", "PAUSE_S", "StackRun", "simulate_stack"]

PARTITION_S = 8.0
PAUSE_S = 5.0
_WORKERS = 4
_KEYS = 12
_DOWN_S = 6.0  # how long a crashed member stays down
_SETTLE_LIMIT_S = 120.0


class InlineSqliteStorage(SqliteStorage):
    """:class:`SqliteStorage` that writes in the caller's thread (under virtual time a
    worker thread would let the clock jump past a write still running), with
    ``fsync="normal"``: a simulated crash is a process kill, which loses nothing
    committed to the WAL, and a run does not wait for the disk."""

    def __init__(self, path: str | os.PathLike[str], *, cluster: str, node: str,
                 fsync: Literal["full", "normal"] = "normal") -> None:
        super().__init__(path, cluster=cluster, node=node, fsync="normal")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


@dataclass(slots=True)
class StackRun:
    """What the full-stack layer of one run measured.

    Attributes:
        nodes: members at the start (one more joins during the run).
        acknowledged, definite_failures, unknown_outcomes: the workload's operations
            by outcome.
        lost_acked_writes: acknowledged operations missing from their ledger.
        duplicate_writes: operations present twice in a ledger.
        duplicate_activations: see :mod:`.ledger`.
        unreadable_ledgers: ledgers that never answered a read after the last fault
            (their writes are neither counted lost nor checked).
        untyped_errors: calls that failed with an error neither definite nor
            indefinite (the caller cannot tell whether the call ran).
        settle_rounds: the longest wait, in probe periods, after a fault until every
            running node saw the same members and caught up with every partition
            (``None``: some wait passed its limit; ``unsettled`` names the faults).
        sim_seconds: simulated time of the run.
    """

    nodes: int
    acknowledged: int = 0
    definite_failures: int = 0
    unknown_outcomes: int = 0
    lost_acked_writes: int = 0
    duplicate_writes: int = 0
    duplicate_activations: int = 0
    unreadable_ledgers: int = 0
    untyped_errors: int = 0
    settle_rounds: float | None = None
    unsettled: list[str] = dataclasses.field(default_factory=list)
    sim_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def simulate_stack(nodes: int, seed: int, plan: FaultPlan, trace: TraceRecorder) -> StackRun:
    """Run the workload on ``nodes`` whole nodes under ``plan``; deterministic in ``seed``."""
    from ..memory import run_virtual

    if nodes < 3:
        raise ValueError(f"the full-stack simulation needs at least 3 nodes, got {nodes}")
    reset_lives()
    # In memory when the machine has a tmpfs: the disk is simulated, not measured.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="phx-sim-", dir=shm) as data_dir:
        return run_virtual(_Run(nodes, seed, plan, trace, data_dir).main(), limit_s=3600)


class _Run:
    def __init__(self, nodes: int, seed: int, plan: FaultPlan, trace: TraceRecorder,
                 data_dir: str) -> None:
        self.plan, self.trace, self.data_dir = plan, trace, data_dir
        self.chance = random.Random(f"stack/{seed}")
        self.result = StackRun(nodes=nodes)
        options: dict[str, Any] = {"data_dir": data_dir} if plan.crash_disk else {}
        self.cluster = MemoryCluster(nodes, seed=seed, storage_class=InlineSqliteStorage,
                                     **options)
        self.acked: dict[str, list[int]] = {}
        self.settled = True
        self.stop = False
        self.next_op = 0

    def note(self, line: str) -> None:
        self.trace(f"{asyncio.get_running_loop().time()!r} {line}")

    async def main(self) -> StackRun:
        net, plan = self.cluster.network, self.plan
        net.trace = self.trace
        async with self.cluster as cluster:
            net.duplicate = plan.duplicate
            lo, hi = plan.latency_ms
            net.jitter_s = (hi - lo) / 1000
            # every link, those of nodes started later included
            net.default_link = (plan.loss, lo / 1000)
            members = [n.name for n in cluster.nodes]
            client = await cluster.add("client", role="client")
            async with asyncio.TaskGroup() as workers:
                for i in range(_WORKERS):
                    workers.create_task(self.worker(client, i))
                await self.nemesis(members)
                await asyncio.sleep(5.0)
                self.stop = True
            await self.check(client)
        self.result.sim_seconds = asyncio.get_running_loop().time()
        return self.result

    async def worker(self, client: Node, index: int) -> None:
        chance = random.Random(f"{self.chance.random()}/{index}")
        while not self.stop:
            key = f"ledger-{chance.randrange(_KEYS)}"
            op, self.next_op = self.next_op, self.next_op + 1
            try:
                await client.ref(Ledger, key).append(op)
            except DefiniteError as exc:
                self.result.definite_failures += 1
                self.note(f"op {op} {key} failed {type(exc).__name__}")
            except IndefiniteError as exc:
                self.result.unknown_outcomes += 1
                self.note(f"op {op} {key} unknown {type(exc).__name__}")
            except PhoenixError as exc:  # neither: the caller cannot tell what happened
                self.result.untyped_errors += 1
                self.note(f"op {op} {key} UNTYPED {type(exc).__name__}: {exc}")
            else:
                self.result.acknowledged += 1
                self.acked.setdefault(key, []).append(op)
                self.note(f"op {op} {key} acked")
            await asyncio.sleep(chance.uniform(0.02, 0.2))

    async def nemesis(self, members: list[str]) -> None:
        """One fault at a time, each followed by a wait until the cluster settles (three
        replicas ride out one failure; two at once may make a partition unavailable,
        which the workload sees as definite failures); with ``overlap``, back to back,
        and one wait at the end."""
        cluster, net, plan, chance = self.cluster, self.cluster.network, self.plan, self.chance
        await asyncio.sleep(2.0)
        joiner = await cluster.add(f"n{len(members) + 1}", **self._disk())
        self.note(f"join {joiner.name}")
        await self.settle("the join")
        between = _nothing if plan.overlap else self.settle
        if plan.crash:
            await self.crash(chance.choice(members), disk=False)
            await between("the crash")
        if plan.crash_disk:
            await self.crash(chance.choice(members), disk=True)
            await between("the crash with disk")
        if plan.pause:
            paused = chance.choice(members)
            self.note(f"pause {paused}")
            net.cut([paused])
            await asyncio.sleep(PAUSE_S)
            net.heal()
            self.note("heal")
            await between("the pause")
        if plan.partition:
            side = chance.sample(members, max(1, len(members) // 3))
            self.note(f"partition {' '.join(side)}")
            net.cut(side)
            await asyncio.sleep(PARTITION_S)
            net.heal()
            self.note("heal")
            await between("the partition")
        if plan.overlap:
            await self.settle("the faults")

    async def settle(self, after: str) -> None:
        """Wait until every running node sees the same members and has caught up,
        starting again the members that split-brain resolution downed meanwhile; the
        rounds it took go into ``settle_rounds`` (the longest wait of the run)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < _SETTLE_LIMIT_S:
            await self.restart_downed()
            try:
                await self.cluster.wait_settled(timeout_s=5.0)
            except TimeoutError:
                continue
            rounds = (loop.time() - started) / _period(self.cluster)
            self.note(f"settled after {after}: {rounds!r} rounds")
            if self.settled:
                self.result.settle_rounds = max(self.result.settle_rounds or 0.0, rounds)
            return
        self.note(f"not settled after {after}")
        for node in self.cluster.alive():  # what each node saw, for whoever replays it
            ring = sorted(node.ring.members) if node.ring is not None else None
            self.note(f"view {node.name}: joined {node.joined}, ring {ring},"
                      f" lagging partitions {node.lagging_partitions}")
        self.settled = False
        self.result.settle_rounds = None
        self.result.unsettled.append(after)

    async def restart_downed(self) -> None:
        cluster = self.cluster
        for name in dict.fromkeys(n.name for n in cluster.nodes if n.name != "client"):
            node = cluster.node(name)
            if node.state is not NodeState.RUNNING and node not in cluster._killed:
                await node.wait_stopped()
                await cluster.add(name, **self._disk())
                self.note(f"restart downed {name}")

    def _disk(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir} if self.plan.crash_disk else {}

    async def crash(self, name: str, *, disk: bool) -> None:
        cluster = self.cluster
        self.note(f"crash {name} {'with' if disk else 'without'} disk")
        old = cluster.kill(name)
        await asyncio.sleep(_DOWN_S)
        await old.aclose()  # the process is gone: its files are closed
        options: dict[str, Any] = {"data_dir": self.data_dir if disk else None}
        if not disk and self.plan.crash_disk:  # a new machine: an empty disk of its own
            options["data_dir"] = f"{self.data_dir}/fresh-{name}-{len(cluster.nodes)}"
        await cluster.add(name, **options)
        self.note(f"restart {name}")

    async def check(self, client: Node) -> None:
        result = self.result
        for i in range(_KEYS):
            key = f"ledger-{i}"
            writes: list[list[Any]] | None = None
            for _ in range(20):  # the ledger answers once its partition has a leader
                try:
                    writes = await client.ref(Ledger, key).read()
                    break
                except (DefiniteError, IndefiniteError) as exc:
                    self.note(f"read {key} failed {type(exc).__name__}")
                    await asyncio.sleep(1.0)
            if writes is None:  # not known to be lost: not known at all
                result.unreadable_ledgers += 1
                self.note(f"UNREADABLE {key}")
                continue
            ops = [op for op, _ in writes]
            lost = sorted(set(self.acked.get(key, ())) - set(ops))
            if lost:
                self.note(f"LOST {key}: {lost}")
            result.lost_acked_writes += len(lost)
            result.duplicate_writes += len(ops) - len(set(ops))
            result.duplicate_activations += history_violations(writes)
            hosts = [n.name for n in self.cluster.alive()
                     if n._runtime.holds(Ledger._phx_spec, key) and _active(n, key)]
            result.duplicate_activations += max(0, len(hosts) - 1)
            self.note(f"ledger {key} {len(ops)} writes, hosts {hosts}")


def _active(node: Node, key: str) -> bool:
    kinds = node._runtime._kinds
    kr = kinds.get(Ledger._phx_spec.name)
    return kr is not None and key in kr.activations


async def _nothing(after: str) -> None:
    pass


def _period(cluster: MemoryCluster) -> float:
    return float(cluster.nodes[0].settings.probe_interval_s)
