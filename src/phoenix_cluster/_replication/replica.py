"""The replica side: what one node promised and accepted, per partition.

:class:`ReplicaStore` applies the rules of docs/design/replication.md ("Replica state and
rules") to the items of a batch and answers each. It is the whole of a node's replicated
memory: a leader reads its own store (it is one of the replicas), and the durable
storage (``storage.py``) persists the store's *journal* of changes.

Memory: one :class:`PartitionState` per partition touched (at most 4,096) and one
:class:`~.types.Entry` per record, keyed by ``(kind, key)``: about 250 bytes plus the
state and the replies per record.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import ProtocolError
from .groups import GROUPS
from .messages import Accept, Ack, Item, Known, Mark, Prepare, Probe, Promise, Reply, WireEntry
from .types import ZERO_EPOCH, Config, Entry, Epoch, RecordKey, config_members, config_union

__all__ = [
    "Change",
    "DropChange",
    "MetaChange",
    "PartitionState",
    "PutChange",
    "ReplicaStatistics",
    "ReplicaStore",
]


class MetaChange(NamedTuple):
    """A partition's promise, mark, configs or flags changed."""

    partition: int
    promised: Epoch
    marked: Epoch
    config: Config
    pending: Config
    synced: bool
    amnesiac: bool = False


class PutChange(NamedTuple):
    """A record was stored (or replaced by a newer version)."""

    partition: int
    kind: str
    key: str
    entry: Entry


class DropChange(NamedTuple):
    """A partition's records were dropped (released to a new replica set)."""

    partition: int


Change = MetaChange | PutChange | DropChange


class PartitionState:
    """One partition on one replica."""

    __slots__ = ("amnesiac", "config", "marked", "ok", "pending", "promised", "records",
                 "served_at", "served_by", "synced")

    def __init__(self, amnesiac: bool) -> None:
        self.promised: Epoch = ZERO_EPOCH
        self.marked: Epoch = ZERO_EPOCH  # epoch of the last mark taken
        self.config: Config = ()  # the config of that mark
        self.pending: Config = ()  # configs of the candidates promised since
        self.synced = False
        # May have forgotten promises and marks (memory-only node, or a new file): what
        # it says cannot rule out that it took a mark. Cleared by a mark.
        self.amnesiac = amnesiac
        self.records: dict[RecordKey, Entry] = {}
        # When this replica last acknowledged a leader's accept or mark, and whose (its
        # id, ``name#incarnation``): that leader may answer reads until its lease ends
        # (docs/design/replication.md, "Read leases").
        self.served_at = 0.0
        self.served_by = ""
        self.ok: Ack | None = None  # the answer to an accepted write of ``promised``

    def wire_entries(self) -> tuple[WireEntry, ...]:
        return tuple((kind, key, entry) for (kind, key), entry in self.records.items())

    def __repr__(self) -> str:
        return (f"<PartitionState promised={self.promised} synced={self.synced} "
                f"[{len(self.records)} records]>")


@dataclass(frozen=True, slots=True)
class ReplicaStatistics:
    """Counts of a node's replicated memory."""

    partitions: int
    synced_partitions: int
    records: int
    refused: int


