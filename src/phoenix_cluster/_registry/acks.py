"""Counting the other owners' answers to one write of a coordinator.

A coordinator sends a write (a registration, a tombstone) to the name's other owners
and decides once ``need`` of them stored it, once one of them keeps another
registration of the name instead (the *winner*: the name was taken there), or once all
answered. :class:`Acks` counts with one future and a callback per send, not
``asyncio.wait``'s sets and waiter per round, and can be awaited (a write in a task) or
given a callback (a write taken on the connection's reader, with no task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .._foundation.env import running_loop
from .entries import Entry
from .messages import StoreReply

__all__ = ["Acks"]

Send = asyncio.Future[StoreReply | None]


class Acks:
    """The answers to one write, from the owners it was sent to.

    Args:
        sends: one future per other owner: its reply, or ``None`` if it did not take it.
        need: acknowledgements that decide the write.
        entry: the registration written (``None`` for a tombstone): a refusal naming
            another registration makes that one the :attr:`winner`.
        merge: applies a winner some owner reported (to this owner's store).
        late: given each send answered after the decision (its winners still count).

    Attributes:
        acks: the acknowledgements counted until the decision.
        winner: another registration some owner keeps instead, or ``None``.
        decided: resolved at the decision.
    """

    __slots__ = ("_entry", "_late", "_left", "_merge", "_need", "acks", "decided", "winner")

    def __init__(self, sends: list[Send], need: int, entry: Entry | None,
                 merge: Callable[[Entry], None], late: Callable[[Send], None]) -> None:
        self.acks = 0
        self.winner: Entry | None = None
        self.decided: asyncio.Future[None] = running_loop().create_future()
        self._need = need
        self._entry = entry
        self._merge = merge
        self._late = late
        self._left = len(sends)
        if not sends:
            self.decided.set_result(None)
        for send in sends:
            send.add_done_callback(self._on_reply)

    def _on_reply(self, send: Send) -> None:
        self._left -= 1
        if self.decided.done():  # answered after the decision (or the caller went away)
            self._late(send)
            return
        reply = None if send.cancelled() or send.exception() is not None else send.result()
        if reply is not None:
            if not reply.refused:
                self.acks += 1
            for refusal in reply.refused:
                if refusal.winner is not None and self._entry is not None:
                    self.winner = refusal.winner
                    self._merge(refusal.winner)
        if self.acks >= self._need or self.winner is not None or self._left == 0:
            self.decided.set_result(None)
