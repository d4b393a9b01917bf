"""The ``backup`` node service: committed agent state out of a cluster and into another.

``phx backup`` and ``phx restore`` (``_cli/backup.py``) talk to it on every member, never
through the agent router:

- ``export``: the committed records of some partitions, read on their leader
  (:meth:`Replicator.committed`), a page of at most ``max_bytes`` at a time, in
  ``(kind, key)`` order so a page can resume after the last key of the previous one.
  Each record is one agent's state as a majority stored it: consistent per agent.
- ``restore``: records committed as new writes of their partition's leader (a new
  version under its epoch, through the same quorum path as an agent's own commit), so
  they survive the loss of a replica at once. Agents of those partitions active on this
  node are stopped after the write, so their next message loads the restored state.
- ``kinds``: which of some kind names this node cannot host with replicated state (not
  imported, or not replicated: ``durability="none"`` or crdt kinds).
- ``held``: how many records of some kinds this node's replica store holds, in any
  partition (a record that exists is on a majority of its replicas, so asking every
  member finds it): ``phx restore`` refuses to write over existing state unless told to.

A node answers ``export`` and ``restore`` only for partitions its table names it the
primary of: anything else is a definite :class:`~phoenix_cluster.errors.NotLeader`, and
the caller routes again after refreshing its view (a non-primary replica electing itself
would depose the leader everyone else routes to). The dedup window of a record (reply
ids of one cluster's callers) is neither exported nor restored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal, TypeVar

import msgspec

from .._ring.partitions import PARTITIONS
from ..errors import NotLeader, ProtocolError
from .groups import DEFAULT_REPLICAS, REPLICA_COUNTS, group_of
from .messages import WireEntry
from .service import Replicator, partition_for
from .types import Record

__all__ = [
    "BackupService",
    "ExportPage",
    "ExportRequest",
    "ExportedRecord",
    "HeldReply",
    "KindStatus",
    "KindsReply",
    "KindsRequest",
    "RestoreReply",
    "RestoreRequest",
    "RestoredRecord",
    "decode_reply",
]

KindStatus = Literal["ok", "missing", "unreplicated"]
"""Whether a node hosts a kind with replicated state: ``missing`` (no imported class
registered it), ``unreplicated`` (``durability="none"`` or a crdt kind)."""

DEFAULT_PAGE_BYTES = 1 << 20

_T = TypeVar("_T")


class ExportRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Export ``partitions`` in order; in the first, only records after ``after``."""

    partitions: tuple[int, ...]
    after: tuple[str, str] | None = None
    max_bytes: int = DEFAULT_PAGE_BYTES
    counts: tuple[int, ...] = (DEFAULT_REPLICAS,)
    """The replica counts to read (``groups.py``): those some member holds records of
    (``counts``); an older client asks for the default's only."""


class CountsRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which replica counts does this node hold records of?"""


class CountsReply(msgspec.Struct, frozen=True):
    counts: tuple[int, ...]


class ExportedRecord(msgspec.Struct, frozen=True, array_like=True):
    partition: int
    kind: str
    key: str
    state: bytes


class ExportPage(msgspec.Struct, frozen=True):
    """One page: ``done`` partitions of the request are complete; when ``after`` is set,
    partition ``partitions[done]`` continues after that ``(kind, key)``."""

    records: tuple[ExportedRecord, ...]
    done: int
    after: tuple[str, str] | None = None


class RestoredRecord(msgspec.Struct, frozen=True, array_like=True):
    kind: str
    key: str
    state: bytes


class RestoreRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    records: tuple[RestoredRecord, ...]


class RestoreReply(msgspec.Struct, frozen=True):
    restored: int


class KindsRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kinds: tuple[str, ...]


class KindsReply(msgspec.Struct, frozen=True):
    """Kinds of the request this node cannot restore, by reason."""

    missing: tuple[str, ...] = ()
    unreplicated: tuple[str, ...] = ()


class HeldReply(msgspec.Struct, frozen=True):
    """Records of the requested kinds in this node's replica store, by kind."""

    records: dict[str, int]


def decode_reply(payload: bytes, type_: type[_T]) -> _T:
    """A reply of this service (``ProtocolError`` if it is malformed)."""
    return _decode(payload, type_, "reply")


