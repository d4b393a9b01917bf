"""Replicated writes: the leader's commit path (group commit, the quorum's decision,
``async`` writes and ``flush``), ``load`` and ``committed``, and the handler of peers'
batches (what a replica stores, and what it learns from them about leaders).

A commit on the leader and a batch on a replica run only this module of the
replicator's (``benchmarks/call_path.py`` counts the files a commit passes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import Any

import msgspec

from .._telemetry import events
from ..errors import NoQuorum, NotLeader, PhoenixError, ProtocolError
from .core import Durability, Lead, WriteGroup
from .elections import Elections
from .groups import DEFAULT_REPLICAS, group_for, group_name, partition_of_group
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
from .replica import ReplicaStore
from .sending import deciding, result_of, retrieve
from .types import Entry, Epoch, Record, config_members

_log = logging.getLogger("phoenix_cluster.replication")


class Commits(Elections):
    """Loads and commits on the leader; batches from peers on a replica."""

    # ----------------------------------------------------------------- the runtime's API

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

    def _group(self, p: int, lead: Lead) -> WriteGroup:
        # Writes to one partition in the same loop iteration go out as one accept with
        # one quorum (group commit): fewer items, futures and acks per write.
        group = lead.group
        if group is None:
            group = lead.group = WriteGroup(self._clock.monotonic(),
                                            asyncio.get_running_loop().create_future())
            lead.inflight += 1
            asyncio.get_running_loop().call_soon(self._send_group, p, lead, group)
        return group

    async def _confirm(self, p: int, lead: Lead) -> None:
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

    # ----------------------------------------------------------------- group commit

    def _send_group(self, p: int, lead: Lead, group: WriteGroup) -> None:
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

    def _decided(self, p: int, lead: Lead, quorum: Quorum, group: WriteGroup) -> None:
        lead.inflight -= 1
        if lead.inflight == 0 and lead.idle is not None:
            lead.idle.set()  # a re-election waits for the writes of the current epoch
        status = quorum.status
        if status == "done":
            lead.confirmed = max(lead.confirmed, group.started)
            self._commits += len(group.entries)
            if self._bus is not None and events.REPLICATION_COMMITTED in self._bus.listened:
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

    def _catch_up_if_unsynced(self, p: int, lead: Lead, fut: asyncio.Future[Reply]) -> None:
        # A replica that restarted without its data refuses writes until an election
        # catches it up; run one (also when the quorum was decided without it).
        reply = result_of(fut)
        if isinstance(reply, Ack) and reply.reason == "unsynced" and self._leads.get(p) is lead:
            self._catch_up(p, lead)

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

    # ----------------------------------------------------------------- the core's hooks

    def _note_seen(self, p: int, epoch: Epoch) -> None:
        if epoch.counter > self._seen.get(p, 0):
            self._seen[p] = epoch.counter

    async def _persist(self) -> None:
        if self._storage is not None:
            await self._storage.write(self._store.drain())
