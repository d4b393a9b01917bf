"""Merge replication of active-active agents (``consistency="crdt"``): the node-side service.

No leader, no epochs, no fencing. Every member keeps a local replica of each crdt agent
it has run or been sent (``(kind, key) -> fields``); replicas only ever grow by joins
(``merging.py``), so any member may accept updates at any time, on both sides of a
partition, and all converge once they exchange what they have. How state spreads:

- **Push.** After a message changed an agent's state, the runtime joins the change into
  the local replica (:meth:`CrdtSync.commit`) and pushes the delta to the other members
  of the key's replica set (the ``PartitionTable``'s 3 ring owners of its partition, as
  this node sees the ring). Each push to a peer carries the join of every delta of that
  agent the peer has not acknowledged yet (lost or still in flight), so a peer never
  holds a message's change without the earlier messages' from this node: one handler's
  change arrives whole, and in order after the ones before it. A peer that dropped out
  of the alive set loses its backlog and gets the whole replica with its next push; so
  does every peer after this node took in a change made elsewhere (a push, a fetch at
  activation), until an anti-entropy round has covered it: a change made here after
  one made on another node never reaches a replica without it.
  ``commit`` returns once a majority of that set holds the change (this node counts if
  it is in the set), or once every push answered or
  ``ack_timeout_s`` passed, whichever comes first: a node cut off from the others still
  accepts updates, stored locally.
- **Load.** Activation joins the local replica with what the reachable replicas answer
  within ``fetch_timeout_s`` (:meth:`CrdtSync.load`).
- **Anti-entropy.** Every ``interval_s``, and at once after a membership change, each
  member sends every peer the fingerprints of the agents that peer replicates
  (``hashes``); the peer answers with its digests of those that differ, and the member
  pushes exactly what the peer lacks (``delta_for``). Each side's round repairs the
  other, so after a heal both sides' updates reach every replica. A new replica (join,
  re-homing after a death) is filled the same way: merged, never fenced.
- **Incoming merges** that changed a replica are reported to ``on_merged(kind, key,
  fields)``; the runtime joins them into a live activation between messages.

- **Flush on stop.** A node that stops (gracefully, or downed by the split-brain
  resolver after a partition healed) first offers every replica it holds to every member
  it knows of, alive or not, for up to ``flush_timeout_s``: the updates a minority
  accepted while cut off reach the survivors before it exits.

The replica and backlog records are ``crdt_replica.py``; the anti-entropy rounds (and the
hand-over on stop) are ``crdt_anti_entropy.py``. Memory only: a replica lives as long as
its node process. A node restarted without memory is a new incarnation (new replica ids,
so no dot repeats) and is refilled by anti-entropy. Replicas are never dropped while the
process runs (a dropped replica whose peers are unreachable could make this node re-mint
dots it already used).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from .._foundation.env import Env
from .._ring.hashing import key_hash
from .._ring.partitions import PartitionTable, partition_of
from .._transport.tasks import LogLimiter, TaskSet, fail_after
from ..errors import PhoenixError, ProtocolError
from .crdt_anti_entropy import AntiEntropy, hashes_reply_decoder
from .crdt_replica import BACKLOG_LIMIT, Address, Backlog, CrdtSyncSettings, Replica
from .merging import (
    Fields,
    Hashes,
    HashesReply,
    Push,
    PushBatch,
    Schema,
    Wanted,
    decode_fields,
    digests,
    encode_digests,
    encode_fields,
)
from .sending import Rpc, deciding

__all__ = ["CrdtSync", "CrdtSyncSettings", "CrdtSyncStatistics", "OnMerged", "SchemaOf"]

_log = logging.getLogger("phoenix_cluster.replication.crdt")

OnMerged = Callable[[str, str, Fields], None]
"""``on_merged(kind, key, fields)``: a push changed this node's replica of the agent."""

