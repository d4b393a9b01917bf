"""The caller's requests to a name's owners: lookups and registrations, batched per turn.

:class:`OwnerCalls` sends what ``Registry`` asks of another node's ``$registry``: an
uncached lookup to an owner, a registration to its coordinator. Those sent to one node in
one turn of the loop travel as one request (``lookup_many``, ``register_many``; see
``turn_batching.py``), a batch of one as the plain ``lookup`` or ``register``, and each
caller gets its own answer or typed error, exactly as if it had sent alone:

- a lookup still asks the owner, after the caller asked (a batch leaves at the end of
  the turn its lookups were made in): batching changes no answer;
- each registration of a ``register_many`` is coordinated on its own (its lock, its
  majority, its rollback) and answered with its own reply or error.

A node of an earlier release answers the batched methods with ``AgentNotFound`` before
running anything; it is then sent requests one by one until the next membership change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from .._transport.tasks import TaskSet
from .._wire.errors import error_from_frame
from ..errors import AgentNotFound, PhoenixError, ProtocolError
from .cluster import ClusterLink
from .entries import Entry
from .messages import (
    LookupManyReply,
    LookupManyRequest,
    LookupReply,
    LookupRequest,
    RegisterManyReply,
    RegisterManyRequest,
    RegisterReply,
    RegisterRequest,
    decode,
    encode,
)
from .settings import RegistrySettings
from .turn_batching import TurnBatcher

__all__ = ["OwnerCalls"]

_Answer = TypeVar("_Answer")


class OwnerCalls:
    """Lookups and registrations sent to other nodes, batched per node per turn.

    Args:
        link: the cluster view and calls.
        settings: the registry settings (timeouts).
        tasks: owns the batches' sends; closing it fails what is in flight (indefinite).
    """

    def __init__(self, link: ClusterLink, settings: RegistrySettings, tasks: TaskSet) -> None:
        self._link = link
        self.settings = settings
        self._tasks = tasks
        self._single_only: set[str] = set()
        self._lookups: TurnBatcher[str, Entry | None] = TurnBatcher(
            self._send_lookups, self._spawn, lambda name: len(name) + 16)
        self._registrations: TurnBatcher[RegisterRequest, RegisterReply] = TurnBatcher(
            self._send_registrations, self._spawn,
            lambda r: len(r.entry.name) + len(r.entry.key) + len(r.entry.value) + 64)

    def lookup(self, node: str, name: str) -> asyncio.Future[Entry | None]:
        """What ``node`` stores for ``name`` (``None``: nothing live).

        Raises (from the future):
            NodeUnavailable, CallTimeout, TransportError: ``node`` did not answer.
            ProtocolError: ``node`` answered nonsense.
        """
        return self._lookups.submit(node, name)

    def register(self, node: str, request: RegisterRequest) -> asyncio.Future[RegisterReply]:
        """Ask ``node`` to coordinate ``request``: its reply (the stored entry, or a
        redirect).

        Raises (from the future):
            NameTaken, NoQuorum: the coordinator refused or could not store it.
            NodeUnavailable, CallTimeout, TransportError: ``node`` did not answer
                (``definite`` says whether it may have run it).
        """
        return self._registrations.submit(node, request)

    def on_membership(self) -> None:
        """A node may have come back on another release: try the batched methods again."""
        self._single_only.clear()

    def _spawn(self, send: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._tasks.spawn(send, name="registry-batch")

    async def _send_lookups(self, node: str,
                            names: list[str]) -> list[Entry | PhoenixError | None]:
        """The lookups of one turn to ``node``: one ``lookup_many`` (one ``lookup`` for
        a batch of one); the names a reply cut short left out are asked one by one."""
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
                return found + await _one_by_one(
                    [self._lookup_one(node, n) for n in names[len(found):]])
        return await _one_by_one([self._lookup_one(node, n) for n in names])

    async def _lookup_one(self, node: str, name: str) -> Entry | None:
        raw = await self._link.call(node, "registry", "lookup", encode(LookupRequest(name)),
                                    self.settings.timeout_s)
        return decode(LookupReply, raw).entry

    async def _send_registrations(
            self, node: str,
            requests: list[RegisterRequest]) -> list[RegisterReply | PhoenixError]:
        """The registrations of one turn to their coordinator ``node``: one
        ``register_many`` (one ``register`` for a batch of one), each with its own
        answer or typed error."""
        # The coordinator may wait timeout_s for the other owners: wait longer.
        timeout_s = 2 * self.settings.timeout_s
        if len(requests) > 1 and node not in self._single_only:
            try:
                raw = await self._link.call(node, "registry", "register_many",
                                            encode(RegisterManyRequest(requests)), timeout_s)
            except AgentNotFound:  # an earlier release; it ran none of them
                self._single_only.add(node)
            else:
                answers: list[RegisterReply | PhoenixError] = []
                for outcome in decode(RegisterManyReply, raw).outcomes:
                    if outcome.error is not None:
                        answers.append(error_from_frame(outcome.error))
                    elif outcome.reply is not None:
                        answers.append(outcome.reply)
                    else:
                        answers.append(ProtocolError(f"{node} answered a registration "
                                                     "with neither a reply nor an error"))
                return answers

        async def one(request: RegisterRequest) -> RegisterReply:
            raw = await self._link.call(node, "registry", "register", encode(request),
                                        timeout_s)
            return decode(RegisterReply, raw)

        return await _one_by_one([one(r) for r in requests])

    def __repr__(self) -> str:
        return f"<OwnerCalls [{len(self._single_only)} nodes sent one by one]>"


async def _one_by_one(
        sends: list[Coroutine[Any, Any, _Answer]]) -> list[_Answer | PhoenixError]:
    """Run ``sends`` at once; each one's answer or the PhoenixError it failed with."""
    if not sends:
        return []
    results = await asyncio.gather(*sends, return_exceptions=True)
    answers: list[_Answer | PhoenixError] = []
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, PhoenixError):
            raise result
        answers.append(result)
    return answers
