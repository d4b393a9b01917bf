"""The owner side of the registry: the names this member stores, and coordinating writes.

A name's *coordinator* is the first live member of its replica set. It serializes the
writes of one name (a lock per name), checks the name is free, stores the registration
and replicates it to the other owners, answering
once a majority (itself included) stored it. Without a majority it rolls back (buries
the registration here and on the owners that took it) and raises ``NoQuorum``.

Every owner merges what it is sent (``store``) with the conflict rule of ``entries``; a
registration that beats one it held makes it tell the loser's holder, so a conflict is
reported wherever it is found.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from .._foundation.env import Clock, running_loop
from .._transport.tasks import TaskSet
from ..errors import NameTaken, NoQuorum, PhoenixError
from .batching import StoreBatcher
from .cluster import UNREACHABLE, ClusterLink
from .entries import Entry, check_name, describe, majority, same_claim
from .holdings import Holdings, Spawn
from .messages import (
    ConflictNotice,
    Invalidate,
    Refusal,
    RegisterReply,
    RegisterRequest,
    StoreReply,
    StoreRequest,
    Tomb,
    UnregisterReply,
    UnregisterRequest,
    decode,
    encode,
)
from .settings import RegistrySettings
from .store import NameStore

__all__ = ["MAX_HOPS", "NameOwner"]

_log = logging.getLogger("phoenix_cluster.registry")

MAX_HOPS = 4
"""Redirects a write follows before giving up (views that disagree for long)."""
_COORDINATE_AFTER_HOPS = 2
"""A replica asked after this many redirects coordinates itself, ending any ping-pong."""


class _NameLocks:
    """One lock per name, kept only while somebody holds or waits for it."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def hold(self, name: str) -> _Held:
        """``async with locks.hold(name):`` (a class, not a generator: it is on every
        registration)."""
        return _Held(self._locks, name)


