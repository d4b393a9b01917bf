"""The owner side of the registry: the names this member stores, and coordinating writes.

A name's *coordinator* is the first live member of its replica set. It serializes the
writes of one name (a lock per name), checks the name is free, stores the registration
and replicates it to the other owners, answering
once a majority (itself included) stored it. Without a majority it rolls back (buries
the registration here and on the owners that took it) and raises ``NoQuorum``.

A registration whose name nobody else is writing is taken on the connection's reader
(:meth:`NameOwner.register_now`): the lock is free, so it is taken at once, and the
answer goes out from the callback of the last reply it needed, with no task. A name
being written waits its turn in a task (:meth:`NameOwner.register`); both run the same
checks, in the same order, under the same lock.

Every owner merges what it is sent (``store``) with the conflict rule of ``entries``; a
registration that beats one it held makes it tell the loser's holder, so a conflict is
reported wherever it is found (``outcomes.py`` does the telling).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from .._foundation.env import Clock, running_loop
from .._transport.tasks import TaskSet
from ..errors import NameTaken, NoQuorum, PhoenixError
from .acks import Acks
from .batching import StoreBatcher
from .cluster import ClusterLink
from .entries import Entry, check_name, describe, majority, same_claim
from .holdings import Holdings, Spawn
from .messages import (
    Refusal,
    RegisterReply,
    RegisterRequest,
    StoreReply,
    StoreRequest,
    Tomb,
    UnregisterReply,
    UnregisterRequest,
    encode,
)
from .name_locks import NameLocks
from .outcomes import Outcomes
from .settings import RegistrySettings
from .store import NameStore
from .store_calls import StoreCalls

__all__ = ["MAX_HOPS", "NameOwner"]

_log = logging.getLogger("phoenix_cluster.registry")

MAX_HOPS = 4
"""Redirects a write follows before giving up (views that disagree for long)."""
_COORDINATE_AFTER_HOPS = 2
"""A replica asked after this many redirects coordinates itself, ending any ping-pong."""


class NameOwner:
    """The names this member stores and the owner's half of ``$registry``.

    Args:
        link: the cluster view and calls.
        clock: the node's clock.
        settings: the registry settings.
        holdings: this node's own registrations (told directly when one is lost here).
        forget: drops a name from this node's lookup cache.
        spawn: runs background sends.
        tasks: owns the replication requests (some outlive the write that sent them).
    """

    def __init__(self, link: ClusterLink, *, clock: Clock, settings: RegistrySettings,
                 holdings: Holdings, forget: Callable[[str], None], spawn: Spawn,
                 tasks: TaskSet) -> None:
        self._link = link
        self._me = link.self_name
        self._clock = clock
        self.settings = settings
        self._forget = forget
        self._tasks = tasks
        self.store = NameStore(settings.tombstone_ttl_s)
        self._locks = NameLocks()
        calls = StoreCalls(link, settings.timeout_s)
        self.store_at = calls.store_at
        """Sends a ``store`` to a node: its reply, or ``None`` if it did not take it."""
        self.outcomes = Outcomes(link, settings, holdings=holdings, spawn=spawn,
                                 store_at=self.store_at)
        """Tells others what this owner decided (``outcomes.py``)."""
        self._batcher = StoreBatcher(
            self.store_at, lambda send: tasks.spawn(send, name="registry-replicate"),
            calls.start)
        self.strays = False
        """Stores a name it does not own (a sender saw another ring): pass it on."""
        self.on_stray: Callable[[], None] = lambda: None

    # ------------------------------------------------------------------ reading

    def live(self, name: str) -> Entry | None:
        """The registration of ``name`` stored here, unless its holder is gone."""
        entry = self.store.get(name)
        if entry is not None and entry.linked and self._link.is_gone(entry.holder):
            return None
        return entry

    def live_names(self, prefix: str) -> list[str]:
        return [n for n in self.store.names(prefix) if self.live(n) is not None]

    def owns(self, name: str) -> bool:
        return self._me in self._link.replicas(name, self.settings.replicas)

    def release(self, holder: str) -> int:
        """Drop the names of a holder that died or left; returns how many."""
        return len(self.store.release_holder(holder))

    # ------------------------------------------------------------------ coordinating

    def _redirect_for(self, name: str, hops: int, replicas: list[str]) -> str:
        """``""`` if this node should coordinate ``name``, else the node to ask."""
        if self._me not in replicas:
            if not replicas or hops >= MAX_HOPS:
                raise NoQuorum(f"node {self._me} does not own {name!r} and the cluster's "
                               "views disagree; retry", definite=True)
            return self._link.ordered(replicas)[0]
        if hops >= _COORDINATE_AFTER_HOPS:
            return ""
        first = self._link.ordered(replicas)[0]
        return "" if first == self._me else first

    def register_now(self, req: RegisterRequest
                     ) -> RegisterReply | asyncio.Future[RegisterReply] | None:
        """Coordinate a registration without a task when its name's lock is free: the
        reply, a future of it (resolved once the other owners decided it), or ``None``
        when another write holds or waits for the name (:meth:`register` waits its
        turn).

        Raises:
            NameTaken, NoQuorum: as :meth:`register`, when decided at once.
        """
        entry = req.entry
        name = check_name(entry.name)
        replicas = self._link.replicas(name, self.settings.replicas)
        redirect = self._redirect_for(name, req.hops, replicas)
        if redirect:
            return RegisterReply(redirect=redirect)
        if not self._locks.try_take(name):
            return None
        try:
            acks = self._claim(entry, replicas)
        except BaseException:
            self._locks.release(name)
            raise
        if isinstance(acks, RegisterReply):
            self._locks.release(name)
            return acks
        answer: asyncio.Future[RegisterReply] = running_loop().create_future()

        def decided(_: object) -> None:
            try:
                reply = self._conclude(entry, replicas, acks)
            except PhoenixError as exc:
                if not answer.done():
                    answer.set_exception(exc)
            else:
                if not answer.done():
                    answer.set_result(reply)
            finally:
                self._locks.release(name)

        acks.decided.add_done_callback(decided)
        return answer

    async def register(self, req: RegisterRequest) -> RegisterReply:
        """Coordinate a registration (see the module docstring), in turn with the other
        writes of its name.

        Raises:
            NameTaken: the name holds another registration.
            NoQuorum: no majority of the owners stored it (rolled back).
        """
        now = self.register_now(req)
        if now is None:
            return await self._register_in_turn(req.entry)
        if isinstance(now, RegisterReply):
            return now
        return await now

    async def _register_in_turn(self, entry: Entry) -> RegisterReply:
        name = entry.name
        await self._locks.take(name)
        try:
            # The ring may have changed while this write waited.
            replicas = self._link.replicas(name, self.settings.replicas)
            acks = self._claim(entry, replicas)
            if isinstance(acks, RegisterReply):
                return acks
            await acks.decided
            return self._conclude(entry, replicas, acks)
        finally:
            self._locks.release(name)

    def _claim(self, entry: Entry, replicas: list[str]) -> RegisterReply | Acks:
        """Under the name's lock: check the name is free, store the registration and
        send it to the other owners; the reply if that decided it already.

        Raises:
            NameTaken: the name holds another registration.
            NoQuorum: this registration was rolled back before.
        """
        name = entry.name
        current = self.live(name)
        if (current is not None and current.holder == entry.holder
                and current.boot < entry.boot):
            # The holder restarted: its previous life's names are released.
            self.store.release_holder(entry.holder, before_boot=entry.boot)
            current = None
        if current is not None:
            if current.rid == entry.rid or same_claim(current, entry):
                return RegisterReply(current)
            raise NameTaken(f"{name!r} is already registered by {current.holder} "
                            f"({describe(current)})")
        if self.store.is_buried(name, entry.rid):
            raise NoQuorum(f"registration of {name!r} was rolled back; retry",
                           definite=True)
        stale = self.store.get(name)
        if stale is not None:  # held by a node that is gone
            self.store.drop(name)
        if self.store.merge(entry, self._clock.monotonic()).outcome != "stored":
            raise NameTaken(f"{name!r} cannot be registered by {entry.holder} (an "
                            "older boot of that node)")
        return self._replicate(
            [self._batcher.replicate(r, entry) for r in replicas if r != self._me],
            majority(len(replicas)) - 1, entry)

    def _conclude(self, entry: Entry, replicas: list[str], acks: Acks) -> RegisterReply:
        """Once the other owners decided: the reply, or roll back.

        Raises:
            NameTaken: an owner keeps another registration of the name.
            NoQuorum: fewer than a majority stored it (rolled back).
        """
        name = entry.name
        winner = acks.winner
        if winner is not None:
            # The owners that took this registration drop it and learn the winner.
            self.outcomes.spread(name, [winner], [Tomb(name, entry.rid)])
            raise NameTaken(f"{name!r} is already registered by {winner.holder} "
                            f"({describe(winner)})")
        need = majority(len(replicas)) - 1
        if acks.acks < need:
            self.store.bury(name, entry.rid, self._clock.monotonic())
            self.outcomes.spread(name, [], [Tomb(name, entry.rid)])
            raise NoQuorum(
                f"{name!r} was stored on {acks.acks + 1} of {len(replicas)} owners "
                f"({', '.join(replicas)}), {need + 1} needed; rolled back",
                definite=acks.acks == 0)
        return RegisterReply(entry)

    async def unregister(self, req: UnregisterRequest) -> UnregisterReply:
        """Coordinate an unregistration: bury the registration on a majority.

        Raises:
            NoQuorum: fewer than a majority confirmed (``definite=False``).
        """
        name = check_name(req.name)
        redirect = self._redirect_for(name, req.hops,
                                      self._link.replicas(name, self.settings.replicas))
        if redirect:
            return UnregisterReply(redirect=redirect)
        await self._locks.take(name)
        try:
            current = self.live(name)
            if current is None or (req.rid and current.rid != req.rid):
                return UnregisterReply()
            self.store.bury(name, current.rid, self._clock.monotonic())
            self._forget(name)
            replicas = self._link.replicas(name, self.settings.replicas)
            need = majority(len(replicas)) - 1
            payload = encode(StoreRequest("replicate", tombs=[Tomb(name, current.rid)]))
            acks = self._replicate(
                [self._tasks.spawn(self.store_at(r, payload), name="registry-replicate")
                 for r in replicas if r != self._me], need, None)
            await acks.decided
            self.outcomes.notify(current, None)
            self.outcomes.broadcast_invalidate([name])
            if acks.acks < need:
                raise NoQuorum(f"{name!r} was released on {acks.acks + 1} of "
                               f"{len(replicas)} owners only; retry to finish",
                               definite=False)
            return UnregisterReply(current)
        finally:
            self._locks.release(name)

    def _replicate(self, sends: list[asyncio.Future[StoreReply | None]], need: int,
                   entry: Entry | None) -> Acks:
        """Count the ``store`` replies (one per other owner) until ``need`` stored it,
        or all answered; answers that come later are still applied."""
        return Acks(sends, need, entry, self._merge_winner, lambda send: self._late_reply(
            entry, send))

    def _merge_winner(self, winner: Entry) -> None:
        self.store.merge(winner, self._clock.monotonic())

    def _late_reply(self, entry: Entry | None,
                    task: asyncio.Future[StoreReply | None]) -> None:
        if task.cancelled() or task.exception() is not None or entry is None:
            return
        reply = task.result()
        if reply is not None:
            self.adopt(reply.refused)

    def adopt(self, refused: Iterable[Refusal]) -> None:
        """Take the winners other owners kept over entries we sent them."""
        now = self._clock.monotonic()
        for refusal in refused:
            if refusal.winner is None:
                continue
            merged = self.store.merge(refusal.winner, now)
            if merged.outcome == "replaced" and merged.loser is not None:
                self._forget(refusal.name)
                self.outcomes.decided(merged.loser, refusal.winner, tell=True)

    # ------------------------------------------------------------------ being sent names

    def on_store(self, req: StoreRequest) -> StoreReply:
        """Merge what another node sent; refuse (with the winner) what loses."""
        now = self._clock.monotonic()
        refused: list[Refusal] = []
        conflicts: list[tuple[Entry, Entry, bool]] = []  # loser, winner, tell its holder
        for entry in req.entries:
            check_name(entry.name)
            # A holder re-asserting its own names proves it is alive, whatever our view.
            if entry.linked and req.mode != "reassert" and self._link.is_gone(entry.holder):
                refused.append(Refusal(entry.name, entry.rid))
                continue
            merged = self.store.merge(entry, now)
            outcome = merged.outcome
            if outcome in ("stored", "replaced") and not self.owns(entry.name):
                # The sender sees another ring: keep it (never lose a name) and pass it
                # on to its owners in our view soon.
                self.strays = True
            if outcome in ("stored", "same"):
                continue
            self._forget(entry.name)
            if outcome == "replaced" and merged.loser is not None:
                conflicts.append((merged.loser, entry, True))
            elif outcome == "kept" and merged.winner is not None:
                refused.append(Refusal(entry.name, entry.rid, merged.winner))
                # A fresh registration refused here was never acknowledged: its
                # coordinator answers NameTaken and repairs. A holder re-asserting
                # learns from this answer; the holder behind a hand-off must be told.
                if req.mode != "replicate":
                    conflicts.append((entry, merged.winner, req.mode == "handoff"))
            else:
                refused.append(Refusal(entry.name, entry.rid))
        for tomb in req.tombs:
            if self.store.bury(check_name(tomb.name), tomb.rid, now) is not None:
                self._forget(tomb.name)
        if self.strays:
            self.on_stray()
        for loser, winner, tell in conflicts:
            self.outcomes.decided(loser, winner, tell=tell)
        if conflicts:
            self.outcomes.broadcast_invalidate([loser.name for loser, _, _ in conflicts])
        return StoreReply(refused)

    def __repr__(self) -> str:
        return f"<NameOwner {self._me} {self.store!r}>"

