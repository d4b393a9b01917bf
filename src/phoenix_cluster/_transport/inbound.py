"""Running the node's handler for inbound Calls and Casts, one owned task each, bounded.

Each message gets its own task so a slow handler never holds up the connection's
reader (replies to our own requests arrive on the same socket). The number of tasks per
connection is capped: past the cap a Call is answered ``overloaded`` at once (a definite
error, the caller may retry) while a Cast, which must never be dropped, makes the reader
wait for a free slot. That stops reading the socket, so the
peer's writes back up into its bounded send queue: end-to-end backpressure through TCP.

A handler that raises is a bug in the layer above, not the peer's fault: the caller gets
``Error(code="internal_error")``, the log gets the traceback, the connection stays up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from phoenix_cluster._wire.messages import Call, Cast, Error, Redirect, Reply

from .base import InboundHandler, PeerConnection
from .tasks import TaskSet

__all__ = ["InboundRunner", "wants_answer"]

_log = logging.getLogger("phoenix_cluster.transport")

_Answer = Reply | Error | Redirect


class InboundRunner:
    """Owns the handler tasks of one connection.

    Args:
        conn: passed to the handler so it knows who is asking.
        handler: the node's inbound handler.
        answer: queues a Reply/Error/Redirect for the peer.
        answer_now: as ``answer``, writing it at once when nothing is queued before it;
            for a node service's answer from the fast path (a ``$`` kind: one frame per
            batch of work, which a writer turn would only delay). Default: ``answer``.
        on_idle: called whenever a handler task ends (the connection may be draining).
        limit: ``max_inbound_tasks``.
    """

    __slots__ = ("_answer", "_answer_now", "_conn", "_handler", "_limit", "_on_idle", "_slot",
                 "_tasks", "_try_now", "count", "paused")

    def __init__(
        self,
        conn: PeerConnection,
        handler: InboundHandler,
        *,
        answer: Callable[[_Answer], None],
        on_idle: Callable[[], None],
        limit: int,
        name: str,
        answer_now: Callable[[_Answer], None] | None = None,
    ) -> None:
        self._conn = conn
        self._handler = handler
        # Optional fast path (see ``base.InboundHandler``): the handler takes the message
        # on the spot and answers later through a callback, with no task per message.
        self._try_now = getattr(handler, "try_now", None)
        self._answer = answer
        self._answer_now = answer if answer_now is None else answer_now
        self._on_idle = on_idle
        self._limit = limit
        self._tasks = TaskSet(f"inbound {name}")
        self._slot: asyncio.Future[None] | None = None
        self.count = 0
        self.paused = False  # the reader is waiting for a slot (not reading the socket)

    @property
    def full(self) -> bool:
        return self.count >= self._limit

    async def wait_for_slot(self) -> None:
        """Block the reader until a handler finishes (only Casts come here)."""
        self.paused = True
        try:
            while self.count >= self._limit:
                self._slot = asyncio.get_running_loop().create_future()
                await self._slot
        finally:
            self._slot = None
            self.paused = False

    def start(self, msg: Call | Cast) -> None:
        is_call = wants_answer(msg)
        if self._try_now is not None and not (is_call and self.count >= self._limit):
            if is_call:
                self.count += 1
            try:
                taken = self._try_now(self._conn, msg, self._answerer(msg))
            except Exception:
                _log.exception("inbound fast path raised on %s %s/%s.%s", type(msg).__name__,
                               msg.kind, msg.key, msg.method)
                taken = False
            if taken:
                return
            if is_call:
                self._finished()
        if self.count >= self._limit and is_call:
            self._answer(Error(
                request_id=msg.request_id,
                code="overloaded",
                message=f"{self._limit:,} inbound messages already in progress from"
                f" {self._conn.peer_name}; not started",
                definite=True,
            ))
            return
        self.count += 1
        self._tasks.spawn(self._run(msg), name="phx-inbound")

    async def _run(self, msg: Call | Cast) -> None:
        try:
            try:
                result = await self._handler(self._conn, msg)
            except Exception as exc:
                _log.exception(
                    "inbound handler raised on %s %s/%s.%s from %s",
                    type(msg).__name__.lower(), msg.kind, msg.key, msg.method,
                    self._conn.peer_name,
                )
                result = Error(
                    request_id=msg.request_id,
                    code="internal_error",
                    message=f"the handler on the receiving node raised {type(exc).__name__}:"
                    f" {exc}",
                    definite=False,
                )
            if wants_answer(msg):
                self._answer(self._checked(msg, result))
        finally:
            self._finished()

    def _answerer(self, msg: Call | Cast) -> Callable[[_Answer], None]:
        if not wants_answer(msg):
            return _ignore

        send = self._answer_now if msg.kind.startswith("$") else self._answer

        def answer(result: _Answer) -> None:
            send(self._checked(msg, result))
            self._finished()

        return answer

    def _finished(self) -> None:
        self.count -= 1
        slot = self._slot
        if slot is not None and not slot.done():
            slot.set_result(None)
        self._on_idle()

    @staticmethod
    def _checked(call: Call | Cast, result: _Answer | None) -> _Answer:
        if result is None:
            _log.error("inbound handler returned no answer to call %d (%s.%s)",
                       call.request_id, call.kind, call.method)
            return Error(request_id=call.request_id, code="internal_error",
                         message="the receiving node produced no answer", definite=False)
        if result.request_id != call.request_id:
            _log.error("inbound handler answered call %d with request_id %d; fixed",
                       call.request_id, result.request_id)
            return msgspec.structs.replace(result, request_id=call.request_id)
        return result

    def cancel(self) -> None:
        self._tasks.cancel()

    async def wait(self) -> None:
        await self._tasks.wait()


def _ignore(result: _Answer) -> None:
    pass


def wants_answer(msg: Call | Cast) -> bool:
    """A Call, or a Cast whose sender waits for the acknowledgement that it was queued."""
    return type(msg) is Call or msg.timeout_ms > 0
