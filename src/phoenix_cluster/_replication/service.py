"""The replication service of one node: elections, commits, batching, the RPC handler.

:class:`Replicator` drives the pure protocol (``replica.py``, ``leader.py``) with the
node's RPC and clock; docs/design/replication.md is the protocol it follows.

How the runtime uses it::

    storage = SqliteStorage(storage_path(data_dir, node.name), cluster=cluster_id,
                            node=node.name) if data_dir else None
    replicator = Replicator(node.name, rpc, env, incarnation=node.incarnation,
                            bus=bus, storage=storage, on_lost=on_lost)
    services.register("replication", replicator.handle)  # peers' batches arrive here
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

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import msgspec

from .._foundation.env import Env, TimerHandle
from .._ring.hashing import key_hash
from .._ring.partitions import PARTITIONS, PartitionTable, partition_of
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from .._transport.tasks import LogLimiter, LogSummary, TaskSet, fail_after
from ..errors import NodeClosed, NoQuorum, NotLeader, PhoenixError, ProtocolError
from .campaign import Campaign, CampaignContext
from .groups import (
    DEFAULT_REPLICAS,
    GroupTable,
    group_of,
    partition_of_group,
    replicas_of_group,
)
from .leader import Quorum
from .messages import (
    Accept,
    Ack,
    BatchReply,
    Item,
    Known,
    Mark,
    Probe,
    Promise,
    Reply,
    WireEntry,
    decode_batch,
    encode,
)
from .replica import ReplicaStatistics, ReplicaStore
from .sending import ACCEPT_OVERHEAD, Rpc, Sender, deciding, result_of, retrieve
from .settings import ReplicationSettings
from .storage import SqliteStorage
from .types import Config, Entry, Epoch, Record, config_members, config_union, majority

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

OnLost = Callable[[int, str], None]
"""``on_lost(partition, reason)``: stop serving the agents of ``partition``."""

Durability = Literal["quorum", "async"]


EAGER_BATCH = 64
"""Eager elections run at most this many at a time."""
CATCH_UP_BACKOFF_MAX_S = 30.0
"""Longest wait between two catch-up probes of one lagging partition."""


def partition_for(kind: str, key: str) -> int:
    """The partition of an agent address: ``partition_of(key_hash(kind, key))``."""
    return partition_of(key_hash(kind, key))


def group_for(kind: str, key: str, replicas: int = DEFAULT_REPLICAS) -> int:
    """The replication group of an agent address whose kind keeps ``replicas`` copies
    (``groups.py``; the partition itself for the default 3)."""
    return group_of(partition_for(kind, key), replicas)


def group_name(group: int) -> str:
    """How logs and errors name a group: its partition, and its count if not 3."""
    n = replicas_of_group(group)
    p = partition_of_group(group)
    return f"partition {p}" if n == DEFAULT_REPLICAS else f"partition {p} (replicas={n})"


@dataclass(frozen=True, slots=True)
class ReplicationStatistics:
    """A point-in-time view of a node's replication (telemetry and tests read it)."""

    leading: int
    elections: int
    elections_failed: int
    commits: int
    commit_failures: int
    steps_down: int
    batches_sent: int
    items_sent: int
    store: ReplicaStatistics


