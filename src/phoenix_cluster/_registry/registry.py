"""``node.registry``: cluster-wide names for agents and values, stored on the name's owners.

Protocol (``docs/registry.md`` has the full story and its guarantees):

- A name lives on its *replica set*: the first ``replicas`` (3) distinct ring members
  clockwise from the name's hash; the first live one is its *coordinator*. Nothing is
  replicated to every node.
- ``register`` goes to the coordinator (``owner.NameOwner``), which stores it on a
  majority of the replica set before answering (else ``NoQuorum``, rolled back). A taken
  name raises ``NameTaken``.
- ``lookup`` answers from the local cache, else asks the coordinator (then the other
  owners on a miss). The cache is emptied on every membership change, and a name is
  dropped from every node's cache when it is unregistered or re-resolved.
- Every owner drops the registrations of a holder it sees dead or left (names with
  ``lifetime="node"``, the default).
- ``handoff.NameHandoff`` keeps names on their owners while the ring changes, and finds
  conflicts left by partitions; ``holdings.Holdings`` tells the loser.

This module is the caller's side; ``registry_service.py`` answers the peers' calls
(the ``$registry`` service).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec

from .._agents.ref import AgentRef
from .._foundation.env import Env
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from .._transport.tasks import LogLimiter, TaskSet
from ..errors import NodeUnavailable, NoQuorum
from .cluster import UNREACHABLE, ClusterLink
from .entries import (
    Entry,
    Lifetime,
    NameConflict,
    Registration,
    check_name,
    registration,
    resolve,
)
from .handoff import NameHandoff
from .holdings import ConflictHook, Holdings, RefFactory
from .messages import (
    NamesReply,
    NamesRequest,
    RegisterReply,
    RegisterRequest,
    UnregisterReply,
    UnregisterRequest,
    decode,
    encode,
)
from .owner import MAX_HOPS, NameOwner
from .owner_lookups import OwnerLookups
from .registry_service import RegistryService
from .settings import RegistrySettings

__all__ = ["ConflictHook", "NameConflict", "RefFactory", "Registration", "Registry"]

_log = logging.getLogger("phoenix_cluster.registry")


class Registry:
    """Cluster-wide names: ``node.registry``.

    Register a name for an agent or for any msgpack value, look it up from any node,
    unregister it, list names. See ``docs/registry.md``.
    """

    def __init__(self, link: ClusterLink, *, boot: int, refs: RefFactory, env: Env,
                 bus: TelemetryBus, settings: RegistrySettings) -> None:
        self._link = link
        self._me = link.self_name
        self._boot = boot
        self._refs = refs
        self._clock = env.clock
        self._random = env.random
        self._bus = bus
        self.settings = settings
        self._cache: dict[str, Entry] = {}
        self._tasks = TaskSet(f"registry {self._me}")
        self._limiter = LogLimiter(env.clock)
        self._closed = False
        forget = self._forget
        self._holdings = Holdings(self._me, refs=refs, bus=bus, spawn=self._spawn,
                                  forget=forget)
        self._owner = NameOwner(link, clock=env.clock, settings=settings,
                                holdings=self._holdings, forget=forget, spawn=self._spawn,
                                tasks=self._tasks)
        self._handoff = NameHandoff(link, self._owner, self._holdings, clock=env.clock,
                                    settings=settings, tasks=self._tasks)
        self._owner.on_stray = self._handoff.schedule
        self.service = RegistryService(self._me, self._owner, self._holdings, self._cache,
                                       self._limiter)
        """The ``$registry`` service peers call."""
        self.cache_hits = 0
        self.cache_misses = 0
        self._lookups = OwnerLookups(link, settings, self._tasks)

    # ================================================================== public API

    async def register(self, name: str, target: Any, *, lifetime: Lifetime = "node") -> None:
        """Register ``name`` for ``target``: an :class:`AgentRef`, or any msgpack value
        (e.g. the name of a service this node offers).

        Returns once a majority of the name's owners stored it. This node is the holder:
        with ``lifetime="node"`` (default) the name is released when this node dies or
        leaves; ``lifetime="cluster"`` keeps it until :meth:`unregister`. Registering the
        same name again for the same target from the same node succeeds and changes
        nothing.

        Raises:
            NameTaken: the name is registered to something else.
            NoQuorum: fewer than a majority of the name's owners could store it
                (``definite`` says whether none of them did).
            NodeUnavailable: no member node is known (a client without members).
            TypeError, ValueError: a bad name, a value msgpack cannot carry, or a bad
                ``lifetime``.
        """
        check_name(name)
        if lifetime not in ("node", "cluster"):
            raise ValueError(f"lifetime must be 'node' or 'cluster', got {lifetime!r}")
        entry = self._new_entry(name, target, lifetime == "node")
        started = self._clock.monotonic()
        reply = await self._to_coordinator(
            name, "register", lambda hops: RegisterRequest(entry, hops), RegisterReply)
        stored = reply.entry
        if stored is None:  # pragma: no cover - a coordinator always answers with one
            raise NoQuorum(f"registration of {name!r} got an empty answer", definite=False)
        self._holdings.add(stored)
        self._cache_put(stored)
        if self._bus.has_handlers(events.REGISTRY_REGISTERED):
            self._bus.execute(events.REGISTRY_REGISTERED,
                              {"duration": self._clock.monotonic() - started},
                              {"node": self._me, "name": name})

    async def lookup(self, name: str, *, cached: bool = True) -> Any:
        """What ``name`` is registered to: an :class:`AgentRef` for agent names, the
        value for value names, ``None`` if it is not registered.

        Answers from this node's cache when it can (``cached=False`` asks the owners).

        Raises:
            NodeUnavailable: none of the name's owners answered.
            AgentNotFound: an agent name whose kind is not imported on this node.
        """
        entry = await self._find(name, cached)
        if entry is None:
            return None
        if entry.kind:
            return self._refs(entry.kind, entry.key)
        return msgspec.msgpack.decode(entry.value)

    async def info(self, name: str, *, cached: bool = True) -> Registration | None:
        """The registration of ``name`` (holder, time, target), or ``None``."""
        entry = await self._find(name, cached)
        return None if entry is None else registration(entry)

    async def unregister(self, name: str) -> bool:
        """Release ``name`` (whoever registered it). Returns ``False`` if it was free.

        Raises:
            NoQuorum: fewer than a majority of its owners confirmed (``definite=False``:
                some may have released it; retrying is safe).
        """
        check_name(name)
        reply = await self._to_coordinator(
            name, "unregister", lambda hops: UnregisterRequest(name, 0, hops),
            UnregisterReply)
        self._cache.pop(name, None)
        if reply.removed is not None:
            self._holdings.discard(name, reply.removed.rid)
        return reply.removed is not None

    async def names(self, prefix: str = "") -> list[str]:
        """Every registered name starting with ``prefix``, sorted (asks every member;
        one that does not answer in ``fanout_timeout_s`` is left out, but each name is
        stored on several members).

        Raises:
            NodeUnavailable: no member is known.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        payload = encode(NamesRequest(prefix))
        found: set[str] = set()

        async def ask(node: str) -> None:
            try:
                reply = await self._link.call(node, "registry", "names", payload,
                                              self.settings.fanout_timeout_s)
            except UNREACHABLE as exc:
                _log.debug("names(): %s did not answer: %s", node, exc.message)
                return
            found.update(decode(NamesReply, reply).names)

        hosts = self._link.hosts()
        if not hosts:
            raise NodeUnavailable("no member node is known to list names from (check the "
                                  "seeds)", definite=True)
        await asyncio.gather(*(ask(n) for n in hosts))
        return sorted(found)

    def held(self) -> list[str]:
        """The names this node registered and still holds, sorted."""
        return sorted(self._holdings.held)

    def on_name_conflict(self, hook: ConflictHook) -> Callable[[], None]:
        """Call ``hook(conflict)`` (sync or async) when a registration held by this node
        loses a conflict (:class:`NameConflict`). Returns a function removing the hook.

        An agent registered under a name is also told by a cast to its
        ``on_name_conflict(conflict)`` method when its kind defines one.
        """
        return self._holdings.on_name_conflict(hook)

    def statistics(self) -> dict[str, int]:
        """Counts for telemetry and tests."""
        store = self._owner.store
        return {
            "stored": len(store),
            "tombstones": store.tombstone_count(),
            "held": len(self._holdings.held),
            "cached": len(self._cache),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
        }

    # ================================================================== caller side

    def _new_entry(self, name: str, target: Any, linked: bool) -> Entry:
        # The registration is complete here (time, random id): retries and every owner
        # carry the very same entry, so a registration id never names two entries.
        rid = self._random.getrandbits(63) | 1
        ts = int(self._clock.wall() * 1000)
        if isinstance(target, AgentRef):
            return Entry(name, self._me, self._boot, ts, rid, kind=target.kind,
                         key=target.key, linked=linked)
        try:
            value = msgspec.msgpack.encode(target)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            raise TypeError(f"cannot register {name!r}: the value must be an AgentRef or "
                            f"msgpack-serializable ({exc})") from None
        return Entry(name, self._me, self._boot, ts, rid, value=value, linked=linked)

    async def _to_coordinator(self, name: str, method: Literal["register", "unregister"],
                              request: Callable[[int], Any], reply_type: type[Any]) -> Any:
        """Send a write to the name's coordinator, following redirects and moving on to
        the next owner when one does not answer. ``request(hops)`` builds the request."""
        replicas = self._link.replicas(name, self.settings.replicas)
        if not replicas:
            raise NodeUnavailable(f"no member node is known to store {name!r} (check the "
                                  "seeds)", definite=True)
        candidates = self._link.ordered(replicas)
        tried: list[str] = []
        definite = True
        target: str | None = candidates[0]
        hops = 0
        last = "the owners' views of the cluster disagree"
        while target is not None:
            tried.append(target)
            try:
                if target == self._me:  # no need to encode what stays in this process
                    coordinate = (self._owner.register if method == "register"
                                  else self._owner.unregister)
                    reply = await coordinate(request(hops))
                else:
                    # The coordinator may wait timeout_s for the other owners: wait longer.
                    raw = await self._link.call(target, "registry", method,
                                                encode(request(hops)),
                                                2 * self.settings.timeout_s)
                    reply = decode(reply_type, raw)
            except UNREACHABLE as exc:
                definite = definite and exc.definite  # a timeout: it may have been stored
                last = exc.message
                target = next((c for c in candidates if c not in tried), None)
                continue
            if not reply.redirect:
                return reply
            hops += 1
            if hops > MAX_HOPS:
                break
            target = reply.redirect if reply.redirect not in tried[:-1] else next(
                (c for c in candidates if c not in tried), None)
        raise NoQuorum(f"{method} {name!r}: no owner could coordinate it (tried "
                       f"{', '.join(tried)}; last: {last})", definite=definite)

    async def _find(self, name: str, cached: bool) -> Entry | None:
        check_name(name)
        if cached:
            hit = self._cache.get(name)
            if hit is not None:
                self.cache_hits += 1
                return hit
        self.cache_misses += 1
        measure = self._bus.has_handlers(events.REGISTRY_LOOKUP)
        started = self._clock.monotonic() if measure else 0.0
        replicas = self._link.replicas(name, self.settings.replicas)
        if not replicas:
            raise NodeUnavailable(f"no member node is known to store {name!r} (check the "
                                  "seeds)", definite=True)
        first, *rest = self._link.ordered(replicas)
        answered = 0
        entry: Entry | None = None
        try:
            entry = await self._lookup_at(first, name)
            answered += 1
        except UNREACHABLE:
            pass
        if entry is None and rest:
            # A miss on the coordinator may be a hand-off in progress: ask the others.
            results = await asyncio.gather(*(self._lookup_at(r, name) for r in rest),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    if not isinstance(result, UNREACHABLE):
                        raise result
                    continue
                answered += 1
                if result is not None:
                    entry = result if entry is None else resolve(entry, result)
        if answered == 0:
            raise NodeUnavailable(f"no owner of {name!r} answered ({', '.join(replicas)})",
                                  definite=True)
        if entry is not None and entry.linked and self._link.is_gone(entry.holder):
            entry = None
        if entry is not None:
            self._cache_put(entry)
        if measure:
            self._bus.execute(events.REGISTRY_LOOKUP,
                              {"duration": self._clock.monotonic() - started},
                              {"node": self._me, "found": entry is not None})
        return entry

    async def _lookup_at(self, node: str, name: str) -> Entry | None:
        if node == self._me:
            return self._owner.live(name)
        return await self._lookups.lookup(node, name)

    def _cache_put(self, entry: Entry) -> None:
        cache = self._cache
        if entry.name not in cache and len(cache) >= self.settings.cache_limit:
            del cache[next(iter(cache))]
        cache[entry.name] = entry

    def _forget(self, name: str) -> None:
        self._cache.pop(name, None)

    # ================================================================== lifecycle

    def start(self) -> None:
        """Start the periodic re-assertion (a node that talks to others calls this)."""
        self._handoff.start()

    def on_membership(self, gone: list[str], joined: list[str]) -> None:
        """A new membership view: forget cached answers, release the names of nodes that
        died or left, and (after ``settle_s``) hand names to their new owners."""
        self._cache.clear()
        self._lookups.on_membership()
        for holder in gone:
            released = self._owner.release(holder)
            if released:
                _log.info("released %d names of %s (it is gone)", released, holder)
                if self._bus.has_handlers(events.REGISTRY_RELEASED):
                    self._bus.execute(events.REGISTRY_RELEASED, {"names": float(released)},
                                      {"node": self._me, "holder": holder,
                                       "reason": "holder_gone"})
        self._handoff.changed(bool(joined))

    async def aclose(self) -> None:
        """Hand this node's names to the owners that remain, then stop."""
        if self._closed:
            return
        await self._handoff.leave()
        self._closed = True
        await self._tasks.aclose()

    def _spawn(self, awaitable: Awaitable[Any], name: str) -> None:
        if not self._closed:
            self._tasks.spawn(_await(awaitable), name=name)
        elif inspect.iscoroutine(awaitable):
            awaitable.close()

    def __repr__(self) -> str:
        return (f"<Registry {self._me} [{len(self._owner.store)} stored, "
                f"{len(self._holdings.held)} held, {len(self._cache)} cached]>")


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable
