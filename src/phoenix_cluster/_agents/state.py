"""Agent state: where it commits, and how it is loaded, committed and rolled back.

An activation's ``committed`` bytes are the codec's encoding of the agent's state after
the last message that succeeded. This module is the seam between those bytes and
whatever keeps them beyond the activation:

- :meth:`StateStore.route`: whether a kind's changes replicate, and through which node
  (this node's replicator, or the key's home for an agent hosted away from it), or go
  to the kind's state store (``STORED``: a kind with ``store=``, ``stored.py``);
- :meth:`StateStore.load` / :meth:`StateStore.commit`: the replicas' newest record, and
  a new one (state plus the replicated reply window, :meth:`StateStore.window`);
- state versions (``versions.py``): committed state is tagged with the kind's
  ``state_version`` and older state upgraded on load;
- :meth:`StateStore.settle` / :meth:`StateStore.accept`: what a message changed, and
  making it the committed state once committed; an activation with a big state keeps it
  attribute by attribute (``tracking.py``), so a message pays for what it changed rather
  than for encoding the whole state;
- :meth:`StateStore.restore` / :meth:`StateStore.rollback`: put bytes back into an agent
  (a failed handler returns to its committed state; crdt kinds merge instead,
  ``active_active.py``).

What a message's outcome does with a failed commit (stop the agent here, fail or route
its queued messages again) is the host's decision (``runtime.py``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .._replication.types import Record
from .active_active import ActiveActive
from .agent import Agent, KindSpec
from .cluster import Cluster, Homes
from .dedup import REPLICATED_REPLIES
from .mailbox import Activation
from .stored import StoredKinds
from .tracking import SMALL_STATE, Change, StateTracker
from .versions import tag_state, untag_state, upgrade

if TYPE_CHECKING:
    from .._replication.service import Durability, Replicator

__all__ = ["LOCAL", "STORED", "Pending", "StateStore", "lists_trackable", "trackable"]

LOCAL = ""
"""A replication route: this node's own replicator (a node name is never empty)."""

STORED = "\x00store"
"""The route of a kind with ``store=``: its state store (no node has this name)."""

_log = logging.getLogger("phoenix_cluster.agents")

Pending = bytes | Change
"""A message's change to commit (:meth:`StateStore.settle`): the whole state's bytes,
or a tracked activation's :class:`~.tracking.Change`."""