class _Group:
    """Writes to one partition made in one loop iteration, replicated together."""

    __slots__ = ("entries", "outcome", "size", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.entries: list[WireEntry] = []
        self.size = ACCEPT_OVERHEAD  # sending.item_size of their accept, kept as they come
        self.outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Lead:
    """This node leads a partition: its epoch, replica set and next sequence number."""

    __slots__ = ("confirmed", "electing", "epoch", "group", "idle", "inflight", "members",
                 "seq")

    def __init__(self, epoch: Epoch, members: tuple[str, ...], next_seq: int,
                 confirmed: float) -> None:
        self.epoch = epoch
        self.confirmed = confirmed  # when a majority last showed nobody deposed it
        self.members = members  # sorted: the config (members,)
        self.seq = next_seq - 1
        self.inflight = 0
        self.idle: asyncio.Event | None = None
        self.electing: asyncio.Future[None] | None = None
        self.group: _Group | None = None

    @property
    def config(self) -> Config:
        return (self.members,)

    def done_one(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self.idle is not None:
            self.idle.set()


class Replicator:
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
    """

    def __init__(
        self,
        name: str,
        rpc: Rpc,
        env: Env,
        *,
        incarnation: int | None = None,
        bus: TelemetryBus | None = None,
        storage: SqliteStorage | None = None,
        settings: ReplicationSettings | None = None,
        on_lost: OnLost | None = None,
        on_led: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        inc = env.random.getrandbits(48) if incarnation is None else incarnation
        self.leader_id = sys.intern(f"{name}#{inc}")
        self._rpc = rpc
        self._clock = env.clock
        self._random = env.random
        self._bus = bus
        self._storage = storage
        self.settings = settings or ReplicationSettings()
        self.on_lost = on_lost
        self.on_led = on_led
        # A durable store is trusted: what its file lacks, this node never held, once the
        # file exists (a new file is amnesiac: ``start``; docs: Storage).
        self._store = ReplicaStore(name, journal=storage is not None, amnesiac=storage is None)
        self._table: GroupTable | None = None
        self._alive: frozenset[str] = frozenset({name})
        self._old: dict[int, Config] = {}
        self._leads: dict[int, _Lead] = {}
        self._elections: dict[int, asyncio.Future[_Lead]] = {}
        self._recheck: set[int] = set()
        self._retries: dict[int, TimerHandle] = {}
        self._seen: dict[int, int] = {}
        self._async: set[asyncio.Future[None]] = set()
        self._catch_ups: dict[int, float] = {}
        self._fresh: set[int] = set()
        """Partitions this process was caught up on: it took a leader's mark naming it,
        or won an election (see :meth:`lagging`)."""
        self._catch_up_task: asyncio.Task[None] | None = None
        self._relead_pending: list[int] = []
        self._relead_queued: set[int] = set()
        self._relead_task: asyncio.Task[None] | None = None
        self._catch_up_backoff: dict[int, tuple[float, float]] = {}
        self._table_updated = asyncio.Event()
        """Lagging partition -> (when to ask its primary again, the next interval)."""
        self._leaving = False
        self._tasks = TaskSet(f"replication {name}")
        self._sender = Sender(name, rpc, self._clock, self._tasks,
                              batch_max_bytes=self.settings.batch_max_bytes,
                              timeout_s=self.settings.rpc_timeout_s)
        self._ctx = CampaignContext(
            name=name, store=self._store, sender=self._sender, tasks=self._tasks,
            clock=self._clock, random=self._random, settings=self.settings,
            alive=lambda: self._alive, persist=self._persist, next_epoch=self._next_epoch,
            note_seen=self._note_seen, lost=self._lost, note_promise=self._note_promise,
        )
        self._downed: dict[str, float] = {}  # name -> when it counts as lost
        self._peer_durable: dict[str, bool] = {}
        self._limiter = LogLimiter(self._clock)
        # One INFO line per burst: a membership change moves hundreds of partitions.
        self._lost_log = LogSummary(self._clock, _log,
                                    f"node {name} stopped serving partitions")
        self._started = False
        self._closed = False
        self._eager_pending: list[int] = []
        self._table_changed_at = 0.0
        self._eager_task: asyncio.Task[None] | None = None
        self._elections_run = 0
        self._elections_failed = 0
        self._commits = 0
        self._commit_failures = 0
        self._steps_down = 0

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
        self._sender.closed = True
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
            self._eager_pending = mine
            self._spawn_eager()

    def _spawn_eager(self) -> None:
        if self._eager_task is None or self._eager_task.done():
            self._eager_task = self._tasks.spawn(self._eager_elections(), name="eager")

    def _in_use(self, g: int) -> bool:
        """Whether group ``g`` is elected eagerly and counted as lagging: a partition
        (the default count), or a group of another count this node holds records of.
        Other groups are elected by their first ``load``: a count costs elections only
        where it has records (replication.md, "Replica counts")."""
        return g < PARTITIONS or self._store.partition(g) is not None

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

    def _lost(self) -> frozenset[str]:
        if not self._downed:
            return frozenset()
        now = self._clock.monotonic()
        own = self._storage is not None
        return frozenset(name for name, at in self._downed.items()
                         if now >= at and name not in self._alive
                         and not self._peer_durable.get(name, own))

    def _note_promise(self, node: str, promise: Promise) -> None:
        self._peer_durable[node] = promise.durable

    def _table_changed(self, p: int) -> None:
        table = self._table
        assert table is not None
        if p in self._elections:
            self._recheck.add(p)
            return
        lead = self._leads.get(p)
        if lead is None:
            return
        if lead.electing is not None:
            self._recheck.add(p)
            return
        new = table.members(p)
        if new[0] != self.name:
            self._lose(p, "moved")
        elif tuple(sorted(new)) != lead.members:
            self._relead(p, lead)

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

    def lagging(self) -> list[int]:
        """Groups in use (partitions, and the groups of the other replica counts this
        node serves or holds records of) whose replica set (in this node's table) names
        this node but that no leader has caught up since this process started: until a
        leader marks it,
        this replica may lack committed writes (it restarted without its data, or with
        a file older than the partition's majority). A node is ready to serve, and an
        orchestrator may take the next node down, only once this is empty (a rolling
        restart must never leave a partition with one up-to-date copy). Everything
        while the node has no table yet."""
        table = self._table
        if table is None:
            return list(range(PARTITIONS))
        name, fresh, leads = self.name, self._fresh, self._leads
        return [g for g, members in table.groups()
                if name in members and g not in fresh and g not in leads
                and self._in_use(g)]

    async def hand_over(self, partitions: PartitionTable, timeout_s: float) -> int:
        """A graceful leave: hand every partition this node leads to its primary in
        ``table`` (the table without this node) before the node stops serving.

        Each next primary is asked (a ``take_over`` probe) to elect itself now, while this
        node still answers: this node promises the new epoch (which fences its own
        writes) and shows everything it committed, so the next leader adopts it all and
        copies it to a majority before it serves. From here on this node starts no
        election (``load`` raises a definite ``NotLeader``: callers route again).
        Returns how many partitions were handed over; those still led after
        ``timeout_s`` are left to the elections that follow the leave (logged).
        """
        self._leaving = True
        self._eager_pending = []
        table = GroupTable(partitions)
        handed = set(self._leads)
        deadline = self._clock.monotonic() + timeout_s
        # Hold new writes of every partition it leads and let the running ones finish:
        # the successor's promise then fences nothing in flight. A write that waited
        # finds the partition gone and fails definite (nothing stored: routed again).
        holds = self._hold_writes()
        try:
            while (any(lead.inflight for lead, _ in holds.values())
                   and self._clock.monotonic() < deadline and not self._closed):
                await self._clock.sleep(0.01)
            asked_at, asked_alive = -1e18, self._alive
            needed: list[int] = []
            # Partitions that needed this node: re-marked without needing it, they are
            # done only once the other members confirm they took the mark too (a
            # majority of the new config may be this node and the leader alone, the
            # third still catching up: without this node, no synced majority).
            watched: set[int] = set()
            confirmed: set[int] = set()
            probed: set[int] = set()
            checked_at = -1e18
            while not self._closed:
                for p in [p for p in holds if p not in self._leads]:
                    self._release_hold(holds.pop(p))
                now = self._clock.monotonic()
                moved = self._alive != asked_alive  # membership changed since the asks
                if moved or now - checked_at >= 0.1:  # a scan of every partition
                    needed, checked_at = self._needed_here(), now
                    confirmed.difference_update(needed)
                    watched.update(needed)
                    watched -= confirmed
                if not self._leads and not needed and not watched:
                    break
                if now >= deadline:
                    _log.warning("node %s leaves still leading %d partitions and needed by %d "
                                 "more (no successor took them within %.1f s)", self.name,
                                 len(self._leads), len(watched.union(needed)), timeout_s)
                    break
                # Again every retry_s, and at once when membership changed: a death
                # noticed late in the budget leaves little time for the re-elections.
                if moved or now - asked_at >= self.settings.retry_s:
                    asked_at, asked_alive = now, self._alive
                    # Probed last round and still unconfirmed: a member missed the mark.
                    missed = sorted(probed & watched - confirmed - set(needed))
                    self._ask_successors(table, needed + missed)
                    probed = watched.difference(needed, missed)
                    self._confirm_marks(sorted(probed), confirmed)
                await self._clock.sleep(0.02)
        finally:
            for hold in holds.values():
                self._release_hold(hold)
        return len(handed) - len(handed & set(self._leads))

    def _ask_successors(self, table: GroupTable, needed: list[int]) -> None:
        """Ask for the elections a leave needs: each partition led here from its next
        primary; each partition led elsewhere that needs this node's copy from its
        leader (a re-election: the new config has a majority without this node once
        membership says who is gone), or from its next primary when the leader is gone."""
        for p in list(self._leads):
            target = self._successor(table, p)
            if target is not None:
                self._sender.send(target, Probe(p, take_over=True)).add_done_callback(retrieve)
        for p in needed:
            leader = self._store.promised(p).leader.rpartition("#")[0]
            target = leader if leader in self._alive and leader != self.name \
                else self._successor(table, p)
            if target is not None:
                self._sender.send(target, Probe(p, catch_up=True, take_over=True)) \
                    .add_done_callback(retrieve)

    def _confirm_marks(self, partitions: list[int], confirmed: set[int]) -> None:
        """Probe the other alive members of each partition's config (read only); a
        partition joins ``confirmed`` once all of them report the mark this node took,
        synced. One that did not take it (its catch-up was fenced by a later election)
        is caught up by its leader's re-election, which the next round asks for."""
        for p in partitions:
            state = self._store.partition(p)
            if state is None:
                confirmed.add(p)
                continue
            others = sorted((config_members(state.config) & self._alive) - {self.name})
            replies = [self._sender.send(member, Probe(p)) for member in others]

            def check(_: object, p: int = p, marked: Epoch = state.marked,
                      replies: list[asyncio.Future[Reply]] = replies) -> None:
                if all(f.done() for f in replies) and all(
                        isinstance(r := result_of(f), Known) and r.marked >= marked
                        and r.synced for f in replies):
                    confirmed.add(p)

            if not replies:
                confirmed.add(p)
            for fut in replies:
                fut.add_done_callback(check)

    def _needed_here(self) -> list[int]:
        """Partitions led elsewhere whose marked config keeps no majority of alive
        members without this node in some set (a member of it died): once this node is
        gone, no election finds a synced majority there, and what only it and the dead
        member hold would be lost. A set that has no alive majority even with this node
        is left out: asking cannot help it."""
        others = self._alive - {self.name}
        needed = []
        for p, state in self._store.partitions():
            if p in self._leads:
                continue
            for members in state.config:
                if (self.name in members and not self._alive.issuperset(members)
                        and len(others.intersection(members)) + 1 == majority(members)):
                    needed.append(p)
                    break
        return needed

    def _successor(self, table: GroupTable, p: int) -> str | None:
        """Who should take ``p`` over from this leaving node: its first replica in
        ``table`` (the table without this node) that is still alive in this node's view.

        A member that died after the leave began (or before, undetected) is skipped
        once membership says so: the ring walk without it names the same members in the
        same order, so the next one is the primary of the table the others will build.
        Asking only the dead primary would leave ``p`` led by nobody but this node when
        it goes, with its records on one remaining replica (replication.md, "Rolling
        restarts": a death during a leave)."""
        for member in table.members(p):
            if member != self.name and member in self._alive:
                return member
        return None

    def _hold_writes(self) -> dict[int, tuple[_Lead, asyncio.Future[None]]]:
        """Make new writes of every partition led here wait (as during a re-election)."""
        loop = asyncio.get_running_loop()
        holds = {}
        for p, lead in self._leads.items():
            if lead.electing is None:
                fut: asyncio.Future[None] = loop.create_future()
                fut.add_done_callback(retrieve)
                lead.electing = fut
                holds[p] = (lead, fut)
        return holds

    @staticmethod
    def _release_hold(hold: tuple[_Lead, asyncio.Future[None]]) -> None:
        lead, fut = hold
        if lead.electing is fut:
            lead.electing = None
        if not fut.done():
            fut.set_result(None)

    async def _catch_up_loop(self) -> None:
        """Ask the primaries of lagging partitions to catch this replica up (a ``Probe``
        with ``catch_up``: the primary re-elects), each less and less often. Most need
        no asking: a rejoin changes the table, and primaries whose set changed re-elect
        on their own."""
        settings = self.settings
        while not self._closed:
            await self._clock.sleep(settings.retry_s)
            table = self._table
            if (table is None or self._leaving
                    or self._clock.monotonic() - self._table_changed_at
                    < settings.catch_up_after_s):
                continue
            lagging = self.lagging()
            if not lagging:
                # Caught up: nothing to do until the next table change.
                self._table_updated.clear()
                await self._table_updated.wait()
                continue
            now = self._clock.monotonic()
            backoff = self._catch_up_backoff
            for p in lagging:
                at, interval = backoff.get(p, (now, settings.retry_s))
                if now < at:
                    continue
                # Ask again later, less and less often: a primary that cannot elect (no
                # majority yet) must not be asked every second by every lagging replica.
                backoff[p] = (now + interval, min(interval * 2, CATCH_UP_BACKOFF_MAX_S))
                primary = table.primary(p)
                if primary == self.name:
                    self._queue_election(p)
                elif primary in self._alive:
                    self._sender.send(primary, Probe(p, catch_up=True)).add_done_callback(
                        retrieve)

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

    async def committed(self, partition: int) -> list[WireEntry]:
        """Every record of ``partition`` (a group: ``group_for``) a majority of its
        replicas stored, leading it first (an election, as :meth:`load`), for a backup.

        The records are read from this node's store, which as the leader's holds every
        committed record and, for a moment, the writes still in flight. A round sent
        after those writes (an accept with no entries) settles them: replicas answer one
        batch at a time, in order, so a majority that took the round took the earlier
        writes too, unless one of them failed, which makes this node step down.

        Raises:
            NotLeader: this node is not in the partition's replica set (definite), or it
                stepped down while reading (definite: nothing was written).
            NoQuorum: too few replicas answered.
        """
        lead = await self._ensure(partition)
        state = self._store.partition(partition)
        records = [] if state is None else list(state.wire_entries())
        await asyncio.shield(self._group(partition, lead).outcome)
        if self._leads.get(partition) is not lead:
            raise NotLeader(f"node {self.name} stopped leading {group_name(partition)} "
                            "while reading it", partition=partition_of_group(partition),
                            definite=True)
        return records

    def counts_held(self) -> tuple[int, ...]:
        """The replica counts this node's store holds groups of (a backup reads those
        counts: every committed record is on a majority of its group)."""
        return tuple(sorted({replicas_of_group(g) for g, _ in self._store.partitions()}
                            | {DEFAULT_REPLICAS}))

    async def load(self, kind: str, key: str,
                   replicas: int = DEFAULT_REPLICAS) -> Record | None:
        """The newest committed record of ``(kind, key)``, leading its group first.

        A kind's records live in the group of its partition for its ``replicas``
        (``groups.py``). If this node does not lead the group, it runs an election: it
        gets promises of a higher epoch from majorities of the replica sets (old and
        new), adopts the newest records they show and copies them to a majority of the
        new set.

        Returns:
            The record, or ``None`` if the key was never written.

        Raises:
            NotLeader: this node is not in the partition's replica set (definite).
            NoQuorum: too few replicas answered (definite).
            NodeClosed: the replicator is closed.
        """
        p = group_for(kind, key, replicas)
        lead = self._leads.get(p)
        if lead is not None and lead.electing is None and (
                self._clock.monotonic() - lead.confirmed > self.settings.confirm_after_s):
            await self._confirm(p, lead)
            lead = self._leads.get(p)
        if lead is None or lead.electing is not None:
            await self._ensure(p)
        entry = self._store.get(p, kind, key)
        return None if entry is None else entry.record

    async def commit(self, kind: str, key: str, record: Record,
                     durability: Durability = "quorum",
                     replicas: int = DEFAULT_REPLICAS) -> None:
        """Store ``record`` as the newest state of ``(kind, key)`` on its replicas.

        Call only after :meth:`load` of the key on this node, and not after
        ``on_lost`` of its partition until a new ``load``.

        Args:
            kind, key: the agent address.
            record: the agent's encoded state and dedup window.
            durability: ``"quorum"`` returns once a majority of the replica set stored
                the record; ``"async"`` returns once this node stored it and
                replicates in the background (a crash of this node may lose it).
            replicas: the kind's replica count (as passed to :meth:`load`).

        Raises:
            NotLeader: this node does not lead the partition (``definite=True``:
                nothing stored), or a replica promised a newer leader while writing
                (``definite=False``). This node stepped down.
            NoQuorum: too few replicas answered (``definite=False``: some may have
                stored it). This node stepped down.
            ValueError: the record exceeds ``max_record_bytes`` or ``max_replies``.
        """
        p = group_for(kind, key, replicas)
        lead = self._leads.get(p)
        if lead is None or lead.electing is not None:
            lead = await self._settled(p)
        if lead is None:
            raise NotLeader(f"node {self.name} does not lead {group_name(p)} of {kind}/{key}",
                            partition=partition_of_group(p), definite=True)
        reply_bytes = self._check_record(kind, key, record)
        lead.seq += 1
        entry = Entry.of(record, lead.epoch, lead.seq)
        wire = (kind, key, entry)
        if not self._store.accept(Accept(p, lead.epoch, lead.config, (wire,))).ok:
            self._lose(p, "deposed")
            raise NotLeader(f"node {self.name} was deposed as leader of {group_name(p)}",
                            partition=partition_of_group(p), definite=True)
        group = self._group(p, lead)
        group.entries.append(wire)
        group.size += entry.size_with(reply_bytes)
        if durability == "async":
            if group.outcome not in self._async:
                self._async.add(group.outcome)
                group.outcome.add_done_callback(partial(self._async_done, p))
            return
        await asyncio.shield(group.outcome)

    def _group(self, p: int, lead: _Lead) -> _Group:
        # Writes to one partition in the same loop iteration go out as one accept with
        # one quorum (group commit): fewer items, futures and acks per write.
        group = lead.group
        if group is None:
            group = lead.group = _Group(self._clock.monotonic())
            lead.inflight += 1
            asyncio.get_running_loop().call_soon(self._send_group, p, lead, group)
        return group

    async def _confirm(self, p: int, lead: _Lead) -> None:
        """Ask a majority whether this node still leads ``p`` (an accept with no
        entries, or the writes going out anyway); steps down if not."""
        with contextlib.suppress(PhoenixError):
            await asyncio.shield(self._group(p, lead).outcome)

    async def flush(self) -> None:
        """Wait until every ``async`` commit made so far was decided (stored on a
        majority, or failed and logged). :meth:`aclose` calls it first."""
        while self._async:
            await asyncio.wait(list(self._async))

    def _async_done(self, p: int, outcome: asyncio.Future[None]) -> None:
        self._async.discard(outcome)
        if not outcome.cancelled() and (exc := outcome.exception()) is not None:
            message = exc.message if isinstance(exc, PhoenixError) else repr(exc)
            _log.warning("async replication of %s failed: %s", group_name(p), message)

    # ----------------------------------------------------------------- commits

    def _send_group(self, p: int, lead: _Lead, group: _Group) -> None:
        """Send a group of stored writes to the other replicas (the local one has them);
        ``group.outcome`` resolves once the quorum decided."""
        if lead.group is group:
            lead.group = None
        quorum = Quorum(lead.config)
        waits: list[tuple[str, asyncio.Future[Any]]] = []
        if self._storage is not None:
            waits.append((self.name, self._storage.submit(self._store.drain())))
        else:
            quorum.ack(self.name)
        item = Accept(p, lead.epoch, lead.config, tuple(group.entries))
        size = group.size
        for member in lead.members:
            if member == self.name:
                continue
            if member in self._alive:
                fut = self._sender.send(member, item, size)
                fut.add_done_callback(partial(self._catch_up_if_unsynced, p, lead))
                waits.append((member, fut))
            else:
                quorum.fail(member)

        def feed(node: str, fut: asyncio.Future[Any]) -> None:
            reply = result_of(fut)
            if (isinstance(reply, Ack) and reply.ok) or (
                    node == self.name and not isinstance(reply, BaseException)):
                quorum.ack(node)
            elif isinstance(reply, Ack) and reply.reason == "epoch":
                quorum.fence(node, reply.promised)
            else:
                quorum.fail(node)

        deciding(waits, feed, lambda: quorum.status != "pending").add_done_callback(
            lambda _: self._decided(p, lead, quorum, group))

    def _decided(self, p: int, lead: _Lead, quorum: Quorum, group: _Group) -> None:
        lead.done_one()
        status = quorum.status
        if status == "done":
            lead.confirmed = max(lead.confirmed, group.started)
            self._commits += len(group.entries)
            if self._bus is not None and self._bus.has_handlers(events.REPLICATION_COMMITTED):
                duration = self._clock.monotonic() - group.started
                for kind, _, _ in group.entries:
                    self._bus.execute(events.REPLICATION_COMMITTED, {"duration": duration},
                                      {"node": self.name, "kind": kind, "partition": p})
            group.outcome.set_result(None)
            return
        self._commit_failures += len(group.entries)
        error: PhoenixError
        if status == "fenced":
            assert quorum.fenced_by is not None
            self._note_seen(p, quorum.fenced_by)
            if self._leads.get(p) is lead:
                self._lose(p, "fenced")
            error = NotLeader(f"node {self.name} was fenced on {group_name(p)}: a replica "
                              f"promised epoch {quorum.fenced_by} > {lead.epoch}",
                              partition=partition_of_group(p), definite=False)
        else:
            if self._leads.get(p) is lead:
                self._lose(p, "no_quorum")
            error = NoQuorum(f"{group_name(p)}: {len(quorum.acked)} of {list(lead.members)} "
                             f"stored the write (failed: {sorted(quorum.failed)}); a majority "
                             "is needed", definite=False)
        group.outcome.set_exception(error)
        group.outcome.add_done_callback(retrieve)

    def _catch_up_if_unsynced(self, p: int, lead: _Lead, fut: asyncio.Future[Reply]) -> None:
        # A replica that restarted without its data refuses writes until an election
        # catches it up; run one (also when the quorum was decided without it).
        reply = result_of(fut)
        if isinstance(reply, Ack) and reply.reason == "unsynced" and self._leads.get(p) is lead:
            self._catch_up(p, lead)

    def _catch_up(self, p: int, lead: _Lead) -> None:
        """Re-elect ``p`` to catch its replicas up (an unsynced refusal, a catch-up
        probe), at most once per partition per ``retry_s``: a replica that stays behind
        (its promise keeps getting lost) must not cause an election per write."""
        now = self._clock.monotonic()
        if not self._closed and now - self._catch_ups.get(p, -1e18) >= self.settings.retry_s:
            self._catch_ups[p] = now
            self._relead(p, lead)

    def _check_record(self, kind: str, key: str, record: Record) -> int:
        """The bytes of the record's replies (for sizes), after checking its limits."""
        reply_bytes = 0
        for _, reply in record.replies:
            reply_bytes += len(reply)
        size = len(record.state) + reply_bytes
        limit = self.settings.max_record_bytes
        if size > limit:
            raise ValueError(f"record of {kind}/{key} is {size:,} bytes, above "
                             f"max_record_bytes {limit:,}")
        if len(record.replies) > self.settings.max_replies:
            raise ValueError(f"record of {kind}/{key} carries {len(record.replies)} replies, "
                             f"above max_replies {self.settings.max_replies}")
        return reply_bytes

    # ----------------------------------------------------------------- elections

    async def _eager_elections(self) -> None:
        # While membership still moves (a cluster forming, a node rejoining), members'
        # tables disagree on primaries and eager candidates would depose each other:
        # wait until this node's table has been stable for a moment. Calls still elect
        # their own partition at once.
        # Alone, nobody can depose this node's candidates: no need to wait.
        settle = 0.0 if self._alive == {self.name} else self.settings.eager_settle_s
        while (wait := self._table_changed_at + settle - self._clock.monotonic()) > 0:
            await self._clock.sleep(wait)
        while self._eager_pending and not self._closed:
            batch, self._eager_pending = (self._eager_pending[:EAGER_BATCH],
                                          self._eager_pending[EAGER_BATCH:])
            table = self._table
            waiting = []
            for p in batch:
                if table is not None and table.primary(p) == self.name:
                    self._maybe_elect(p)
                    fut = self._elections.get(p)
                    if fut is not None:
                        waiting.append(fut)
            if waiting:
                await asyncio.wait(waiting)
            else:
                await asyncio.sleep(0)

    def _maybe_elect(self, p: int) -> None:
        if p in self._leads or p in self._elections or self._closed or self._leaving:
            return
        fut = self._start_election(p)
        fut.add_done_callback(partial(self._eager_done, p))

    def _eager_done(self, p: int, fut: asyncio.Future[_Lead]) -> None:
        if fut.cancelled() or fut.exception() is None or self._closed:
            return
        _log.debug("eager election of %s on %s failed: %s", group_name(p), self.name,
                   fut.exception())
        if p not in self._retries:
            self._retries[p] = self._clock.call_later(self.settings.retry_s,
                                                      partial(self._retry, p))

    def _retry(self, p: int) -> None:
        # Back into the batched queue, not straight to an election (so are catch-ups):
        # after a node's death every partition it led fails its first election together,
        # and retrying them all at once (1,365 of 4,096 on three nodes) swamps a loaded
        # loop, so the promises of the next round time out too and calls wait behind.
        self._retries.pop(p, None)
        table = self._table
        if table is not None and table.primary(p) == self.name:
            self._queue_election(p)

    def _queue_election(self, p: int) -> None:
        """Elect ``p`` in the background, in the batched queue of eager elections (a
        duplicate entry is harmless: the batch skips a group led or being elected)."""
        if p in self._leads or p in self._elections or self._closed or self._leaving:
            return
        self._eager_pending.append(p)
        self._spawn_eager()

    async def _ensure(self, p: int) -> _Lead:
        """Lead ``p``: at once if leading, else after the (shared) election."""
        if self._closed:
            raise NodeClosed(f"node {self.name} is closed")
        if self._leaving and p not in self._leads:
            raise NotLeader(f"node {self.name} is leaving: it leads no new partition",
                            partition=partition_of_group(p), definite=True)
        lead = await self._settled(p)
        if lead is not None:
            return lead
        fut = self._elections.get(p) or self._start_election(p)
        return await asyncio.shield(fut)

    async def _settled(self, p: int) -> _Lead | None:
        """This node's leadership of ``p`` once any re-election of it is over."""
        lead = self._leads.get(p)
        while lead is not None and lead.electing is not None:
            with contextlib.suppress(PhoenixError):
                await asyncio.shield(lead.electing)
            lead = self._leads.get(p)
        return lead

    def _start_election(self, p: int) -> asyncio.Future[_Lead]:
        fut: asyncio.Future[_Lead] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(retrieve)
        self._elections[p] = fut
        self._tasks.spawn(self._run_election(p, fut), name=f"elect-{p}")
        return fut

    async def _run_election(self, p: int, fut: asyncio.Future[_Lead]) -> None:
        try:
            lead = await self._elect(p, None)
        except asyncio.CancelledError:
            if not fut.done():
                fut.set_exception(NodeClosed(f"node {self.name} stopped"))
            raise
        except Exception as exc:
            self._elections_failed += 1
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(lead)
        finally:
            if self._elections.get(p) is fut:
                del self._elections[p]
        self._after_election(p)

    def _relead(self, p: int, lead: _Lead) -> None:
        """Re-elect a partition this node leads (new replica set, or a catch-up), in
        the batched queue of re-elections."""
        if lead.electing is not None or self._closed or p in self._relead_queued:
            return
        # A table change re-elects every partition whose set changed: with three
        # members, a death or a heal changes all 4,096. Started together, they held
        # every write of the node (a write waits while its partition is re-elected)
        # until the last one was done, seconds on a loaded machine. Queued, a partition
        # keeps serving under its current epoch and config (still a majority, or it
        # could not have served before) until its turn, EAGER_BATCH at a time.
        self._relead_queued.add(p)
        self._relead_pending.append(p)
        if self._relead_task is None or self._relead_task.done():
            self._relead_task = self._tasks.spawn(self._releads(), name="releads")

    async def _releads(self) -> None:
        while self._relead_pending and not self._closed:
            batch, self._relead_pending = (self._relead_pending[:EAGER_BATCH],
                                           self._relead_pending[EAGER_BATCH:])
            waiting: list[asyncio.Future[None]] = []
            for p in batch:
                self._relead_queued.discard(p)
                lead = self._leads.get(p)
                if lead is None or lead.electing is not None or self._closed:
                    continue  # lost, or already being re-elected meanwhile
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                fut.add_done_callback(retrieve)
                lead.electing = fut
                self._tasks.spawn(self._run_relead(p, lead, fut), name=f"relead-{p}")
                waiting.append(fut)
            if waiting:
                await asyncio.wait(waiting)
            else:
                await asyncio.sleep(0)

    async def _run_relead(self, p: int, lead: _Lead, fut: asyncio.Future[None]) -> None:
        try:
            # Let writes of the current epoch finish first: the new promises would
            # refuse them and fence this very leader.
            while lead.inflight:
                lead.idle = asyncio.Event()
                await lead.idle.wait()
            await self._elect(p, lead)
        except asyncio.CancelledError:
            if not fut.done():
                fut.set_exception(NodeClosed(f"node {self.name} stopped"))
            raise
        except Exception as exc:
            self._elections_failed += 1
            if self._leads.get(p) is lead:
                self._lose(p, "no_quorum" if isinstance(exc, NoQuorum) else "fenced")
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(None)
        finally:
            lead.electing = None
        self._after_election(p)

    def _after_election(self, p: int) -> None:
        if p in self._recheck and not self._closed:
            self._recheck.discard(p)
            self._table_changed(p)

    async def _elect(self, p: int, previous: _Lead | None) -> _Lead:
        """Win ``p`` (a :class:`Campaign`) and install the leadership (step 10)."""
        table = self._table
        if table is None:
            raise NoQuorum(f"node {self.name} has no partition table yet", definite=True)
        order = table.members(p)
        if self.name not in order:
            raise NotLeader(f"node {self.name} is not in the replica set {list(order)} of "
                            f"{group_name(p)}", partition=partition_of_group(p), definite=True)
        self._elections_run += 1
        started = self._clock.monotonic()
        extra = self._old.get(p, ())
        if previous is not None:
            extra = config_union(extra, previous.config)
        won = await Campaign(self._ctx, p, tuple(sorted(order)), extra).run()
        lead = _Lead(won.epoch, won.target, won.plan.next_seq, started)
        self._leads[p] = lead
        self._fresh.add(p)
        left = tuple(s for s in self._old.get(p, ()) if s not in won.config)
        if left:
            self._old[p] = left
        else:
            self._old.pop(p, None)
        duration = self._clock.monotonic() - started
        plan = won.plan
        _log.debug("node %s leads %s at epoch %s (%d records, %d restamped, %.1f ms)",
                   self.name, group_name(p), won.epoch, len(plan.final), plan.restamped,
                   duration * 1000)
        if self._bus is not None and self._bus.has_handlers(events.REPLICATION_EPOCH_CHANGED):
            self._bus.execute(
                events.REPLICATION_EPOCH_CHANGED,
                {"duration": duration, "adopted": float(len(plan.final)),
                 "restamped": float(plan.restamped), "rounds": float(won.rounds)},
                {"node": self.name, "partition": partition_of_group(p),
                 "epoch": str(won.epoch), "replicas": list(won.target)},
            )
        if previous is not None and plan.stale:
            self._notify_lost(p, "stale", won.epoch)
        if self.on_led is not None and p < PARTITIONS:  # reminders keep 3 replicas
            try:
                self.on_led(p)
            except Exception:  # pragma: no cover - a bug in the hook
                _log.exception("on_led(%d) of node %s failed", p, self.name)
        return lead

    def _next_epoch(self, p: int) -> Epoch:
        counter = max(self._store.promised(p).counter, self._seen.get(p, 0)) + 1
        self._seen[p] = counter
        return Epoch(counter, self.leader_id)

    def _note_seen(self, p: int, epoch: Epoch) -> None:
        if epoch.counter > self._seen.get(p, 0):
            self._seen[p] = epoch.counter

    # ----------------------------------------------------------------- stepping down

    def _lose(self, p: int, reason: str) -> None:
        lead = self._leads.pop(p, None)
        if lead is None:
            return
        self._steps_down += 1
        self._notify_lost(p, reason, lead.epoch)

    def _notify_lost(self, p: int, reason: str, epoch: Epoch) -> None:
        _log.debug("node %s stops serving %s (epoch %s): %s", self.name, group_name(p), epoch,
                   reason)
        self._lost_log.add(reason)
        if self._bus is not None and self._bus.has_handlers(events.REPLICATION_FENCED):
            self._bus.execute(events.REPLICATION_FENCED, {},
                              {"node": self.name, "partition": partition_of_group(p),
                               "epoch": str(epoch), "reason": reason})
        if self.on_lost is not None:
            try:
                # By partition: the runtime stops that partition's agents of every
                # count; those whose group is still led here reload at once.
                self.on_lost(partition_of_group(p), reason)
            except Exception:
                _log.exception("on_lost(%d, %r) raised", p, reason)

    # ----------------------------------------------------------------- serving peers

    async def handle(self, method: str, payload: bytes) -> bytes:
        """Serve a peer's ``batch`` (register as the service ``replication``).

        Raises:
            ProtocolError: unknown method or malformed batch; nothing was applied.
            StorageError: the durable store failed to commit the changes.
        """
        if method != "batch":
            raise ProtocolError(f"replication has no method {method!r} (expected 'batch')")
        try:
            batch = decode_batch(payload)
            for item in batch.items:
                ReplicaStore.validate(item)
        except ProtocolError as exc:
            self._limiter.warning(_log, "bad_batch", "node %s refused a replication batch: %s",
                                  self.name, exc.message)
            raise
        replies: list[Reply] = []
        for item in batch.items:
            replies.append(self._observe(item, self._store.handle(item)))
        await self._persist()
        return encode(BatchReply(tuple(replies)))

    def _observe(self, item: Item, reply: Reply) -> Reply:
        """Step down when another leader's item was accepted over this node's epoch;
        note marks (caught up, or released); re-elect on a catch-up probe."""
        if isinstance(item, Probe):
            p = item.partition
            lead = self._leads.get(p)
            if lead is None:
                # A leaving leader handing over: elect it here if this node is in its
                # set. A replica that needs catching up: elect it if this node is its
                # primary (as an eager election would); a member that is not must not
                # depose the leader everyone else routes to.
                table = self._table
                if table is not None and (
                        (item.take_over and self.name in table.members(p))
                        or (item.catch_up and table.primary(p) == self.name)):
                    self._maybe_elect(p)
                return reply
            if item.catch_up:
                self._catch_up(p, lead)
            return msgspec.structs.replace(reply, leads=True) if isinstance(reply, Known) \
                else reply
        p = item.partition
        self._note_seen(p, item.epoch)
        if not (isinstance(reply, Promise | Ack) and reply.ok):
            return reply
        if isinstance(item, Mark):
            self._old.pop(p, None)
            if self.name in config_members(item.config):
                self._fresh.add(p)
                self._catch_up_backoff.pop(p, None)
            else:
                self._fresh.discard(p)
        lead = self._leads.get(p)
        if lead is not None and item.epoch > lead.epoch:
            self._lose(p, "deposed")
        return reply

    # ----------------------------------------------------------------- storage

    async def _persist(self) -> None:
        if self._storage is not None:
            await self._storage.write(self._store.drain())

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