class ReplicaStore:
    """Every partition's promise and records on this node.

    Args:
        node: this node's name (a :class:`Mark` whose config does not name it releases
            the partition).
        journal: keep a journal of changes for durable storage (:meth:`drain`).
        amnesiac: partitions this store has no record of may have been forgotten
            (memory only, or a new file); ``False`` once a durable file was loaded.
        clock: the node's monotonic clock; with it, a promise reports how long the
            leader this replica last acknowledged may still serve reads.
        lease_s: how long that is after the acknowledgement (a leader's read lease,
            with a margin: :attr:`~.settings.ReplicationSettings.lease_hold_s`).
    """

    def __init__(self, node: str, *, journal: bool = False, amnesiac: bool = True,
                 clock: Callable[[], float] | None = None, lease_s: float = 0.0) -> None:
        self.node = node
        self.amnesiac = amnesiac
        self._clock = clock
        self._lease_s = lease_s
        self._parts: dict[int, PartitionState] = {}
        self._journal: list[Change] | None = [] if journal else None
        self._records = 0
        self.refused = 0

    # ----------------------------------------------------------------- reading

    def partition(self, partition: int) -> PartitionState | None:
        """The state of ``partition``, or ``None`` if this node never touched it."""
        return self._parts.get(partition)

    def get(self, partition: int, kind: str, key: str) -> Entry | None:
        state = self._parts.get(partition)
        return None if state is None else state.records.get((kind, key))

    def promised(self, partition: int) -> Epoch:
        state = self._parts.get(partition)
        return ZERO_EPOCH if state is None else state.promised

    def partitions(self) -> Iterator[tuple[int, PartitionState]]:
        return iter(self._parts.items())

    # ----------------------------------------------------------------- the rules

    @staticmethod
    def validate(item: Item) -> None:
        """Check an item from the wire before applying anything.

        Raises:
            ProtocolError: the partition is outside ``[0, GROUPS)`` or the epoch
                counter below 1.
        """
        _check(item.partition)
        if not isinstance(item, Probe) and item.epoch.counter < 1:
            raise ProtocolError(f"replication item for partition {item.partition} carries "
                                f"epoch {item.epoch}; epochs start at 1")

    def handle(self, item: Item) -> Reply:
        """Apply one item and answer it.

        Raises:
            ProtocolError: the item is invalid (see :meth:`validate`).
        """
        self.validate(item)
        return self.apply(item)

    def apply(self, item: Item) -> Reply:
        """:meth:`handle` of an item already checked (:meth:`validate`)."""
        if isinstance(item, Accept):
            return self.accept(item)
        if isinstance(item, Prepare):
            return self.prepare(item)
        if isinstance(item, Mark):
            return self.mark(item)
        return self.probe(item)

    def prepare(self, item: Prepare) -> Promise:
        """Promise ``item.epoch`` if it is above every promise so far (I2)."""
        state = self._state(item.partition)
        if item.epoch <= state.promised:
            self.refused += 1
            return Promise(item.partition, False, state.promised)
        prior, prior_pending = state.promised, state.pending
        state.promised = item.epoch
        # Remember where this candidate meant to move the data until a mark says where it
        # went: an interrupted election must not make the cluster forget (discovery).
        state.pending = config_union(state.pending, item.config)
        self._meta(item.partition, state)
        entries = state.wire_entries() if state.synced else ()
        served_by, lease_left = state.served_by, 0.0
        if served_by and served_by != item.epoch.leader and self._clock is not None:
            lease_left = max(0.0, state.served_at + self._lease_s - self._clock())
        return Promise(item.partition, True, prior, state.marked, state.config,
                       prior_pending, state.synced, entries, state.amnesiac,
                       self._journal is not None, served_by if lease_left else "", lease_left)

    def accept(self, item: Accept, now: float | None = None) -> Ack:
        """Store the entries unless a newer epoch was promised or this replica must be
        caught up first. ``now``: the clock's time, read once for a whole batch (else
        read here); a time a little early only shortens the sender's read lease."""
        state = self._state(item.partition)
        refused = self._take(item.partition, state, item.epoch, item.config, item.entries,
                             item.catchup, now)
        if refused:
            return Ack(item.partition, False, state.promised, refused)
        ok = state.ok
        if ok is None or ok.promised is not state.promised:
            # (An answer is immutable: the same one serves every accept of this promise.)
            ok = state.ok = Ack(item.partition, True, state.promised)
        return ok

    def write(self, partition: int, epoch: Epoch, config: Config, entry: WireEntry,
              now: float | None = None) -> bool:
        """:meth:`accept` of one entry from this node as the partition's leader (its own
        write, with no message and no answer to build); ``False``: refused."""
        return not self._take(partition, self._state(partition), epoch, config, (entry,),
                              False, now)

    def _take(self, partition: int, state: PartitionState, epoch: Epoch, config: Config,
              entries: tuple[WireEntry, ...], catchup: bool, now: float | None) -> str:
        """The rules of an accept: ``""`` when the entries were taken, else the reason
        of the refusal (``epoch``, ``unsynced``)."""
        if epoch < state.promised:
            self.refused += 1
            return "epoch"
        if not state.synced and not (catchup and epoch == state.promised):
            # An unsynced replica may have forgotten a promise: only a leader it promised
            # since (catch-up of an election) may write to it.
            self.refused += 1
            return "unsynced"
        if epoch > state.promised:
            state.promised = epoch
            state.pending = config_union(state.pending, config)
            self._meta(partition, state)
        records = state.records
        journal = self._journal
        for kind, key, entry in entries:
            rk = (kind, key)
            current = records.get(rk)
            if current is None:
                self._records += 1
            elif ((entry.counter, entry.leader, entry.seq)  # (the versions, inline)
                  <= (current.counter, current.leader, current.seq)):
                continue
            entry = entry.detached()
            records[rk] = entry
            if journal is not None:
                journal.append(PutChange(partition, kind, key, entry))
        if self._clock is not None:
            state.served_at = self._clock() if now is None else now
            state.served_by = epoch.leader
        return ""

    def mark(self, item: Mark) -> Ack:
        """Take the leader's mark: caught up under ``item.config``, or released to it."""
        state = self._state(item.partition)
        if item.epoch != state.promised:
            self.refused += 1
            return Ack(item.partition, False, state.promised, "epoch")
        state.marked = item.epoch
        state.config = item.config
        state.pending = ()
        state.amnesiac = False
        if self._clock is not None:
            state.served_at = self._clock()
            state.served_by = item.epoch.leader
        if self.node in config_members(item.config):
            state.synced = True
        else:
            # Released: the new replica set holds everything (the leader marked a
            # majority of it first). The promise still fences older leaders, and the
            # mark's config tells later candidates where the data went.
            self._records -= len(state.records)
            state.records = {}
            state.synced = False
            if self._journal is not None:
                self._journal.append(DropChange(item.partition))
        self._meta(item.partition, state)
        return Ack(item.partition, True, state.promised)

    def probe(self, item: Probe) -> Known:
        state = self._parts.get(_check(item.partition))
        if state is None:
            return Known(item.partition, ZERO_EPOCH, ZERO_EPOCH, (), (), False, 0)
        return Known(item.partition, state.promised, state.marked, state.config,
                     state.pending, state.synced, len(state.records), state.amnesiac)

    # ----------------------------------------------------------------- durability

    def drain(self) -> list[Change]:
        """The changes since the last drain, oldest first (empty without a journal)."""
        journal = self._journal
        if not journal:
            return []
        self._journal = []
        return journal

    def restore(self, meta: MetaChange, records: dict[RecordKey, Entry]) -> None:
        """Load a partition from durable storage (not journaled)."""
        state = self._state(meta.partition)
        state.promised, state.marked, state.synced = meta.promised, meta.marked, meta.synced
        state.config, state.pending, state.amnesiac = meta.config, meta.pending, meta.amnesiac
        self._records += len(records) - len(state.records)
        state.records = records

    # ----------------------------------------------------------------- helpers

    def _state(self, partition: int) -> PartitionState:
        state = self._parts.get(partition)
        if state is None:
            state = self._parts[_check(partition)] = PartitionState(self.amnesiac)
        return state

    def _meta(self, partition: int, state: PartitionState) -> None:
        if self._journal is not None:
            self._journal.append(MetaChange(partition, state.promised, state.marked,
                                            state.config, state.pending, state.synced,
                                            state.amnesiac))

    def statistics(self) -> ReplicaStatistics:
        return ReplicaStatistics(
            partitions=len(self._parts),
            synced_partitions=sum(1 for s in self._parts.values() if s.synced),
            records=self._records,
            refused=self.refused,
        )

    def __repr__(self) -> str:
        return (f"<ReplicaStore {self.node} [{len(self._parts)} partitions, "
                f"{self._records} records]>")


def _check(partition: int) -> int:
    if not 0 <= partition < GROUPS:
        # A group (groups.py): a partition and a replica count.
        raise ProtocolError(f"replication item names partition {partition}, "
                            f"expected 0..{GROUPS - 1}")
    return partition