class StateStore:
    """Loads, commits, restores and rolls back the state of this node's agents."""

    __slots__ = ("_decode", "_encode", "active_active", "cluster", "stored")

    def __init__(self, active_active: ActiveActive, decode: Callable[[bytes], Any],
                 cluster: Cluster) -> None:
        self.active_active = active_active
        self._decode = decode
        self._encode = msgspec.msgpack.Encoder().encode
        self.cluster = cluster
        """The node's started parts: the replicator and the placement service."""
        self.stored = StoredKinds(decode)
        """The node's state stores, for kinds with ``store=`` (``stored.py``)."""

    @property
    def replicator(self) -> Replicator | None:
        """Quorum replication of agent state (members of a cluster; ``None`` embedded)."""
        return self.cluster.replicator

    @property
    def placement(self) -> Homes | None:
        """Homes and pins of agents (a node that talks to others; ``None`` embedded)."""
        return self.cluster.placement

    def route(self, spec: KindSpec, key: str) -> str | None:
        """Where this agent's changes commit: ``LOCAL`` (this node's replicator: it leads
        the key's partition, or elects itself), the name of the key's home (agents
        hosted here away from it: a policy-placed kind, or a hash agent moved here by
        ``migrate``; the home leads the partition and checks this node is the host), or
        ``None``: not replicated (``durability="none"``, crdt kinds, no replicator), or
        ``STORED``: the kind's state store (a kind with ``store=``, on any node).

        A hash agent handed here while views of the ring disagree (a join or a leave in
        progress: this node does not see itself as the home yet) commits through this
        node's replicator when this node is one of the key's replicas, else through the
        home: an acknowledged change is always on a majority of replicas."""
        if spec.store is not None:
            return STORED
        replicator = self.replicator
        if replicator is None or spec.durability == "none" or spec.consistency == "crdt":
            return None
        placement = self.placement
        if placement is None:
            return LOCAL
        k = (spec.name, key)
        if spec.hashed and (k not in placement.pinned_here
                            or (k not in placement.proxied
                                and replicator.replicates(spec.name, key, spec.replicas))):
            return LOCAL
        home = placement.home(spec.name, key)
        return LOCAL if home is None or home == placement.self_name else home

    def lease_runs(self, spec: KindSpec, key: str) -> bool:
        """Whether a read of the agent may be answered from this activation's memory
        now: its changes do not commit through this node's replicator, or this node
        holds the read lease on its partition (``_replication/leases.py``)."""
        if self.route(spec, key) != LOCAL:
            return True
        replicator = self.replicator
        assert replicator is not None
        return replicator.lease_runs(spec.name, key, spec.replicas)

    async def confirm_lease(self, spec: KindSpec, key: str) -> None:
        """Renew this node's read lease on the agent's partition.

        Raises:
            NotLeader: this node lost the partition (``definite=False``).
        """
        replicator = self.replicator
        assert replicator is not None
        await replicator.confirm_lease(spec.name, key, spec.replicas)

    def replicated_here(self, spec: KindSpec, key: str) -> bool:
        """Replicated, and through this node's own replicator (it leads the partition)."""
        return self.route(spec, key) == LOCAL

    async def load(self, spec: KindSpec, key: str, route: str) -> Record | None:
        """The newest committed record of the agent (``None``: nothing committed yet), at
        the kind's current state version.

        Raises:
            StateVersionError: stored by a version this code cannot read.
        """
        if route == STORED:
            return await self.stored.load(spec, key)
        if route == LOCAL:
            assert self.replicator is not None
            record = await self.replicator.load(spec.name, key, spec.replicas)
        else:
            assert self.placement is not None
            record = await self.placement.remote_load(route, spec.name, key, spec.replicas)
        if record is None:
            return None
        version, state = untag_state(record.state)
        if version != spec.state_version:
            state = upgrade(spec, key, version, state, self._decode)
        elif version == 1:
            return record
        return Record(state, record.replies)

    async def commit(self, spec: KindSpec, key: str, record: Record, route: str) -> None:
        """Commit ``record`` through ``route`` (a quorum of replicas, or their leader's
        log for ``durability="async"``).

        Raises:
            PhoenixError: not committed (``NoQuorum``, ``NotLeader``, ...; each says
                whether anything may have been stored).
        """
        if route == STORED:
            await self.stored.commit(spec, key, record)
            return
        if spec.state_version != 1:
            record = Record(tag_state(spec, record.state), record.replies)
        durability: Durability = "async" if spec.durability == "async" else "quorum"
        if route == LOCAL:
            assert self.replicator is not None
            await self.replicator.commit(spec.name, key, record, durability, spec.replicas)
        else:
            assert self.placement is not None
            await self.placement.remote_commit(route, spec.name, key, record, durability,
                                               spec.replicas)

    @staticmethod
    def window(act: Activation, request_id: int,
               reply: bytes) -> tuple[tuple[int, bytes], ...]:
        """The last ``REPLICATED_REPLIES`` answered request ids, this message's included
        (committed with the state, so a call resent after a failover runs once).

        Built on every commit of a replicated agent, so it is kept incrementally: the
        activation remembers how far ``recent`` was settled (every id up to a
        *frontier* answered or failed, in order) and the answered ones up to there, and
        each commit looks only at the ids that came after it (usually the previous
        message and this one), not at 32 futures. The result is the full walk's
        (:func:`_walk`) whenever the cache still describes ``recent``.
        """
        recent = act.recent
        if not recent:
            return ()
        cache = act.answered
        current = recent.get(request_id)
        if cache is None or (current is not None and current.done()):
            return _walk(act, recent, request_id, reply)
        frontier, frontier_future, settled = cache
        after: list[tuple[int, asyncio.Future[bytes]]] = []
        for rid, f in reversed(recent.items()):
            if rid == frontier:
                if f is not frontier_future:
                    return _walk(act, recent, request_id, reply)
                break
            after.append((rid, f))
        else:
            return _walk(act, recent, request_id, reply)  # the frontier left the window
        if settled and settled[0][0] not in recent:
            return _walk(act, recent, request_id, reply)  # its oldest answers left too
        answered = list(settled)
        moved = False
        at = len(after) - 1
        while at >= 0:  # oldest first: move the frontier over what is settled now
            rid, f = after[at]
            if not f.done():
                break
            frontier, frontier_future, moved = rid, f, True
            if (answer := _reply_of(f)) is not None:
                answered.append((rid, answer))
            at -= 1
        if moved:
            act.answered = (frontier, frontier_future,
                            tuple(answered[-REPLICATED_REPLIES:]))
        while at >= 0:  # past the first unsettled one: answered ones count, uncached
            rid, f = after[at]
            if rid != request_id and f.done() and (answer := _reply_of(f)) is not None:
                answered.append((rid, answer))
            at -= 1
        if current is None:
            return tuple(answered[-REPLICATED_REPLIES:])
        answered = answered[-(REPLICATED_REPLIES - 1):] if REPLICATED_REPLIES > 1 else []
        answered.append((request_id, reply))
        return tuple(answered)

    def settle(self, act: Activation, agent: Agent) -> Pending | None:
        """What the message that just ran changed, to commit; ``None``: nothing."""
        # (On every message: the slot behind ``act.committed``/``act.tracker`` is read
        # once, without the properties.)
        committed = act._committed
        if type(committed) is bytes:
            state = self._encode(agent.snapshot())
            if state != committed:
                return state
            if len(state) >= SMALL_STATE:  # (a big agent that is only read, too)
                self._track(act)
            return None
        assert isinstance(committed, StateTracker)
        return committed.collect(agent.__dict__)

    @staticmethod
    def encoded(pending: Pending) -> bytes:
        """The whole state's bytes of ``pending`` (what a commit ships)."""
        return pending if type(pending) is bytes else pending.state()  # type: ignore[union-attr]

    def accept(self, act: Activation, pending: Pending) -> None:
        """``pending`` is committed. A state that grew past ``SMALL_STATE`` bytes is
        tracked from now on (``tracking.py``), if its kind allows."""
        if type(pending) is bytes:
            act._committed = pending
            if len(pending) >= SMALL_STATE:
                self._track(act)
            return
        tracker = act._committed
        assert isinstance(tracker, StateTracker) and isinstance(pending, Change)
        tracker.accept(pending)

    def _track(self, act: Activation) -> None:
        spec = act.kind.spec
        agent = act.agent
        if trackable(spec) and agent is not None:
            act.tracker = StateTracker(agent.__dict__, spec.state_types, self._encode,
                                       self._decode, lists=lists_trackable(spec))

    def restore(self, agent: Agent, state: bytes) -> None:
        """Put committed ``state`` into ``agent`` (crdt kinds: field by field)."""
        spec = agent._phx_act.spec
        if spec.consistency == "crdt":
            self.active_active.restore(agent, spec, state)
        else:
            agent.restore(self._decode(state))

    def rollback(self, act: Activation) -> None:
        """Return ``act``'s agent to its committed state (after a failed message)."""
        agent = act.agent
        assert agent is not None
        if act.kind.spec.snapshot_every:
            self.stored.discard(act.kind.spec, act.key)
        tracker = act.tracker
        try:
            if tracker is not None:
                tracker.rollback(agent.__dict__)
            else:
                self.restore(agent, act.committed)
        except Exception:  # pragma: no cover - restore() of a user override broke
            _log.exception("rollback of %s/%s failed", act.kind.spec.name, act.key)