class BackupService:
    """Serves ``$backup`` on a member (register ``handle`` under ``"backup"``).

    Args:
        replicator: this node's replicator.
        kind_status: whether this node hosts a kind with replicated state.
        on_restored: called with each partition that received restored records (the
            node stops its agents there, so they reload).
        replicas_of: a hosted kind's ``replicas=`` (the group its records go to).
    """

    def __init__(self, replicator: Replicator, kind_status: Callable[[str], KindStatus],
                 on_restored: Callable[[int], None],
                 replicas_of: Callable[[str], int] = lambda _: DEFAULT_REPLICAS) -> None:
        self._replicator = replicator
        self._kind_status = kind_status
        self._on_restored = on_restored
        self._replicas_of = replicas_of

    async def handle(self, method: str, payload: bytes) -> bytes:
        """Answer ``export``, ``restore``, ``kinds``, ``held`` or ``counts``.

        Raises:
            ProtocolError: unknown method or malformed request (nothing done).
            NotLeader: a partition this node is not the primary of (nothing done).
            NoQuorum, NotLeader: a read or write failed (``definite`` says whether a
                restored record may have been stored).
        """
        if method == "export":
            page = await self._export(_decode(payload, ExportRequest))
            return msgspec.msgpack.encode(page)
        if method == "restore":
            restored = await self._restore(_decode(payload, RestoreRequest))
            return msgspec.msgpack.encode(RestoreReply(restored))
        if method == "kinds":
            return msgspec.msgpack.encode(self._kinds(_decode(payload, KindsRequest)))
        if method == "held":
            return msgspec.msgpack.encode(self._held(_decode(payload, KindsRequest)))
        if method == "counts":
            _decode(payload, CountsRequest)
            return msgspec.msgpack.encode(CountsReply(self._replicator.counts_held()))
        raise ProtocolError(f"backup has no method {method!r} "
                            "(expected 'export', 'restore', 'kinds', 'held' or 'counts')")

    def _check_primary(self, partition: int) -> None:
        if not 0 <= partition < PARTITIONS:
            raise ProtocolError(f"no partition {partition}: expected 0..{PARTITIONS - 1}")
        replicator = self._replicator
        if replicator.primary(partition) != replicator.name:
            raise NotLeader(f"node {replicator.name} is not the primary of partition "
                            f"{partition} (its primary: {replicator.primary(partition)})",
                            partition=partition, definite=True)

    async def _export(self, request: ExportRequest) -> ExportPage:
        for p in request.partitions:
            self._check_primary(p)
        for n in request.counts:
            if n not in REPLICA_COUNTS:
                raise ProtocolError(f"no replica count {n!r}: expected 1..5")
        snapshots = await asyncio.gather(*(self._committed(p, request.counts)
                                           for p in request.partitions))
        records: list[ExportedRecord] = []
        size = 0
        for done, (p, entries) in enumerate(zip(request.partitions, snapshots, strict=True)):
            after = request.after if done == 0 else None
            for kind, key, entry in sorted(entries, key=lambda e: (e[0], e[1])):
                if after is not None and (kind, key) <= after:
                    continue
                if records and size + len(entry.state) > request.max_bytes:
                    last = records[-1]
                    resume = (last.kind, last.key) if last.partition == p else None
                    return ExportPage(tuple(records), done, resume)
                records.append(ExportedRecord(p, kind, key, entry.state))
                size += len(entry.state) + len(kind) + len(key) + 16
        return ExportPage(tuple(records), len(request.partitions))

    async def _committed(self, partition: int, counts: tuple[int, ...]) -> list[WireEntry]:
        """The partition's committed records of ``counts`` (``groups.py``): its group of
        each, led here first. The client asks for every count some member holds records
        of, not only those this node holds: a primary that joined lately may lead a
        group whose records are still only on the other members (its election finds
        them)."""
        replicator = self._replicator
        groups = await asyncio.gather(*(replicator.committed(group_of(partition, n))
                                        for n in sorted(set(counts))))
        return [entry for entries in groups for entry in entries]

    async def _restore(self, request: RestoreRequest) -> int:
        replicator = self._replicator
        limit = replicator.settings.max_record_bytes
        partitions = set()
        for record in request.records:
            p = partition_for(record.kind, record.key)
            self._check_primary(p)
            if self._kind_status(record.kind) != "ok":
                raise ProtocolError(f"node {replicator.name} cannot host kind "
                                    f"{record.kind!r} with replicated state")
            if len(record.state) > limit:
                raise ProtocolError(f"record of {record.kind}/{record.key} is "
                                    f"{len(record.state):,} bytes, above this cluster's "
                                    f"max_record_bytes {limit:,}")
            partitions.add(p)

        async def restore(record: RestoredRecord) -> None:
            replicas = self._replicas_of(record.kind)
            await replicator.load(record.kind, record.key, replicas)  # leads the group
            await replicator.commit(record.kind, record.key, Record(record.state), "quorum",
                                    replicas)

        try:
            # Concurrent: writes to one partition in one loop iteration share a quorum.
            await asyncio.gather(*(restore(r) for r in request.records))
        finally:
            for p in partitions:
                self._on_restored(p)
        return len(request.records)

    def _kinds(self, request: KindsRequest) -> KindsReply:
        status = {kind: self._kind_status(kind) for kind in request.kinds}
        return KindsReply(
            missing=tuple(sorted(k for k, s in status.items() if s == "missing")),
            unreplicated=tuple(sorted(k for k, s in status.items() if s == "unreplicated")),
        )

    def _held(self, request: KindsRequest) -> HeldReply:
        wanted = set(request.kinds)
        held: dict[str, int] = {}
        for _, state in self._replicator.store.partitions():
            for kind, _key in state.records:
                if kind in wanted:
                    held[kind] = held.get(kind, 0) + 1
        return HeldReply(held)

    def __repr__(self) -> str:
        return f"<BackupService of {self._replicator.name}>"


def _decode(payload: bytes, type_: type[_T], what: str = "request") -> _T:
    try:
        return msgspec.msgpack.decode(payload, type=type_)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed backup {what}: {exc}") from None

