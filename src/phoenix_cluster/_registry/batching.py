"""Registrations on their way to one replica travel together: one ``store`` per turn.

A coordinator replicates every registration to the name's other owners. Under load many
registrations are coordinated in the same turn of the event loop (a connection's read
hands over several requests at once); sending each in its own ``store`` request cost
one RPC (a task, a request id, a deadline timer, an encoded frame) here and one handler
task plus a decode and an encoded reply on the replica, per registration per replica.
:class:`StoreBatcher` collects what is sent to each replica during one turn and sends
it as one ``StoreRequest("replicate", entries)`` at the end of the turn, then gives each
registration its own outcome: the replica's refusals of that entry, or ``None`` when
the replica did not answer (the request failed as a whole).

Nothing waits for a batch to fill, so a lone registration leaves on the next turn as
before, and the replica merges the entries one by one exactly as if they came alone.
When the replica's connection is open the batch is queued on it at the end of the turn
and its reply resolves the outcomes from the connection's reader, with no task
(``StartStore``); otherwise a task sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

from .._foundation.env import running_loop
from .entries import Entry
from .messages import Refusal, StoreReply, StoreRequest, encode

__all__ = ["MAX_BATCH_BYTES", "StoreBatcher"]

MAX_BATCH_BYTES = 256 * 1024
"""A batch is sent at once when its entries reach about this size (values can be large)."""

_ENTRY_OVERHEAD = 64
"""Bytes counted per entry beyond its name, key and value (holder, times, ids)."""

Outcome = asyncio.Future[StoreReply | None]
StoreAt = Callable[[str, bytes], Awaitable[StoreReply | None]]
StartStore = Callable[[str, bytes, Callable[[StoreReply | None], None]], bool]
"""Queues one encoded ``store`` to a node now and calls back with its reply (``None`` if
the node did not take it); ``False`` when it cannot (no open connection): nothing sent."""
SpawnTask = Callable[[Coroutine[Any, Any, None]], object]


class StoreBatcher:
    """Per replica, the registrations to send at the end of this turn of the loop.

    Args:
        store_at: sends one encoded ``store`` to a node; its reply, or ``None`` if the
            node did not take it.
        spawn: runs a send in a task the owner's task set owns.
        start: sends without a task when it can (see ``StartStore``); by default never.
    """

    __slots__ = ("_pending", "_spawn", "_start", "_store_at")

    def __init__(self, store_at: StoreAt, spawn: SpawnTask,
                 start: StartStore | None = None) -> None:
        self._store_at = store_at
        self._spawn = spawn
        self._start: StartStore = start if start is not None else _never
        self._pending: dict[str, tuple[list[tuple[Entry, Outcome]], list[int]]] = {}

    def replicate(self, node: str, entry: Entry) -> Outcome:
        """Queue ``entry`` for ``node``; the future resolves to the replica's reply about
        this entry (its refusals of it, none if it stored it) or ``None``."""
        loop = running_loop()
        outcome: Outcome = loop.create_future()
        queued = self._pending.get(node)
        if queued is None:
            queued = self._pending[node] = ([], [0])
            loop.call_soon(self._flush, node)
        batch, size = queued
        batch.append((entry, outcome))
        size[0] += len(entry.name) + len(entry.key) + len(entry.value) + _ENTRY_OVERHEAD
        if size[0] >= MAX_BATCH_BYTES:
            self._flush(node)  # the call_soon then finds nothing (or the next batch) queued
        return outcome

    def _flush(self, node: str) -> None:
        queued = self._pending.pop(node, None)
        if queued is None:
            return
        batch = queued[0]
        try:
            payload = encode(StoreRequest("replicate", [entry for entry, _ in batch]))
            started = self._start(node, payload, partial(_resolve, batch))
        except BaseException:
            _resolve(batch, None)  # nobody waits on an outcome forever
            raise
        if not started:
            self._spawn(self._send(node, batch, payload))

    async def _send(self, node: str, batch: list[tuple[Entry, Outcome]],
                    payload: bytes) -> None:
        reply: StoreReply | None = None
        try:
            reply = await self._store_at(node, payload)
        finally:
            # Also when cancelled (the node closes): nobody waits on an outcome forever.
            _resolve(batch, reply)


def _never(node: str, payload: bytes, answered: Callable[[StoreReply | None], None]) -> bool:
    return False


def _resolve(batch: list[tuple[Entry, Outcome]], reply: StoreReply | None) -> None:
    refused: dict[tuple[str, int], list[Refusal]] = {}
    if reply is not None:
        for refusal in reply.refused:
            refused.setdefault((refusal.name, refusal.rid), []).append(refusal)
    for entry, outcome in batch:
        if outcome.done():
            continue
        if reply is None:
            outcome.set_result(None)
        else:
            outcome.set_result(StoreReply(refused.get((entry.name, entry.rid), [])))