SchemaOf = Callable[[str], Schema]
"""``schema_of(kind)``: the field types of a crdt kind (raises ``AgentNotFound``)."""

_encoder = msgspec.msgpack.Encoder()
_push_decoder = msgspec.msgpack.Decoder(PushBatch)
_hashes_decoder = msgspec.msgpack.Decoder(Hashes)


@dataclass(frozen=True, slots=True)
class CrdtSyncStatistics:
    """A point-in-time view of the merge replication of one node."""

    replicas: int
    pushes_sent: int
    pushes_merged: int
    rounds: int
    repairs: int


class CrdtSync(AntiEntropy):
    """Merge replication of crdt agents on one node (see the module docstring).

    Args:
        name: this node's name.
        rpc: ``rpc(node, method, payload, timeout_s)`` calls :meth:`handle` on a peer.
        env: the node's clock.
        schema_of: field types of a crdt kind.
        on_merged: told when a push changed a replica.
        known: the members this node knows of, dead ones included (flush on stop).
    """

    def __init__(self, name: str, rpc: Rpc, env: Env, *, schema_of: SchemaOf,
                 on_merged: OnMerged, known: Callable[[], Iterable[str]] = tuple,
                 settings: CrdtSyncSettings | None = None) -> None:
        self.name = name
        self.settings = settings or CrdtSyncSettings()
        self._rpc = rpc
        self._clock = env.clock
        self._schema_of = schema_of
        self._on_merged = on_merged
        self._known = known
        self._store: dict[Address, Replica] = {}
        self._backlog: dict[str, dict[Address, Backlog]] = {}  # peer -> unacknowledged
        # peer -> agents to push whole next (-> a mark number, so an anti-entropy round
        # clears only the marks it has seen)
        self._whole: dict[str, dict[Address, int]] = {}
        self._marks = 0
        self._table: PartitionTable | None = None
        self._alive: frozenset[str] = frozenset()
        self._tasks = TaskSet(f"crdt-sync {name}")
        self._wake = asyncio.Event()
        self._limiter = LogLimiter(env.clock)
        self._closed = False
        self._pushes_sent = 0
        self._pushes_merged = 0
        self._rounds = 0
        self._repairs = 0

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._tasks.spawn(self._anti_entropy(), name="crdt-anti-entropy")

    async def aclose(self) -> None:
        """Stop anti-entropy, then flush every replica to every known member (bounded)."""
        if self._closed:
            return
        self._closed = True
        self._tasks.cancel()
        await self._tasks.wait()
        peers = sorted(set(self._known()) - {self.name})
        if not peers or not self._store:
            return
        _log.info("node %s offers its %d crdt replicas to %s before stopping", self.name,
                  len(self._store), ", ".join(peers))
        try:
            async with fail_after(self._clock, self.settings.flush_timeout_s):
                await asyncio.gather(*(self._hand_over(p) for p in peers))
        except TimeoutError:
            _log.warning("node %s stopped before every peer took its crdt replicas",
                         self.name)

    async def _hand_over(self, peer: str) -> None:
        # Just after a partition heals, the connection's circuit breaker may still fail
        # fast for a moment: keep trying until the flush deadline.
        while not await self._repair(peer, every=True):
            await self._clock.sleep(0.1)

    def update(self, table: PartitionTable, alive: Iterable[str]) -> None:
        """A new partition table (and its members): replica sets change; repair now."""
        self._table = table
        self._alive = frozenset(alive)
        for peer in [p for p in self._backlog if p not in self._alive]:
            # Gone (for now): its backlog would only grow. When it is back, the next push
            # of each of those agents sends the whole replica, which holds every cause.
            for address in self._backlog.pop(peer):
                self._mark_whole(peer, address)
        self._wake.set()

    # ----------------------------------------------------------------- the runtime's API

    def replica_set(self, kind: str, key: str) -> tuple[str, ...]:
        """The members that replicate ``(kind, key)`` in this node's view (itself alone
        before it has a table)."""
        replica = self._store.get((kind, key))
        return self._members_of(partition_of(key_hash(kind, key)) if replica is None
                                else replica.partition)

    def stored(self, kind: str, key: str) -> Fields | None:
        """This node's replica of the agent (read-only: do not mutate), or ``None``."""
        replica = self._store.get((kind, key))
        return None if replica is None else replica.fields

    def merge_local(self, kind: str, key: str, fields: Fields, *, foreign: bool = True) -> bool:
        """Join ``fields`` into this node's replica (no push, no notification).

        A ``foreign`` change (one this node did not make: a push, a fetched or handed-over
        state) may not have reached the other replicas: until an anti-entropy round has
        covered them, this node's next push of the agent to each sends the whole replica,
        so a change made here after it never arrives without it.
        """
        replica = self._store.get((kind, key))
        if replica is None:
            replica = self._store[(kind, key)] = Replica(partition_of(key_hash(kind, key)))
        changed = replica.merge(fields)
        if changed and foreign:
            for member in self._members_of(replica.partition):
                if member != self.name:
                    self._mark_whole(member, (kind, key))
        return changed

    def _mark_whole(self, peer: str, address: Address) -> None:
        self._marks += 1
        self._whole.setdefault(peer, {})[address] = self._marks

    async def load(self, kind: str, key: str) -> Fields | None:
        """The join of this node's replica and what the other reachable replicas hold.

        Never fails: replicas that do not answer within ``fetch_timeout_s`` are left
        out (anti-entropy brings their part later). The answers are joined into this
        node's replica too. Returns a copy, or ``None`` when nobody holds anything.
        """
        others = [m for m in self.replica_set(kind, key) if m != self.name]
        if others:
            payload = _encoder.encode(Hashes(((kind, key, b""),)))
            calls = [self._tasks.spawn(self._call(m, "fetch", payload,
                                                  self.settings.fetch_timeout_s),
                                       name=f"crdt-fetch {kind}/{key}") for m in others]
            done, _ = await asyncio.wait(calls)
            schema = self._schema_of(kind)
            for call in done:
                reply = call.result()
                if reply is None:
                    continue
                try:
                    for wanted in hashes_reply_decoder.decode(reply).items:
                        if wanted.state is not None:
                            self.merge_local(kind, key, decode_fields(wanted.state, schema))
                except (msgspec.DecodeError, msgspec.ValidationError, ProtocolError) as exc:
                    self._limiter.warning(_log, "bad_fetch", "node %s: bad crdt fetch reply "
                                          "for %s/%s: %s", self.name, kind, key, exc)
        replica = self._store.get((kind, key))
        if replica is None:
            return None
        return {name: value.copy() for name, value in replica.fields.items()}

    async def commit(self, kind: str, key: str, delta: Fields, *, wait: bool = True) -> int:
        """Join ``delta`` into this node's replica and push it to the other replicas.

        With ``wait``, returns once a majority of the replica set holds it, or every
        push has answered, or ``ack_timeout_s`` passed; without, at once. Returns how
        many members of the replica set were known to hold it at that moment (this
        node included when it is in the set). Never fails: what did not arrive now
        arrives with anti-entropy.
        """
        self.merge_local(kind, key, delta, foreign=False)
        members = self.replica_set(kind, key)
        acks = 1 if self.name in members else 0
        others = [m for m in members if m != self.name]
        if not others or not delta:
            return acks
        needed = len(members) // 2 + 1
        self._pushes_sent += len(others)
        pushes = [self._tasks.spawn(self._push(m, (kind, key), delta),
                                    name=f"crdt-push {kind}/{key}") for m in others]
        if not wait:
            return acks

        def feed(_: str, push: asyncio.Future[Any]) -> None:
            nonlocal acks
            acks += push.result() is not None

        verdict = deciding(list(zip(others, pushes, strict=True)), feed,
                           lambda: acks >= needed)
        try:
            async with fail_after(self._clock, self.settings.ack_timeout_s):
                await verdict
        except TimeoutError:
            pass  # cut off (or slow): acknowledged as stored here; the pushes go on
        return acks

    async def _push(self, peer: str, address: Address, delta: Fields) -> bytes | None:
        """Push ``delta`` to ``peer`` joined with its unacknowledged backlog of the agent;
        the acknowledgement drops what this push carried from the backlog."""
        pending = self._backlog.setdefault(peer, {})
        backlog = pending.setdefault(address, Backlog())
        whole = self._whole.get(peer)
        if (whole is not None and whole.pop(address, None) is not None) \
                or len(backlog.deltas) >= BACKLOG_LIMIT:
            # The whole replica holds every cause: nothing before it need travel again.
            replica = self._store[address]
            backlog.acknowledged(backlog.last)
            delta = {name: value.copy() for name, value in replica.fields.items()}
        number = backlog.add(delta)
        kind, key = address
        payload = _encoder.encode(PushBatch((Push(kind, key, encode_fields(backlog.joined())),)))
        reply = await self._call(peer, "push", payload, self.settings.rpc_timeout_s)
        if reply is not None and pending.get(address) is backlog \
                and backlog.acknowledged(number):
            del pending[address]
        return reply

    # ----------------------------------------------------------------- serving peers

    async def handle(self, method: str, payload: bytes) -> bytes:
        """Serve a peer (register as the service ``crdt``): ``push`` joins states,
        ``hashes`` answers the digests of agents whose fingerprint differs, ``fetch``
        answers whole states.

        Raises:
            ProtocolError: unknown method or malformed payload; nothing was applied.
        """
        try:
            if method == "push":
                return _encoder.encode(self._receive(_push_decoder.decode(payload)))
            if method in ("hashes", "fetch"):
                request = _hashes_decoder.decode(payload)
                return _encoder.encode(self._answer(request, fetch=method == "fetch"))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._limiter.warning(_log, "bad_request", "node %s refused a crdt %s: %s",
                                  self.name, method, exc)
            raise ProtocolError(f"malformed crdt {method}: {exc}") from None
        raise ProtocolError(f"crdt sync has no method {method!r} (push, hashes, fetch)")

    def _receive(self, batch: PushBatch) -> int:
        merged = 0
        for item in batch.items:
            try:
                fields = decode_fields(item.state, self._schema_of(item.kind))
                changed = self.merge_local(item.kind, item.key, fields)
            except PhoenixError as exc:
                # One bad item (unknown kind, foreign schema) must not block the others.
                self._limiter.warning(_log, "bad_push", "node %s refused a crdt push for "
                                      "%s/%s: %s", self.name, item.kind, item.key, exc.message)
                continue
            merged += 1
            if changed:
                self._pushes_merged += 1
                self._on_merged(item.kind, item.key, fields)
        return merged

    def _answer(self, request: Hashes, *, fetch: bool) -> HashesReply:
        out: list[Wanted] = []
        for kind, key, fingerprint in request.items:
            replica = self._store.get((kind, key))
            if fetch:
                if replica is not None:
                    out.append(Wanted(kind, key, None, replica.encoded()))
            elif replica is None:
                out.append(Wanted(kind, key, None))
            elif replica.hash() != fingerprint:
                out.append(Wanted(kind, key, encode_digests(digests(replica.fields))))
        return HashesReply(tuple(out))

    # ----------------------------------------------------------------- introspection

    def statistics(self) -> CrdtSyncStatistics:
        return CrdtSyncStatistics(
            replicas=len(self._store), pushes_sent=self._pushes_sent,
            pushes_merged=self._pushes_merged, rounds=self._rounds, repairs=self._repairs,
        )

    def __repr__(self) -> str:
        return f"<CrdtSync {self.name} [{len(self._store)} replicas]>"
