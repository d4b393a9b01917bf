"""The caller's uncached lookups to a name's owners, batched per owner per turn.

:class:`OwnerLookups` asks another node's ``$registry`` what it stores for a name, the
way Nagle's algorithm sends bytes: a lookup to a node with no lookup of ours in flight
leaves at once as a plain ``lookup`` (a lone lookup waits for nothing); while one is in
flight, the lookups made in a turn of the event loop travel together at the end of the
turn as one ``lookup_many`` (see ``turn_batching.py``). Each caller gets its own answer
or error. Batching changes no answer: a batched lookup still asks the owner after its
caller asked.

Why not "the first of each turn alone, the rest batched": under steady load the lone
first lookup's answer comes back on a turn of its own, and its caller's next lookup is
again first of its turn, so lookups drift back to one request each (measured: 1.85x the
lookups per second of unbatched lookups against 2.5x for batching all but the first
after idling).

Registrations are not batched: measured side by side, a ``register_many`` saved no CPU
per registration (the coordinator's work per name dominates, not the frames) and made a
batch's registrations wait for each other (docs/design/performance.md).

A node of an earlier release answers ``lookup_many`` with ``AgentNotFound`` before
running anything; it is then asked one name at a time until the next membership change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from .._transport.tasks import TaskSet
from ..errors import AgentNotFound, PhoenixError, ProtocolError
from .cluster import ClusterLink
from .entries import Entry
from .messages import LookupManyReply, LookupManyRequest, LookupReply, LookupRequest, decode, encode
from .settings import RegistrySettings
from .turn_batching import TurnBatcher

__all__ = ["OwnerLookups"]


class OwnerLookups:
    """Uncached lookups sent to other nodes: alone when none is in flight to that node,
    else with the others of their turn in one ``lookup_many``.

    Args:
        link: the cluster view and calls.
        settings: the registry settings (timeouts).
        tasks: owns the batches' sends; closing it fails what is in flight.
    """

    def __init__(self, link: ClusterLink, settings: RegistrySettings, tasks: TaskSet) -> None:
        self._link = link
        self.settings = settings
        self._tasks = tasks
        self._single_only: set[str] = set()
        self._in_flight: dict[str, int] = {}
        self._batches: TurnBatcher[str, Entry | None] = TurnBatcher(
            self._send, self._spawn, lambda name: len(name) + 16)

    async def lookup(self, node: str, name: str) -> Entry | None:
        """What ``node`` stores for ``name`` (``None``: nothing live).

        Raises:
            NodeUnavailable, CallTimeout, TransportError: ``node`` did not answer.
            ProtocolError: ``node`` answered nonsense.
        """
        in_flight = self._in_flight
        waiting = in_flight.get(node, 0)
        in_flight[node] = waiting + 1
        try:
            if waiting:
                return await self._batches.submit(node, name)
            return await self._lookup_one(node, name)
        finally:
            left = in_flight[node] - 1
            if left:
                in_flight[node] = left
            else:
                del in_flight[node]

    def on_membership(self) -> None:
        """A node may have come back on another release: try ``lookup_many`` again."""
        self._single_only.clear()

    def _spawn(self, send: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._tasks.spawn(send, name="registry-lookups")

    async def _send(self, node: str, names: list[str]) -> list[Entry | PhoenixError | None]:
        """The batched lookups of one turn to ``node``: one ``lookup_many`` (one
        ``lookup`` for a batch of one); the names a reply cut short left out are asked
        one by one."""
        if len(names) > 1 and node not in self._single_only:
            try:
                raw = await self._link.call(node, "registry", "lookup_many",
                                            encode(LookupManyRequest(names)),
                                            self.settings.timeout_s)
            except AgentNotFound:  # an earlier release
                self._single_only.add(node)
            else:
                found: list[Entry | PhoenixError | None] = list(
                    decode(LookupManyReply, raw).entries)
                if len(found) > len(names):
                    raise ProtocolError(f"{node} answered {len(found)} entries to "
                                        f"{len(names)} lookups")
                return found + await self._one_by_one(node, names[len(found):])
        return await self._one_by_one(node, names)

    async def _lookup_one(self, node: str, name: str) -> Entry | None:
        raw = await self._link.call(node, "registry", "lookup", encode(LookupRequest(name)),
                                    self.settings.timeout_s)
        return decode(LookupReply, raw).entry

    async def _one_by_one(self, node: str,
                          names: list[str]) -> list[Entry | PhoenixError | None]:
        """Each name's entry, or the PhoenixError its lookup failed with."""
        if not names:
            return []
        results = await asyncio.gather(*(self._lookup_one(node, n) for n in names),
                                       return_exceptions=True)
        answers: list[Entry | PhoenixError | None] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, PhoenixError):
                raise result
            answers.append(result)
        return answers

    def __repr__(self) -> str:
        return f"<OwnerLookups [{len(self._single_only)} nodes asked one name at a time]>"
