"""The shared state of a :class:`~.service.Replicator` and what every part of it uses.

The replicator is built from one class per job, each in its own module, stacked one way:
:class:`ReplicatorCore` (here: the state, stepping down) is under ``elections.py``
(eager elections, re-elections and their queues, the catch-up loop), which is under
``commits.py`` (the commit path and the handler of peers' batches); ``handover.py``
(a graceful leave) needs only this core; ``service.py`` puts them together with the
lifecycle and the membership updates. ``Lead`` and ``WriteGroup`` are plain records and
the core's steps run only off the commit path, so a commit runs no code of this module
(``benchmarks/call_path.py`` counts the files a commit passes).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .._foundation.env import Env, TimerHandle
from .._ring.partitions import PARTITIONS
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from .._transport.tasks import LogLimiter, LogSummary, TaskSet
from .campaign import CampaignContext
from .groups import GroupTable, group_name, partition_of_group
from .messages import Promise, WireEntry
from .replica import ReplicaStatistics, ReplicaStore
from .sending import ACCEPT_OVERHEAD, Rpc, Sender, Start
from .settings import ReplicationSettings
from .storage import SqliteStorage
from .types import Config, Epoch

_log = logging.getLogger("phoenix_cluster.replication")

OnLost = Callable[[int, str], None]
"""``on_lost(partition, reason)``: stop serving the agents of ``partition``."""

Durability = Literal["quorum", "async"]


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


@dataclass(slots=True, eq=False)
class WriteGroup:
    """Writes to one partition made in one loop iteration, replicated together (one
    accept, one quorum), who waits for their verdict, and that quorum's count.

    A lead's config is its one replica set (``Lead.config``), and each member answers
    a group once (this node by storing it, each peer by its reply to the batch that
    carried it), so the quorum is counted, not looked up: ``acks`` reach a majority of
    ``lead.members`` (done), or ``failed`` leave too few to reach it (impossible), or a
    member promised a newer epoch (``fenced_by``: fenced, whatever the others said).
    ``commits.py`` counts (a plain record: a commit runs no code of this module).
    """

    p: int
    lead: Lead
    started: float
    entries: list[WireEntry] = field(default_factory=list)
    size: int = ACCEPT_OVERHEAD  # sending.item_size of their accept, kept as they come
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    """One future per waiter of the verdict (``commits.py`` ``wait_for``, ``_settle``)."""
    watched: bool = False  # an ``async`` write logs the verdict (one watcher per group)
    acks: int = 0
    failed: list[str] = field(default_factory=list)
    fenced_by: Epoch | None = None
    decided: bool = False


class Lead:
    """This node leads a partition: its epoch, replica set and next sequence number."""

    __slots__ = ("config", "confirmed", "electing", "epoch", "group", "idle", "inflight",
                 "members", "seq", "undecided")

    def __init__(self, epoch: Epoch, members: tuple[str, ...], next_seq: int,
                 confirmed: float) -> None:
        self.epoch = epoch
        self.confirmed = confirmed  # when a majority last showed nobody deposed it
        self.members = members  # sorted: the config (members,)
        self.config: Config = (members,)
        self.seq = next_seq - 1
        self.inflight = 0
        self.undecided: set[WriteGroup] = set()
        """The groups counted in ``inflight`` (``committed`` waits for the earlier ones)."""
        self.idle: asyncio.Event | None = None
        self.electing: asyncio.Future[None] | None = None
        self.group: WriteGroup | None = None


class ReplicatorCore:
    """The state of a replicator (see :class:`~.service.Replicator` for the arguments)
    and the steps every part takes: stepping down, epochs, lost members."""

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
        start: Start | None = None,
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
        self._store = ReplicaStore(name, journal=storage is not None, amnesiac=storage is None,
                                   clock=self._clock.monotonic,
                                   lease_s=self.settings.lease_hold_s)
        self._table: GroupTable | None = None
        self._alive: frozenset[str] = frozenset({name})
        self._old: dict[int, Config] = {}
        self._leads: dict[int, Lead] = {}
        self._elections: dict[int, asyncio.Future[Lead]] = {}
        self._recheck: set[int] = set()
        self._retries: dict[int, TimerHandle] = {}
        self._seen: dict[int, int] = {}
        self._async: set[asyncio.Future[None]] = set()
        self._tick: list[WriteGroup] = []
        """The write groups of this loop iteration, every partition's: they leave together
        at its end (``commits.py``, group commit)."""
        self._catch_ups: dict[int, float] = {}
        self._fresh: set[int] = set()
        """Partitions this process was caught up on: it took a leader's mark naming it,
        or won an election (see :meth:`lagging`)."""
        self._catch_up_task: asyncio.Task[None] | None = None
        self._relead_pending: list[int] = []
        self._relead_queued: set[int] = set()
        self._relead_asking: set[int] = set()
        """Re-elections whose pre-vote runs (``elections.py``, ``_ask_first``)."""
        self._relead_task: asyncio.Task[None] | None = None
        self._catch_up_backoff: dict[int, tuple[float, float]] = {}
        """Lagging partition -> (when to ask its primary again, the next interval)."""
        self._table_updated = asyncio.Event()
        self._leaving = False
        self._peers_leaving: set[str] = set()
        """Members that answered this node's take-over asks that they are leaving too."""
        self._tasks = TaskSet(f"replication {name}")
        self._sender = Sender(name, rpc, self._clock, self._tasks,
                              batch_max_bytes=self.settings.batch_max_bytes,
                              timeout_s=self.settings.rpc_timeout_s,
                              window=self.settings.batches_in_flight, start=start)
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

    def _in_use(self, g: int) -> bool:
        """Whether group ``g`` is elected eagerly and counted as lagging: a partition
        (the default count), or a group of another count this node holds records of.
        Other groups are elected by their first ``load``: a count costs elections only
        where it has records (replication.md, "Replica counts")."""
        return g < PARTITIONS or self._store.partition(g) is not None

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

    def _next_epoch(self, p: int) -> Epoch:
        counter = max(self._store.promised(p).counter, self._seen.get(p, 0)) + 1
        self._seen[p] = counter
        return Epoch(counter, self.leader_id)

    # ----------------------------------------------------------------- hooks

    # Defined in commits.py: every batch from a peer runs them, and a batch runs the code
    # of one module of the replicator's (see the module docstring). Elections use them
    # through the campaign context built above.

    async def _persist(self) -> None:
        """Write the store's changes to ``data_dir``, if the node has one."""
        raise NotImplementedError

    def _note_seen(self, p: int, epoch: Epoch) -> None:
        """Remember ``epoch``'s counter if it is the highest seen for ``p``."""
        raise NotImplementedError

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
