"""Replicated writes: the leader's commit path (group commit, the quorum's decision,
``async`` writes and ``flush``) and the handler of peers' batches (what a replica
stores, and what it learns from them about leaders). Reads (``load``, ``committed``,
read leases) are in ``leases.py``.

A commit on the leader and a batch on a replica run only this module of the
replicator's (``benchmarks/call_path.py`` counts the files a commit passes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial

import msgspec

from .._foundation.env import running_loop
from .._telemetry import events
from ..errors import NoQuorum, NotLeader, PhoenixError, ProtocolError
from .core import Durability, Lead, WriteGroup
from .elections import Elections
from .groups import DEFAULT_REPLICAS, group_for, group_name, partition_of_group
from .leader import QuorumStatus
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
    decode_batch,
    encode,
    encode_item,
)
from .replica import ReplicaStore
from .sending import result_of, retrieve
from .types import Entry, Epoch, Record, config_members

_log = logging.getLogger("phoenix_cluster.replication")


def wait_for(group: WriteGroup) -> asyncio.Future[None]:
    """A future of the group's verdict, for one waiter: cancelling it (the caller was
    cancelled) leaves the group and its other waiters alone, as a shield would, without
    a second future per waiter."""
    waiter: asyncio.Future[None] = running_loop().create_future()
    group.waiters.append(waiter)
    return waiter


def _settle(group: WriteGroup, error: BaseException | None) -> None:
    """Give every waiter still waiting the verdict: done, or ``error``."""
    for waiter in group.waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
            waiter.add_done_callback(retrieve)


def _status(group: WriteGroup) -> QuorumStatus:
    """The group's quorum so far, counted (``WriteGroup``): what
    :attr:`~.leader.Quorum.status` gives for the config ``(lead.members,)``."""
    if group.fenced_by is not None:
        return "fenced"
    n = len(group.lead.members)
    need = n // 2 + 1  # majority(members)
    if group.acks >= need:
        return "done"
    if n - len(group.failed) < need:
        return "impossible"
    return "pending"


class _Part:
    """The accepts of one loop iteration bound for one peer."""

    __slots__ = ("items", "size", "writes")

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.writes: list[WriteGroup] = []
        self.size = 0


class Commits(Elections):
    """Commits on the leader; batches from peers on a replica."""

    # ----------------------------------------------------------------- the runtime's API

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
        entry = Entry.of(record, lead.epoch, lead.seq + 1)
        self._check_record(kind, key, record, entry)
        lead.seq += 1
        wire = (kind, key, entry)
        now = self._clock.monotonic()
        if not self._store.write(p, lead.epoch, lead.config, wire, now):
            self._lose(p, "deposed")
            raise NotLeader(f"node {self.name} was deposed as leader of {group_name(p)}",
                            partition=partition_of_group(p), definite=True)
        group = self._group(p, lead, now)
        group.entries.append(wire)
        group.size += entry.size()
        if durability == "async":
            if not group.watched:
                group.watched = True
                verdict = wait_for(group)
                self._async.add(verdict)
                verdict.add_done_callback(partial(self._async_done, p))
            return
        await wait_for(group)

    def _group(self, p: int, lead: Lead, now: float | None = None) -> WriteGroup:
        # Writes to one partition in the same loop iteration go out as one accept with
        # one quorum, and the accepts of every partition made in that iteration leave
        # together at its end (group commit, _send_tick).
        group = lead.group
        if group is None:
            group = lead.group = WriteGroup(
                p, lead, self._clock.monotonic() if now is None else now)
            lead.inflight += 1
            lead.undecided.add(group)
            tick = self._tick
            if not tick:
                running_loop().call_soon(self._send_tick)
            tick.append(group)
        return group

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

    # ----------------------------------------------------------------- group commit

    def _send_tick(self) -> None:
        """Send the write groups of this loop iteration to the other replicas (the local
        one has them): per peer, one part of the peer's outbox holding every group's
        accept, each accept encoded once whatever the number of peers; one durable write
        for all of them. Each group's quorum is decided from the replies as they come."""
        tick, self._tick = self._tick, []
        limit = self._sender.limit
        alive = self._alive
        name = self.name
        stored = self._storage.submit(self._store.drain()) if self._storage is not None \
            else None
        parts: dict[str, _Part] = {}
        full: list[tuple[str, _Part]] = []
        for group in tick:
            lead = group.lead
            if lead.group is group:
                lead.group = None
            if stored is None:
                group.acks = 1  # (this node's store has it: ``commit``)
            item = encode_item(Accept(group.p, lead.epoch, lead.config, tuple(group.entries)))
            size = group.size
            for member in lead.members:
                if member == name:
                    continue
                if member not in alive:
                    group.failed.append(member)
                    continue
                part = parts.get(member)
                if part is not None and part.items and part.size + size > limit:
                    full.append((member, part))  # a batch is cut at batch_max_bytes
                    part = None
                if part is None:
                    part = parts[member] = _Part()
                part.items.append(item)
                part.writes.append(group)
                part.size += size
        for group in tick:
            if _status(group) != "pending":
                self._decided(group)  # (one member, or too many of them dead)
        if stored is not None:
            stored.add_done_callback(partial(self._stored, tick))
        # Sent once every write counts every reply it expects: a closed sender answers
        # at once.
        full.extend(parts.items())
        for member, part in full:
            self._sender.send_all(member, part.items, part.size,
                                  partial(self._replied, member, part.writes))

    def _stored(self, groups: list[WriteGroup], fut: asyncio.Future[None]) -> None:
        failed = isinstance(result_of(fut), BaseException)
        for group in groups:
            if group.decided:
                continue
            if failed:
                group.failed.append(self.name)
            else:
                group.acks += 1
            if _status(group) != "pending":
                self._decided(group)

    def _replied(self, member: str, groups: list[WriteGroup],
                 replies: Sequence[Reply] | PhoenixError) -> None:
        """A peer answered a part (or it was lost): count each group's reply."""
        if isinstance(replies, PhoenixError):
            for group in groups:
                if not group.decided:
                    group.failed.append(member)
                    if _status(group) != "pending":
                        self._decided(group)
            return
        for group, reply in zip(groups, replies, strict=True):
            if type(reply) is Ack and reply.ok:  # (the usual case, first)
                if not group.decided:
                    group.acks += 1
                    if _status(group) != "pending":
                        self._decided(group)
                continue
            if isinstance(reply, Ack) and reply.reason == "unsynced" \
                    and self._leads.get(group.p) is group.lead:
                # A replica that restarted without its data refuses writes until an
                # election catches it up; run one (also when the quorum was decided
                # without it).
                self._catch_up(group.p, group.lead)
            if group.decided:
                continue
            group.failed.append(member)
            if isinstance(reply, Ack) and reply.reason == "epoch" and (
                    group.fenced_by is None or reply.promised > group.fenced_by):
                group.fenced_by = reply.promised
            if _status(group) != "pending":
                self._decided(group)

    def _decided(self, group: WriteGroup) -> None:
        group.decided = True
        p, lead = group.p, group.lead
        lead.inflight -= 1
        lead.undecided.discard(group)
        if lead.inflight == 0 and lead.idle is not None:
            lead.idle.set()  # a re-election waits for the writes of the current epoch
        status = _status(group)
        if status == "done":
            lead.confirmed = max(lead.confirmed, group.started)
            self._commits += len(group.entries)
            if self._bus is not None and events.REPLICATION_COMMITTED in self._bus.listened:
                duration = self._clock.monotonic() - group.started
                for kind, _, _ in group.entries:
                    self._bus.execute(events.REPLICATION_COMMITTED, {"duration": duration},
                                      {"node": self.name, "kind": kind, "partition": p})
            _settle(group, None)
            return
        self._commit_failures += len(group.entries)
        error: PhoenixError
        if status == "fenced":
            assert group.fenced_by is not None
            self._note_seen(p, group.fenced_by)
            if self._leads.get(p) is lead:
                self._lose(p, "fenced")
            error = NotLeader(f"node {self.name} was fenced on {group_name(p)}: a replica "
                              f"promised epoch {group.fenced_by} > {lead.epoch}",
                              partition=partition_of_group(p), definite=False)
        else:
            if self._leads.get(p) is lead:
                self._lose(p, "no_quorum")
            error = NoQuorum(f"{group_name(p)}: {group.acks} of {list(lead.members)} "
                             f"stored the write (failed: {sorted(group.failed)}); a majority "
                             "is needed", definite=False)
        _settle(group, error)

    def _check_record(self, kind: str, key: str, record: Record, entry: Entry) -> None:
        """Check the record's limits (its size as the entry carries it)."""
        size = len(record.state) + len(entry.replies)
        limit = self.settings.max_record_bytes
        if size > limit:
            raise ValueError(f"record of {kind}/{key} is {size:,} bytes, above "
                             f"max_record_bytes {limit:,}")
        if len(record.replies) > self.settings.max_replies:
            raise ValueError(f"record of {kind}/{key} carries {len(record.replies)} replies, "
                             f"above max_replies {self.settings.max_replies}")

    # ----------------------------------------------------------------- serving peers

    async def handle(self, method: str, payload: bytes) -> bytes:
        """Serve a peer's ``batch`` (register as the service ``replication``).

        Raises:
            ProtocolError: unknown method or malformed batch; nothing was applied.
            StorageError: the durable store failed to commit the changes.
        """
        reply = self._apply(method, payload)
        await self._persist()
        return reply

    def handle_now(self, method: str, payload: bytes) -> bytes | None:
        """:meth:`handle` on the connection's reader, with no task, when nothing is to
        wait for: a node without ``data_dir`` (with one, a batch's reply waits for its
        transaction: ``None`` passes it to :meth:`handle`). Register it as the service's
        immediate handler.

        Raises:
            ProtocolError: as :meth:`handle`.
        """
        if self._storage is not None:
            return None
        return self._apply(method, payload)

    def _apply(self, method: str, payload: bytes) -> bytes:
        """Apply a batch to the store (every item checked first) and encode the replies."""
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
        store, leads, seen = self._store, self._leads, self._seen
        now = self._clock.monotonic()  # (once per batch: ReplicaStore.accept)
        replies: list[Reply] = []
        for item in batch.items:
            if type(item) is Accept:
                # The commit path's item, without the dispatch: an accepted write of the
                # epoch this node promised (the usual case) changes nothing it watches.
                reply = store.accept(item, now)
                p = item.partition
                if reply.ok and p not in leads and item.epoch.counter <= seen.get(p, 0):
                    replies.append(reply)
                    continue
                replies.append(self._observe(item, reply))
                continue
            replies.append(self._observe(item, store.apply(item)))
        return encode(BatchReply(tuple(replies)))

    def _observe(self, item: Item, reply: Reply) -> Reply:
        """Step down when another leader's item was accepted over this node's epoch;
        note marks (caught up, or released); re-elect on a catch-up probe."""
        if isinstance(item, Probe):
            p = item.partition
            lead = self._leads.get(p)
            if item.take_over and self._leaving:
                # Both leaving (a whole cluster stopping): say so, so the asker does not
                # wait for a take-over that will not come.
                return msgspec.structs.replace(reply, leaving=True) \
                    if isinstance(reply, Known) else reply
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

    # ----------------------------------------------------------------- the core's hooks

    def _note_seen(self, p: int, epoch: Epoch) -> None:
        if epoch.counter > self._seen.get(p, 0):
            self._seen[p] = epoch.counter

    async def _persist(self) -> None:
        if self._storage is not None:
            await self._storage.write(self._store.drain())
