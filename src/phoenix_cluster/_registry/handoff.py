"""Keeping names on their owners while the ring changes (anti-entropy).

Two pushes, both idempotent (every receiver merges with the conflict rule):

- *hand-off*, by owners: when the ring changes, an owner sends each name it stores to
  the members that became its owners, and drops the names it no longer owns once all
  their owners took them. A hand-off some owner did not take is retried with backoff.
- *re-assertion*, by holders: after a ring change, a (re)join, and every
  ``reassert_interval_s``, a holder sends the names it holds to their owners. This
  restores names an owner lost, and it is how a conflict left by a partition is found:
  the owner that keeps another registration answers with the winner.

A burst of membership changes is handled once, ``settle_s`` after the first of them.
"""

from __future__ import annotations

import asyncio
import logging

from .._foundation.env import Clock, TimerHandle
from .._ring.ring import HashRing
from .._transport.tasks import TaskSet, fail_after
from .cluster import ClusterLink
from .entries import Entry, replica_set
from .holdings import Holdings
from .messages import StoreRequest, Tomb, encode
from .owner import NameOwner
from .settings import RegistrySettings

__all__ = ["NameHandoff"]

_log = logging.getLogger("phoenix_cluster.registry")

_MAX_RETRY_S = 10.0
"""Longest wait between attempts to finish a hand-off that some owner did not take."""


