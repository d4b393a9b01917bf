"""Anti-entropy of merge replication: rounds that bring every peer's replicas up to date.

Every ``interval_s``, and at once after a membership change, the node sends each alive
peer the fingerprints of the agents that peer replicates (``hashes``); the peer answers
with its digests of those that differ, and the node pushes exactly what the peer lacks
(``deltas_for``). Each side's round repairs the other, so after a heal both sides' updates
reach every replica; a new replica (join, re-homing after a death) is filled the same way.
A completed round also clears what the peer had not acknowledged when it began (the
backlog and the whole-replica marks of ``crdt_sync.py``). :class:`CrdtSync
<phoenix_cluster._replication.crdt_sync.CrdtSync>` runs these rounds; a stopping node
uses :meth:`AntiEntropy._repair` with ``every`` to hand its replicas over.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from .._foundation.env import Clock
from .._ring.partitions import PartitionTable
from .._transport.tasks import LogLimiter, fail_after
from ..errors import PhoenixError, ProtocolError
from .crdt_replica import Address, Backlog, CrdtSyncSettings, Replica
from .merging import (
    Hashes,
    HashesReply,
    Push,
    PushBatch,
    Wanted,
    decode_digests,
    deltas_for,
    encode_fields,
)
from .sending import Rpc

__all__ = ["AntiEntropy", "hashes_reply_decoder"]

_log = logging.getLogger("phoenix_cluster.replication.crdt")

_encoder = msgspec.msgpack.Encoder()
hashes_reply_decoder = msgspec.msgpack.Decoder(HashesReply)


class AntiEntropy:
    """The repairing half of :class:`~phoenix_cluster._replication.crdt_sync.CrdtSync`:
    the state it reads is set up by ``CrdtSync.__init__``."""

    name: str
    settings: CrdtSyncSettings
    _rpc: Rpc
    _clock: Clock
    _limiter: LogLimiter
    _store: dict[Address, Replica]
    _backlog: dict[str, dict[Address, Backlog]]
    _whole: dict[str, dict[Address, int]]
    _table: PartitionTable | None
    _alive: frozenset[str]
    _wake: asyncio.Event
    _closed: bool
    _rounds: int
    _repairs: int

    def _members_of(self, partition: int) -> tuple[str, ...]:
        table = self._table
        return (self.name,) if table is None else table.replicas[partition]

    async def _call(self, node: str, method: str, payload: bytes,
                    timeout_s: float) -> bytes | None:
        """One RPC; ``None`` when it failed (the peer is unreachable, slow or refused)."""
        try:
            return await self._rpc(node, method, payload, timeout_s)
        except (PhoenixError, OSError, TimeoutError) as exc:
            _log.debug("crdt %s to %s failed: %r", method, node, exc)
            return None

    async def _anti_entropy(self) -> None:
        while not self._closed:
            try:
                async with fail_after(self._clock, self.settings.interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            peers = sorted(self._alive - {self.name})
            if not peers or not self._store:
                continue
            self._rounds += 1
            await asyncio.gather(*(self._repair(peer) for peer in peers))

    async def _repair(self, peer: str, *, every: bool = False) -> bool:
        """Bring ``peer`` up to date with every agent it replicates that this node holds
        (``every``: with every agent this node holds). Returns whether it answered."""
        mine = [address for address, replica in self._store.items()
                if every or peer in self._members_of(replica.partition)]
        covered = set(mine)
        before = {a: b.last for a, b in self._backlog.get(peer, {}).items() if a in covered}
        whole = {a: n for a, n in self._whole.get(peer, {}).items() if a in covered}
        step = self.settings.batch_items
        for start in range(0, len(mine), step):
            chunk = mine[start:start + step]
            items = tuple((kind, key, self._store[(kind, key)].hash()) for kind, key in chunk)
            reply = await self._call(peer, "hashes", _encoder.encode(Hashes(items)),
                                     self.settings.rpc_timeout_s)
            if reply is None:
                return False
            try:
                wanted = hashes_reply_decoder.decode(reply).items
                pushes = [self._fix(w) for w in wanted]
            except (msgspec.DecodeError, msgspec.ValidationError, ProtocolError) as exc:
                self._limiter.warning(_log, "bad_hashes", "node %s: bad anti-entropy reply "
                                      "from %s: %s", self.name, peer, exc)
                return True  # a peer that answers nonsense is not retried
            batch = tuple(p for p in pushes if p is not None)
            if batch:
                self._repairs += len(batch)
                if await self._call(peer, "push", _encoder.encode(PushBatch(batch)),
                                    self.settings.rpc_timeout_s) is None:
                    return False
        # The peer now holds all this node held when the round began: what it had not
        # acknowledged by then need not travel again.
        backlog = self._backlog.get(peer, {})
        for address, last in before.items():
            if (entry := backlog.get(address)) is not None and entry.acknowledged(last):
                del backlog[address]
        marks = self._whole.get(peer, {})
        for address, mark in whole.items():
            if marks.get(address) == mark:
                del marks[address]
        return True

    def _fix(self, wanted: Wanted) -> Push | None:
        replica = self._store.get((wanted.kind, wanted.key))
        if replica is None:
            return None
        if wanted.digests is None:
            return Push(wanted.kind, wanted.key, replica.encoded())
        delta = deltas_for(replica.fields, decode_digests(wanted.digests))
        return Push(wanted.kind, wanted.key, encode_fields(delta)) if delta else None
