"""One lock per name, for the writes a coordinator serializes.

A coordinator holds a name's lock from the moment it checks the name is free until the
other owners answered (or it rolled back), so two writes of one name never overlap
there. Most names are never contended: :meth:`NameLocks.try_take` takes a free lock
synchronously, with no task, coroutine or future (the fast path of a registration);
:meth:`NameLocks.take` waits its turn behind whoever holds or waits for the name.
A release hands the lock to the first waiter (first come, first served), and a name's
entry exists only while somebody holds or waits for it.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .._foundation.env import running_loop

__all__ = ["NameLocks"]


class NameLocks:
    """Per name: held or not, and the futures of the writes waiting for it."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, deque[asyncio.Future[None]]] = {}

    def try_take(self, name: str) -> bool:
        """Take the lock of ``name`` if nobody holds or waits for it."""
        if name in self._held:
            return False
        self._held[name] = deque()
        return True

    async def take(self, name: str) -> None:
        """Take the lock of ``name``, after the writes that hold or wait for it."""
        waiting = self._held.get(name)
        if waiting is None:
            self._held[name] = deque()
            return
        turn: asyncio.Future[None] = running_loop().create_future()
        waiting.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release(name)  # handed to us as we were cancelled: pass it on
            # else it stays queued, done: release() skips it
            raise

    def release(self, name: str) -> None:
        """Release the lock of ``name``: to its first waiter still waiting, or free."""
        waiting = self._held[name]
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._held[name]

    def busy(self, name: str) -> bool:
        """Whether somebody holds (or waits for) the lock of ``name``."""
        return name in self._held

    def __len__(self) -> int:
        return len(self._held)
