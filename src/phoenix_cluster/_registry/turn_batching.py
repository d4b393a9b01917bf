"""A caller's registry requests to one owner travel together: one request per turn.

Under load a node starts many lookups and registrations in the same turn of the event
loop (concurrent callers, a burst of registrations at start-up). Each sent on its own
cost one RPC here (a request id, a future, a deadline timer, an encoded frame) and, on
the owner, a frame to decode and one to encode, and for a registration a task of the
connection's inbound runner. :class:`TurnBatcher` collects what this node sends to each
owner during one turn and hands it, at the end of the turn, to one ``send`` that carries
it in one request (``$registry.lookup_many``, ``$registry.register_many``) and returns
one answer per request, in order.

Nothing waits for a batch to fill: a lone request leaves at the end of its turn, and the
``send`` functions in ``registry.py`` send a batch of one as the plain single method.
Each request keeps its own outcome: its own answer, its own typed error, or the error of
the batch's request as a whole (the owner did not answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, Generic, TypeVar

from .._foundation.env import running_loop
from ..errors import NodeUnavailable, PhoenixError, ProtocolError

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_REQUESTS", "TurnBatcher"]

MAX_BATCH_BYTES = 256 * 1024
"""A batch leaves at once when its requests reach about this size (values can be large);
a request that would take a batch past it starts the next one."""

MAX_BATCH_REQUESTS = 256
"""A batch leaves at once when it holds this many requests."""

Item = TypeVar("Item")
Result = TypeVar("Result")
SpawnTask = Callable[[Coroutine[Any, Any, None]], "asyncio.Future[Any]"]
_Batch = tuple[list[Item], list[asyncio.Future[Result]], list[int]]
"""The requests, their callers' futures, and their approximate size (a cell)."""


class TurnBatcher(Generic[Item, Result]):
    """Per node, the requests to send at the end of this turn of the loop.

    Args:
        send: ``send(node, items)`` carries ``items`` to ``node`` in one request and
            returns one answer per item, in order: a result, or the
            :class:`~phoenix_cluster.errors.PhoenixError` that item failed with. It raises
            what failed the request as a whole (every item fails with it).
        spawn: runs a batch's send in a task that the registry's task set owns; the
            task must start on a later turn of the loop than the call (as tasks do).
        size: the approximate encoded size of an item.
    """

    __slots__ = ("_pending", "_send", "_size", "_spawn")

    def __init__(self, send: Callable[[str, list[Item]], Awaitable[list[Result | PhoenixError]]],
                 spawn: SpawnTask, size: Callable[[Item], int]) -> None:
        self._send = send
        self._spawn = spawn
        self._size = size
        self._pending: dict[str, _Batch[Item, Result]] = {}

    def submit(self, node: str, item: Item) -> asyncio.Future[Result]:
        """Queue ``item`` for ``node``; the future resolves to its own answer."""
        outcome: asyncio.Future[Result] = running_loop().create_future()
        size = self._size(item)
        batch = self._pending.get(node)
        if batch is not None and batch[2][0] + size > MAX_BATCH_BYTES:
            del self._pending[node]  # this one would make it too big: it starts the next
            batch = None
        if batch is None:
            batch = self._pending[node] = ([], [], [0])
            # The task's first step runs on the next turn of the loop, after every
            # request this turn adds: then it takes the batch and sends it.
            self._spawn(self._run(node, batch)).add_done_callback(
                partial(_unanswered, node, batch[1]))
        items, outcomes, total = batch
        items.append(item)
        outcomes.append(outcome)
        total[0] += size
        if len(items) >= MAX_BATCH_REQUESTS:
            del self._pending[node]  # full: the next request starts another
        return outcome

    async def _run(self, node: str, batch: _Batch[Item, Result]) -> None:
        if self._pending.get(node) is batch:
            del self._pending[node]  # what joins from now on goes in the next batch
        items, outcomes, _ = batch
        try:
            answers = await self._send(node, items)
        except PhoenixError as exc:
            _fail(outcomes, exc)
            return
        if len(answers) != len(outcomes):
            _fail(outcomes, ProtocolError(
                f"{node} answered {len(answers)} of {len(outcomes)} batched requests"))
            return
        for outcome, answer in zip(outcomes, answers, strict=True):
            if outcome.done():  # its caller went away
                continue
            if isinstance(answer, PhoenixError):
                outcome.set_exception(answer)
            else:
                outcome.set_result(answer)


def _unanswered(node: str, outcomes: list[asyncio.Future[Any]], _task: object) -> None:
    """A batch's task ended: fail what it left unanswered. It was cancelled (the registry
    closes; maybe before its first step, so none of ``_run`` ran) or it crashed (a bug):
    indefinite either way, since the request may have reached the owner."""
    _fail(outcomes, NodeUnavailable(f"a registry request to {node} ended without an "
                                    "answer (the registry closed)", definite=False))


def _fail(outcomes: list[asyncio.Future[Any]], exc: PhoenixError) -> None:
    for outcome in outcomes:
        if not outcome.done():
            outcome.set_exception(exc)
