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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
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
SpawnTask = Callable[[Coroutine[Any, Any, None]], object]


class StoreBatcher:
    """Per replica, the registrations to send at the end of this turn of the loop.

    Args:
        store_at: sends one encoded ``store`` to a node; its reply, or ``None`` if the
            node did not take it.
        spawn: runs a send in a task the owner's task set owns.
    """

    __slots__ = ("_pending", "_spawn", "_store_at")

    def __init__(self, store_at: StoreAt, spawn: SpawnTask) -> None:
        self._store_at = store_at
        self._spawn = spawn
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
        if queued is not None:
            self._spawn(self._send(node, queued[0]))

    async def _send(self, node: str, batch: list[tuple[Entry, Outcome]]) -> None:
        reply: StoreReply | None = None
        try:
            payload = encode(StoreRequest("replicate", [entry for entry, _ in batch]))
            reply = await self._store_at(node, payload)
        finally:
            # Also when cancelled (the node closes): nobody waits on an outcome forever.
            _resolve(batch, reply)


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