_TRACKABLE: dict[KindSpec, bool] = {}


def trackable(spec: KindSpec) -> bool:
    """Whether a kind's big states are tracked (``tracking.py``): the default
    ``snapshot``/``restore`` (a kind's own may keep anything; event-sourced kinds have
    theirs), ``consistency="fenced"`` (crdt kinds merge field by field) and no reentrant
    method (a handler waiting between a change and its commit would interleave with
    another's)."""
    known = _TRACKABLE.get(spec)
    if known is None:
        cls = spec.cls
        known = _TRACKABLE[spec] = (
            cls.snapshot is Agent.snapshot and cls.restore is Agent.restore
            and spec.consistency == "fenced"
            and not any(m.reentrant for m in spec.methods.values()))
    return known


_HEAPQ = frozenset(id(v) for v in vars(heapq).values() if callable(v)) | {id(heapq)}
_LISTS: dict[KindSpec, bool] = {}


def _names_heapq(code: types.CodeType) -> bool:
    if "heapq" in code.co_names or any(n.startswith("heap") for n in code.co_names):
        return True
    return any(isinstance(c, types.CodeType) and _names_heapq(c) for c in code.co_consts)


def lists_trackable(spec: KindSpec) -> bool:
    """Whether a tracked kind's lists are watched (``watched.py``): ``heapq`` changes a
    list below its methods, where no journal sees it, so a kind whose class (its bases
    too) or whose classes' modules refer to ``heapq`` or one of its functions keeps its
    lists opaque (encoded after every message, as before lists were watched). A
    ``heapq`` call on a state list from another module is not seen: a state list is
    changed through its methods (``list.append(l, x)`` is not either)."""
    known = _LISTS.get(spec)
    if known is None:
        known = True
        for cls in spec.cls.__mro__:
            if cls is Agent or cls is object:
                continue
            module = sys.modules.get(cls.__module__)
            if module is not None and any(id(v) in _HEAPQ for v in vars(module).values()):
                known = False
            for member in vars(cls).values():
                fn = getattr(member, "__func__", member)  # (static and class methods)
                code = getattr(fn, "__code__", None)
                if isinstance(code, types.CodeType) and _names_heapq(code):
                    known = False
        _LISTS[spec] = known
    return known


