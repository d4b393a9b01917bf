"""The replication service of one node: the :class:`Replicator` the runtime uses.

:class:`Replicator` drives the pure protocol (``replica.py``, ``leader.py``) with the
node's RPC and clock; docs/design/replication.md is the protocol it follows. It is put
together from one class per job: ``core.py`` (the shared state, stepping down),
``elections.py`` (eager elections, re-elections, their queues, the catch-up loop),
``commits.py`` (commit, group commit, and the handler of peers' batches), ``leases.py``
(load, committed, read leases) and ``handover.py`` (a graceful leave); this module adds
the lifecycle, membership updates and the read-only views.

How the runtime uses it::

    storage = SqliteStorage(storage_path(data_dir, node.name), cluster=cluster_id,
                            node=node.name) if data_dir else None
    replicator = Replicator(node.name, rpc, env, incarnation=node.incarnation,
                            bus=bus, storage=storage, on_lost=on_lost)
    services.register("replication", replicator.handle,  # peers' batches arrive here
                      replicator.handle_now)              # (on the reader, if it can)
    await replicator.start()                             # loads data_dir (StorageError)
    replicator.update(table, alive)                      # on every membership change

    record = await replicator.load(kind, key)            # before activating an agent
    ...                                                  # run a message that changed state
    await replicator.commit(kind, key, Record(state, replies), "quorum")   # then reply

    await replicator.aclose()                            # flushes async writes first

The contract:

- ``rpc(node_name, method, payload, timeout_s) -> bytes`` calls ``handle(method,
  payload)`` on the peer ``node_name`` (``partial(rpc.call_node, "replication")`` of
  ``_transport/rpc.py``); any exception counts as "no answer".
- ``update(table, alive)``: ``table`` is ``PartitionTable.build(ring of the hosting
  members, MAX_REPLICAS)``, ``alive`` the names of the members it was built from. A
  kind with ``replicas=N`` lives in the group ``group_for(kind, key, N)``: the first N
  members of its partition's set (``groups.py``; the default 3's groups are the
  partitions). Keys are served by their group's leader, which must be in the group's
  replica set; route a replicated kind to ``table.owner(partition_for(kind, key))``
  (every count's primary), which elects itself at once (``eager``: every partition,
  and another count's groups where it holds their records) and otherwise on its
  first ``load``.
- ``load(kind, key, replicas) -> Record | None`` makes this node the leader of the
  key's group if it is not yet (an election; ``NotLeader`` outside the replica set,
  ``NoQuorum`` without a majority, both definite), then returns the newest record.
- ``commit(kind, key, record, durability, replicas)`` writes under the leader's epoch
  and returns once a majority stored it (``"quorum"``) or at once (``"async"``; ``flush()`` waits
  for those). Failures: ``NotLeader``/``NoQuorum``, definite only when nothing left
  this node; either way this node stepped down from the partition. Kinds with
  ``durability="none"`` never call the replicator.
- ``on_lost(partition, reason)`` is called synchronously when this node must stop
  serving the agents of ``partition`` it hosts, of any count (``fenced``, ``deposed``,
  ``moved`` by the table, ``no_quorum``, or ``stale``: a re-election found newer writes). The
  runtime deactivates those agents before it runs another message for them; their
  next activation calls ``load`` again. ``leads(partition)`` is the epoch this node
  leads at, or ``None``.
- ``on_led(partition)`` (optional) is called synchronously each time this node wins an
  election of ``partition`` (a first election or a re-election); ``keys_of(partition,
  kind)`` lists the keys of one kind this node's store holds in it. The runtime re-arms
  the durable reminders of the partition from them (``_agents/reminders.py``).
- ``partition_for(kind, key)``, ``statistics()``, ``store`` (read only) for
  introspection; ``primary(partition)`` and ``committed(partition)`` (every committed
  record of a partition, read on its leader) for ``phx backup`` (``export.py``).

Every task belongs to the replicator's :class:`TaskSet` and ends in :meth:`aclose`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .._ring.partitions import PartitionTable
from .._transport.tasks import fail_after
from ..errors import NodeClosed
from .core import Durability, OnLost, ReplicationStatistics
from .groups import DEFAULT_REPLICAS, GroupTable, group_for, partition_for, replicas_of_group
from .handover import HandOver
from .leases import ReadLeases
from .replica import ReplicaStore
from .sending import Rpc
from .settings import ReplicationSettings
from .types import Epoch, config_union

__all__ = [
    "Durability",
    "OnLost",
    "ReplicationSettings",
    "ReplicationStatistics",
    "Replicator",
    "Rpc",
    "group_for",
    "partition_for",
]

_log = logging.getLogger("phoenix_cluster.replication")


class Replicator(HandOver, ReadLeases):
    """Quorum replication of agent records for one node.

    Args:
        name: this node's name (as the partition table names it).
        rpc: calls :meth:`handle` on a peer (see the module docstring).
        env: the node's clock and randomness.
        incarnation: this process's incarnation; with ``name`` it makes the leader id
            unique per process. Default: drawn from ``env.random``.
        bus: telemetry bus for the replication events.
        storage: durable storage (``data_dir``); ``None`` keeps state in memory only.
        settings: timers and limits.
        on_lost: called when this node must stop serving a partition's agents.
        on_led: called when this node wins an election of a partition.
        start: sends a batch on an open connection with no task, its reply handled as
            the connection reads it (``sending.Start``; ``partial(rpc.start_node,
            "replication")``); without it every batch goes through ``rpc`` in a task.
    """

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the durable store, if any. Call once, before ``update``.

        Raises:
            StorageError: the store in ``data_dir`` is unusable.
        """
        if self._started:
            raise RuntimeError(f"replicator {self.name} already started")
        self._started = True
        if self._storage is not None:
            for part in await self._storage.open():
                self._store.restore(part.meta, part.records)
                self._seen[part.meta.partition] = part.meta.promised.counter
            stats = self._store.statistics()
            _log.info("node %s loaded %d partitions (%d records) from %s", self.name,
                      stats.partitions, stats.records, self._storage.path)
            if self._storage.created:
                # A new file under a name that may have been in the cluster before (a
                # lost or emptied volume): it cannot vouch for what this node promised or
                # held, so it counts as forgetful until leaders catch it up, like a node
                # without a data_dir. From now on the file is trusted.
                self._store.amnesiac = True

    async def aclose(self) -> None:
        """Stop leading, cancel elections and sends, close the store. Idempotent."""
        if self._closed:
            return
        try:
            async with fail_after(self._clock, self.settings.rpc_timeout_s):
                await self.flush()
        except TimeoutError:
            _log.warning("node %s closes with %d async writes not yet on a majority",
                         self.name, len(self._async))
        self._closed = True
        self._lost_log.flush()
        self._sender.close()
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        self._leads.clear()
        await self._tasks.aclose()
        for fut in self._elections.values():
            if not fut.done():
                fut.set_exception(NodeClosed(f"node {self.name} stopped"))
        if self._storage is not None:
            await self._storage.aclose()

    # ----------------------------------------------------------------- membership

    def update(self, table: PartitionTable, alive: Iterable[str]) -> None:
        """Take a new partition table and set of alive members.

        ``table`` is built ``MAX_REPLICAS`` wide (``groups.py``): a group of ``N``
        replicas takes the first ``N`` members of its partition's set. Groups whose
        members changed remember their old set until their handoff finishes. A group
        this node leads is given up if the table names another primary (``on_lost(p,
        "moved")``) and re-elected if only its set changed. With ``eager``, this node
        elects itself for every partition it is the primary of, and for every group of
        another count it is the primary of and holds records of.
        """
        if self._closed:
            return
        if self._storage is not None and not self._started:
            raise RuntimeError(f"replicator {self.name}: call start() (it loads data_dir) "
                               "before the first update()")
        previous = self._table
        groups = self._table = GroupTable(table)
        self._alive = frozenset(alive) | {self.name}
        self._table_changed_at = self._clock.monotonic()
        self._table_updated.set()
        if self._catch_up_task is None and self.settings.eager:
            # Without eager elections (tests, simulations) partitions are elected by
            # their traffic only, and so are catch-ups.
            self._catch_up_task = self._tasks.spawn(self._catch_up_loop(), name="catch-up")
        if previous is not None and previous.partitions.replicas is not table.replicas:
            for move in groups.moves(previous):
                p = move.group
                old_set, new_set = tuple(sorted(move.old)), tuple(sorted(move.new))
                if old_set != new_set and self.name in new_set:
                    # A hint for this node's next election of p: ask the old set too.
                    self._old[p] = config_union(self._old.get(p, ()), (old_set,))
                self._table_changed(p)
        if self.settings.eager:
            # Elect in the background, a batch at a time (a cluster's start would otherwise
            # run 4,096 elections at once and starve the first calls, which elect their
            # own partition on demand), groups this replica holds data for first.
            store = self._store
            mine = [g for g, members in groups.groups()
                    if members[0] == self.name and self._in_use(g)]
            mine.sort(key=lambda g: store.partition(g) is None)
            self._eager_pending[:] = mine  # in place: the eager loop drains this list
            self._spawn_eager()

    def members_lost(self, names: Iterable[str], *, after_s: float) -> None:
        """The cluster downed ``names`` (a split-brain ``keep``): after ``after_s`` (time
        for them to have stopped: the losing side decides on its own clock) those that
        keep no data on disk count as gone with their memory, so elections adopt what the
        remembering replicas hold instead of waiting for them forever (replication.md,
        "Lost members"). Durable members are always waited for."""
        at = self._clock.monotonic() + after_s
        downed = sorted(n for n in names if n != self.name)
        for name in downed:
            # Downed again (it woke up and went): the first margin still holds.
            self._downed[name] = min(at, self._downed.get(name, at))
        # Partitions that failed for want of them are retried on their own timers
        # (retry_s), so they elect soon after the margin without a storm of elections.
        _log.info("node %s: %s downed; those without data_dir count as lost in %.1f s",
                  self.name, downed, after_s)

    def member_back(self, name: str) -> None:
        """``name`` is back as a new incarnation: it answers for itself again."""
        self._downed.pop(name, None)

    # ----------------------------------------------------------------- the runtime's API

    def replicates(self, kind: str, key: str, replicas: int = DEFAULT_REPLICAS) -> bool:
        """Whether this node's table names it in the replica set of ``(kind, key)``
        (a kind with ``replicas`` copies)."""
        table = self._table
        return table is not None and self.name in table.members(
            group_for(kind, key, replicas))

    def replica_set(self, group: int) -> tuple[str, ...]:
        """The members this node's table names as ``group``'s replicas, the primary
        first (empty before the first table). A group of the default count is numbered
        as its partition (``group_for``)."""
        table = self._table
        return () if table is None else table.members(group)

    def keys_of(self, partition: int, kind: str) -> list[str]:
        """The keys of ``kind`` this node's store holds in ``partition`` (on its
        leader: every committed one)."""
        state = self._store.partition(partition)
        if state is None:
            return []
        return [key for (k, key) in state.records if k == kind]

    def leads(self, partition: int) -> Epoch | None:
        """The epoch this node leads ``partition`` (a group: ``group_for``) at, or
        ``None``."""
        lead = self._leads.get(partition)
        return None if lead is None else lead.epoch

    def primary(self, partition: int) -> str | None:
        """The member this node's table names first for ``partition`` (who should lead
        it), or ``None`` before the first table."""
        table = self._table
        return None if table is None else table.primary(partition)

    def counts_held(self) -> tuple[int, ...]:
        """The replica counts this node's store holds groups of (a backup reads those
        counts: every committed record is on a majority of its group)."""
        return tuple(sorted({replicas_of_group(g) for g, _ in self._store.partitions()}
                            | {DEFAULT_REPLICAS}))

    # ----------------------------------------------------------------- introspection

    @property
    def store(self) -> ReplicaStore:
        """This node's replica store (read it; do not change it)."""
        return self._store

    def statistics(self) -> ReplicationStatistics:
        return ReplicationStatistics(
            leading=len(self._leads),
            elections=self._elections_run,
            elections_failed=self._elections_failed,
            commits=self._commits,
            commit_failures=self._commit_failures,
            steps_down=self._steps_down,
            batches_sent=self._sender.batches,
            items_sent=self._sender.items,
            store=self._store.statistics(),
        )

    def __repr__(self) -> str:
        stats = self._store.statistics()
        return (f"<Replicator {self.name} [leads {len(self._leads)}, "
                f"{stats.records} records in {stats.partitions} partitions]>")


