"""The requests a connection sent and still waits for, shared by TCP and in-memory links.

:class:`PendingRequests` keeps each request's waiter (a future a task awaits, or a
:class:`~.tasks.Callback` the reader calls) with its place among the requests sent on
the connection (1, 2, ...). A peer's ``Goodbye`` says how many of our requests it read:
the ones after those never ran, so they fail *definite* when the connection ends, and
the rest fail with an unknown outcome.

Invariant: a request is here only once its frame is queued, and leaves exactly once: by
its answer, its timeout, or the connection's end (every pending request at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from phoenix_cluster._foundation.env import Clock
from phoenix_cluster._wire.messages import Error, Redirect, Reply
from phoenix_cluster.errors import CallTimeout

from .base import TransportError
from .tasks import Callback

__all__ = ["Answer", "PendingRequests"]

Answer = Reply | Error | Redirect
_Waiter = asyncio.Future[Answer] | Callback[Answer]
_Entry = tuple[_Waiter, int]


def _nothing() -> None:
    pass


class PendingRequests:
    """One connection's requests in flight.

    Args:
        clock: arms each request's timeout.
        who: names the peer in a timeout's message (called only when one fires).
        on_settled: called after a request left by its answer or timeout, or after an
            answer nobody waited for (a retiring TCP connection closes once drained).
    """

    __slots__ = ("_clock", "_entries", "_on_settled", "_who", "sent")

    def __init__(self, clock: Clock, who: Callable[[], str],
                 on_settled: Callable[[], None] = _nothing) -> None:
        self._clock = clock
        self._who = who
        self._on_settled = on_settled
        self._entries: dict[int, _Entry] = {}
        self.sent = 0
        """Requests (Calls and Casts) sent on the connection: the peer's ``Goodbye``
        counts the ones it read among them."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rid: int) -> bool:
        return rid in self._entries

    def count_sent(self) -> None:
        """A request that waits for no answer (a Cast, or a Call sent with ``send``)."""
        self.sent += 1

    def expect(self, rid: int, waiter: _Waiter) -> _Entry:
        """Record ``waiter`` for request ``rid``, whose frame was just queued."""
        self.sent = seq = self.sent + 1
        self._entries[rid] = entry = (waiter, seq)
        return entry

    def start(self, rid: int, timeout_s: float,
              answered: Callable[[Answer | BaseException], None]) -> None:
        """Expect request ``rid`` with no task: ``answered`` gets its answer or error."""
        waiter: Callback[Answer] = Callback(answered)
        self.expect(rid, waiter)
        waiter.timer = self._clock.call_later(timeout_s, partial(self.expire, rid, timeout_s))

    async def wait(self, rid: int, fut: asyncio.Future[Answer], entry: _Entry,
                   timeout_s: float, deadline: float) -> Answer:
        """Await ``fut`` (recorded as ``entry``) until ``deadline``; a timeout raises
        :class:`CallTimeout` naming ``timeout_s``."""
        clock = self._clock
        timer = clock.call_later(deadline - clock.monotonic(),
                                 partial(self.expire, rid, timeout_s))
        try:
            return await fut
        finally:
            timer.cancel()
            if self._entries.get(rid) is entry:  # cancelled: nobody waits for it now
                del self._entries[rid]
                self._on_settled()

    def answer(self, msg: Answer) -> bool:
        """Hand ``msg`` to its waiter; ``False`` if nobody waits for it (late, unknown)."""
        entry = self._entries.pop(msg.request_id, None)
        if entry is not None and not (waiter := entry[0]).done():
            waiter.set_result(msg)
        self._on_settled()
        return entry is not None

    def expire(self, rid: int, timeout_s: float) -> None:
        entry = self._entries.pop(rid, None)
        if entry is not None and not (waiter := entry[0]).done():
            waiter.set_exception(CallTimeout(
                f"no reply from {self._who()} to request {rid} within {timeout_s}s",
                request_id=rid))
        self._on_settled()

    def fail_all(self, exc: TransportError, peer_read: int = -1) -> None:
        """The connection ended with ``exc``: every pending request fails at once.

        ``peer_read``: how many of our requests the peer's Goodbye says it read (-1: not
        known); the ones after those fail definite (they never ran), the rest indefinite.
        """
        entries, self._entries = self._entries, {}
        for rid, (waiter, seq) in entries.items():
            if not waiter.done():
                unread = 0 <= peer_read < seq
                message = (f"{exc.message}; it did not read request {rid}" if unread
                           else exc.message)
                waiter.set_exception(type(exc)(message, peer=exc.peer, request_id=rid,
                                               definite=True if unread else None))
