"""The caller's uncached lookups to a name's owners, batched per owner per turn.

:class:`OwnerLookups` asks another node's ``$registry`` what it stores for a name. The
first lookup to a node in a turn of the event loop leaves at once as a plain ``lookup``
(a lone lookup, the common case without load, waits for nothing); the others made in the
same turn travel together at the end of the turn as one ``lookup_many`` (see
``turn_batching.py``), and each caller gets its own answer or error. Batching changes no
answer: a batched lookup still asks the owner after its caller asked.

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

from .._foundation.env import running_loop
from .._transport.tasks import TaskSet
from ..errors import AgentNotFound, PhoenixError, ProtocolError
from .cluster import ClusterLink
from .entries import Entry
from .messages import LookupManyReply, LookupManyRequest, LookupReply, LookupRequest, decode, encode
from .settings import RegistrySettings
from .turn_batching import TurnBatcher

__all__ = ["OwnerLookups"]


class OwnerLookups:
    """Uncached lookups sent to other nodes: the first per node per turn alone, the rest
    of the turn in one ``lookup_many``.

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
        self._asked_this_turn: set[str] = set()
        self._batches: TurnBatcher[str, Entry | None] = TurnBatcher(
            self._send, self._spawn, lambda name: len(name) + 16)

    async def lookup(self, node: str, name: str) -> Entry | None:
        """What ``node`` stores for ``name`` (``None``: nothing live).

        Raises:
            NodeUnavailable, CallTimeout, TransportError: ``node`` did not answer.
            ProtocolError: ``node`` answered nonsense.
        """
        asked = self._asked_this_turn
        if node in asked:
            return await self._batches.submit(node, name)
        if not asked:
            running_loop().call_soon(asked.clear)  # the turn ends
        asked.add(node)
        return await self._lookup_one(node, name)

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