def _walk(act: Activation, recent: dict[int, asyncio.Future[bytes]], request_id: int,
          reply: bytes) -> tuple[tuple[int, bytes], ...]:
    """:meth:`StateStore.window` by walking ``recent`` back from the newest id, and the
    activation's cache for the next commit: the frontier is the newest id up to which
    every id the walk saw was settled (older ones are behind 32 answers and never count
    again while those stay in ``recent``)."""
    others: list[tuple[int, bytes]] = []  # newest first
    seen: list[tuple[int, asyncio.Future[bytes], bool]] = []  # newest first, with done
    for rid, f in reversed(recent.items()):
        if len(others) >= REPLICATED_REPLIES:
            break
        done = rid != request_id and f.done()
        seen.append((rid, f, done))
        if done and (answer := _reply_of(f)) is not None:
            others.append((rid, answer))
    cache = None
    answered: list[tuple[int, bytes]] = []
    for rid, f, done in reversed(seen):  # oldest first, while settled
        if not done:
            break
        if (answer := _reply_of(f)) is not None:
            answered.append((rid, answer))
        cache = (rid, f, tuple(answered[-REPLICATED_REPLIES:]))
    act.answered = cache
    others.reverse()
    if request_id not in recent:
        return tuple(others[-REPLICATED_REPLIES:])
    window = others[-(REPLICATED_REPLIES - 1):] if REPLICATED_REPLIES > 1 else []
    window.append((request_id, reply))
    return tuple(window)


def _reply_of(f: asyncio.Future[bytes]) -> bytes | None:
    """A settled call's reply; ``None`` for a failed or cancelled one (left out of the
    window). One ``result()``, which raises for those."""
    try:
        return f.result()
    except (asyncio.CancelledError, Exception):
        return None