class NameHandoff:
    """Hands names to new owners and re-asserts held ones (see the module docstring)."""

    def __init__(self, link: ClusterLink, owner: NameOwner, holdings: Holdings, *,
                 clock: Clock, settings: RegistrySettings, tasks: TaskSet) -> None:
        self._link = link
        self._me = link.self_name
        self._owner = owner
        self._holdings = holdings
        self._clock = clock
        self.settings = settings
        self._tasks = tasks
        self._settle: TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None
        self._again = False
        self._rejoined = False
        self._last_ring: HashRing | None = None
        self._retry_s = settings.settle_s
        self._periodic: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ scheduling

    def start(self) -> None:
        """Start the periodic re-assertion (a node that talks to others calls this)."""
        if self._periodic is None and not self._closed:
            self._periodic = self._tasks.spawn(self._periodic_loop(), name="registry-periodic")

    def changed(self, joined: bool) -> None:
        """The membership changed (``joined``: a node joined or came back)."""
        if joined:
            self._rejoined = True
        self.schedule()

    def schedule(self, delay_s: float | None = None) -> None:
        """Run a round after ``delay_s`` (default ``settle_s``) unless one is pending."""
        if self._closed or not self._link.clustered or self._settle is not None:
            return
        self._settle = self._clock.call_later(
            self.settings.settle_s if delay_s is None else delay_s, self._fire)

    def _fire(self) -> None:
        self._settle = None
        if self._closed:
            return
        if self._running is not None:
            self._again = True  # one more round once the current one is done
            return
        self._running = self._tasks.spawn(self._round(), name="registry-handoff")

    async def _round(self) -> None:
        try:
            while True:
                self._again = False
                ring = self._link.ring()
                changed, self._rejoined = self._rejoined, False
                if ring is not None and ring != self._last_ring:
                    changed = True
                    if self._me not in ring or await self.handoff(self._last_ring, ring):
                        self._last_ring = ring
                        self._retry_s = self.settings.settle_s
                    else:
                        # Some new owner did not answer: compute the same hand-off again
                        # soon (names it already took are sent again, which is harmless).
                        self._retry_s = min(self._retry_s * 2, _MAX_RETRY_S)
                        _log.info("hand-off of names incomplete; retrying in %.1fs",
                                  self._retry_s)
                        self.schedule(self._retry_s)
                if changed:
                    await self.reassert()
                owner = self._owner
                if owner.strays and ring is not None and self._me in ring:
                    owner.strays = False
                    if not await self.handoff(None, ring, leftovers_only=True):
                        owner.strays = True
                        self.schedule(_MAX_RETRY_S)
                if not self._again:
                    return
        finally:
            self._running = None

    async def _periodic_loop(self) -> None:
        while True:
            await self._clock.sleep(self.settings.reassert_interval_s)
            self._owner.store.expire(self._clock.monotonic())
            ring = self._link.ring()
            if ring is not None and self._me in ring:
                await self.handoff(None, ring, leftovers_only=True)
            await self.reassert()

    # ------------------------------------------------------------------ the pushes

    async def handoff(self, old: HashRing | None, new: HashRing, *,
                      leftovers_only: bool = False) -> bool:
        """Push stored names to the members that own them in ``new`` but did not in
        ``old`` (with ``leftovers_only``, only names this node does not own); drop the
        ones this node no longer owns once all their owners have them.

        Returns whether every owner took its share.
        """
        me, n, store = self._me, self.settings.replicas, self._owner.store
        entries: dict[str, list[Entry]] = {}
        tombs: dict[str, list[Tomb]] = {}
        leaving: dict[str, list[str]] = {}

        def targets(name: str) -> list[str]:
            owners = replica_set(new, name, n)
            if me not in owners:
                leaving[name] = owners
                return owners
            if leftovers_only:
                return []
            before = replica_set(old, name, n) if old is not None and me in old else []
            return [r for r in owners if r != me and r not in before]

        for i, entry in enumerate(store.entries()):
            if entry.linked and self._link.is_gone(entry.holder):
                continue
            for node in targets(entry.name):
                entries.setdefault(node, []).append(entry)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # a big store must not stall the loop
        for name, rid in store.tombstones():
            for node in targets(name):
                tombs.setdefault(node, []).append(Tomb(name, rid))
        failed = set()
        for node in sorted(set(entries) | set(tombs)):
            if not await self._push(node, entries.get(node, []), tombs.get(node, [])):
                failed.add(node)
        dropped = 0
        for name, owners in leaving.items():
            if not failed.intersection(owners):
                store.drop(name)
                dropped += 1
        if entries or tombs:
            _log.info("handed %d names to %s (%d no longer owned here, %d kept until their "
                      "owners answer)", sum(len(v) for v in entries.values()),
                      ", ".join(sorted(set(entries) | set(tombs))), dropped,
                      len(leaving) - dropped)
        return not failed

    async def _push(self, node: str, entries: list[Entry], tombs: list[Tomb]) -> bool:
        """Send entries and tombstones to ``node`` in batches; ``False`` if it failed."""
        if node == self._me:
            return True
        size = self.settings.batch
        for start in range(0, max(len(entries), len(tombs)), size):
            payload = encode(StoreRequest("handoff", entries[start:start + size],
                                          tombs[start:start + size]))
            reply = await self._owner.store_at(node, payload)
            if reply is None:
                return False
            self._owner.adopt(reply.refused)
        return True

    async def reassert(self) -> None:
        """Send every name this node holds to its current owners; learn what it lost."""
        held = self._holdings.held
        if not held:
            return
        by_node: dict[str, list[Entry]] = {}
        for entry in list(held.values()):
            for node in self._link.replicas(entry.name, self.settings.replicas):
                by_node.setdefault(node, []).append(entry)
        size = self.settings.batch
        for node, entries in by_node.items():
            for start in range(0, len(entries), size):
                payload = encode(StoreRequest("reassert", entries[start:start + size]))
                reply = await self._owner.store_at(node, payload)
                if reply is None:
                    break
                for refusal in reply.refused:
                    self._holdings.lost(refusal.name, refusal.rid, refusal.winner)

    # ------------------------------------------------------------------ leaving

    async def leave(self) -> None:
        """Stop scheduling; hand this node's names to the owners that remain."""
        self._closed = True
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        ring = self._link.ring()
        if not self._link.clustered or ring is None or self._me not in ring or len(ring) < 2:
            return
        try:
            async with fail_after(self._clock, self.settings.timeout_s):
                await self.handoff(ring, ring.without_member(self._me))
        except TimeoutError:
            _log.warning("hand-off of names before leaving did not finish in %.1fs; the "
                         "remaining owners keep their copies", self.settings.timeout_s)