class _Held:
    __slots__ = ("_locks", "_name")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, int]], name: str) -> None:
        self._locks = locks
        self._name = name

    async def __aenter__(self) -> None:
        locks, name = self._locks, self._name
        lock, users = locks.get(name, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        locks[name] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._locks[self._name][0].release()
        self._leave()

    def _leave(self) -> None:
        locks, name = self._locks, self._name
        lock, users = locks[name]
        if users == 1:
            del locks[name]
        else:
            locks[name] = (lock, users - 1)


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
        self._holdings = holdings
        self._forget = forget
        self._spawn = spawn
        self._tasks = tasks
        self.store = NameStore(settings.tombstone_ttl_s)
        self._locks = _NameLocks()
        self._batcher = StoreBatcher(
            self.store_at, lambda send: tasks.spawn(send, name="registry-replicate"))
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

    def _redirect_for(self, name: str, hops: int) -> str:
        """``""`` if this node should coordinate ``name``, else the node to ask."""
        replicas = self._link.replicas(name, self.settings.replicas)
        if self._me not in replicas:
            if not replicas or hops >= MAX_HOPS:
                raise NoQuorum(f"node {self._me} does not own {name!r} and the cluster's "
                               "views disagree; retry", definite=True)
            return self._link.ordered(replicas)[0]
        if hops >= _COORDINATE_AFTER_HOPS:
            return ""
        first = self._link.ordered(replicas)[0]
        return "" if first == self._me else first

    async def register(self, req: RegisterRequest) -> RegisterReply:
        """Coordinate a registration (see the module docstring).

        Raises:
            NameTaken: the name holds another registration.
            NoQuorum: no majority of the owners stored it (rolled back).
        """
        entry = req.entry
        name = check_name(entry.name)
        redirect = self._redirect_for(name, req.hops)
        if redirect:
            return RegisterReply(redirect=redirect)
        async with self._locks.hold(name):
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
            replicas = self._link.replicas(name, self.settings.replicas)
            need = majority(len(replicas)) - 1
            acks, winner = await self._replicate(
                [self._batcher.replicate(r, entry) for r in replicas if r != self._me],
                need, entry)
            if winner is not None:
                # The owners that took this registration drop it and learn the winner.
                self._spread(name, [winner], [Tomb(name, entry.rid)])
                raise NameTaken(f"{name!r} is already registered by {winner.holder} "
                                f"({describe(winner)})")
            if acks < need:
                self.store.bury(name, entry.rid, self._clock.monotonic())
                self._spread(name, [], [Tomb(name, entry.rid)])
                raise NoQuorum(
                    f"{name!r} was stored on {acks + 1} of {len(replicas)} owners "
                    f"({', '.join(replicas)}), {need + 1} needed; rolled back",
                    definite=acks == 0)
            return RegisterReply(entry)

    async def unregister(self, req: UnregisterRequest) -> UnregisterReply:
        """Coordinate an unregistration: bury the registration on a majority.

        Raises:
            NoQuorum: fewer than a majority confirmed (``definite=False``).
        """
        name = check_name(req.name)
        redirect = self._redirect_for(name, req.hops)
        if redirect:
            return UnregisterReply(redirect=redirect)
        async with self._locks.hold(name):
            current = self.live(name)
            if current is None or (req.rid and current.rid != req.rid):
                return UnregisterReply()
            self.store.bury(name, current.rid, self._clock.monotonic())
            self._forget(name)
            replicas = self._link.replicas(name, self.settings.replicas)
            need = majority(len(replicas)) - 1
            payload = encode(StoreRequest("replicate", tombs=[Tomb(name, current.rid)]))
            acks, _ = await self._replicate(
                [self._tasks.spawn(self.store_at(r, payload), name="registry-replicate")
                 for r in replicas if r != self._me], need, None)
            self.notify(current, None)
            self.broadcast_invalidate([name])
            if acks < need:
                raise NoQuorum(f"{name!r} was released on {acks + 1} of {len(replicas)} "
                               "owners only; retry to finish", definite=False)
            return UnregisterReply(current)

    async def _replicate(self, sends: list[asyncio.Future[StoreReply | None]], need: int,
                         entry: Entry | None) -> tuple[int, Entry | None]:
        """Wait for the ``store`` replies (one per other owner); return once ``need``
        stored it, or all answered.

        Returns the acknowledgements counted and, for a registration (``entry``), a
        different registration some owner keeps instead (the name was taken there).
        Answers that come later are still applied.
        """
        if not sends:
            return 0, None
        # One future and a callback per send, not asyncio.wait's sets and waiter per
        # round: a registration waits for one reply in two (a few µs per registration).
        decided: asyncio.Future[None] = running_loop().create_future()
        acks = 0
        winner: Entry | None = None
        left = len(sends)

        def on_reply(send: asyncio.Future[StoreReply | None]) -> None:
            nonlocal acks, winner, left
            left -= 1
            if decided.done():  # answered after the decision (or the caller went away)
                self._late_reply(entry, send)
                return
            reply = send.result()
            if reply is not None:
                if not reply.refused:
                    acks += 1
                for refusal in reply.refused:
                    if refusal.winner is not None and entry is not None:
                        winner = refusal.winner
                        self.store.merge(refusal.winner, self._clock.monotonic())
            if acks >= need or winner is not None or left == 0:
                decided.set_result(None)

        for send in sends:
            send.add_done_callback(on_reply)
        await decided
        return acks, winner

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
                self._decided(merged.loser, refusal.winner, tell=True)

    async def store_at(self, node: str, payload: bytes) -> StoreReply | None:
        """Send a ``store`` to ``node``; ``None`` (logged) if it did not take it."""
        try:
            raw = await self._link.call(node, "registry", "store", payload,
                                        self.settings.timeout_s)
        except UNREACHABLE as exc:
            _log.debug("store on %s failed: %s", node, exc.message)
            return None
        except PhoenixError as exc:
            _log.warning("store on %s refused: %s", node, exc.message)
            return None
        return decode(StoreReply, raw)

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
            self._decided(loser, winner, tell=tell)
        if conflicts:
            self.broadcast_invalidate([loser.name for loser, _, _ in conflicts])
        return StoreReply(refused)

    def _decided(self, loser: Entry, winner: Entry, *, tell: bool) -> None:
        """This owner resolved a conflict: the other owners learn the outcome (the
        winner, and a tombstone for the loser), and the loser's holder is told."""
        _log.info("name conflict on %r: kept %s's registration, dropped %s's", loser.name,
                  winner.holder, loser.holder)
        self._spread(loser.name, [winner], [Tomb(loser.name, loser.rid)])
        if tell:
            self.notify(loser, winner)

    def _spread(self, name: str, entries: list[Entry], tombs: list[Tomb]) -> None:
        """Send entries and tombstones of ``name`` to its other owners, in the background."""
        payload = encode(StoreRequest("handoff", entries, tombs))
        for node in self._link.replicas(name, self.settings.replicas):
            if node != self._me:
                self._spawn(self.store_at(node, payload), "registry-spread")

    # ------------------------------------------------------------------ telling others

    def notify(self, loser: Entry, winner: Entry | None) -> None:
        """Tell ``loser``'s holder that its registration is gone (``winner``: why)."""
        if loser.holder == self._me:
            self._holdings.lost(loser.name, loser.rid, winner)
            return
        if self._link.is_gone(loser.holder) or self._link.address(loser.holder) is None:
            return
        payload = encode(ConflictNotice(loser, winner))
        self._spawn(self._link.cast(loser.holder, "registry", "conflict", payload,
                                    self.settings.timeout_s), "registry-notify")

    def broadcast_invalidate(self, names: list[str]) -> None:
        """Make every node drop ``names`` from its lookup cache."""
        if not self._link.clustered:
            return
        payload = encode(Invalidate(names))
        for node in self._link.peers():
            self._spawn(self._link.cast(node, "registry", "invalidate", payload,
                                        self.settings.timeout_s), "registry-invalidate")

    def __repr__(self) -> str:
        return f"<NameOwner {self._me} {self.store!r}>"
