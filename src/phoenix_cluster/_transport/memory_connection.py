"""One in-memory link between two nodes: both ends, and the frames in flight between them.

:class:`MemoryConnection` is a :class:`~.base.PeerConnection` whose frames go through
the wire codec to the connection at the other end (``other``): requests with their
deadlines, answers, casts, and inbound Calls and Casts run by the same
:class:`~.inbound.InboundRunner` as a TCP connection's. :class:`FramePipe` carries one
direction in order, each frame after the link's delay, losing what a cut or a kill
catches in flight. The faults come from the network's :class:`~.memory_links.LinkModel`;
the connection's transport (:class:`~.memory.MemoryTransport`) owns and closes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from phoenix_cluster._foundation.env import Clock, Env, TimerHandle
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.messages import Call, Cast, Error, Frame, Goodbye, Redirect, Reply
from phoenix_cluster.errors import ProtocolError

from .base import (
    ConnectionBroken,
    ConnectionClosed,
    ConnectionState,
    ConnectionStatistics,
    InboundHandler,
    TransportError,
)
from .inbound import InboundRunner
from .memory_links import LinkModel
from .pending import Answer, PendingRequests

__all__ = ["ConnectionOwner", "FramePipe", "MemoryConnection"]

_log = logging.getLogger("phoenix_cluster.transport")

_MAX_INBOUND_TASKS = 10_000


class ConnectionOwner(Protocol):
    """What a connection reads of the transport at either end, and tells its own."""

    @property
    def node_name(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def role(self) -> str: ...
    @property
    def env(self) -> Env: ...
    @property
    def handler(self) -> InboundHandler: ...
    @property
    def max_frame_bytes(self) -> int: ...
    @property
    def network(self) -> LinkModel: ...

    def spawn_close(self, conn: MemoryConnection) -> None: ...

    def connection_closed(self, conn: MemoryConnection) -> None: ...


class FramePipe:
    """One direction of a link: frames delivered in order, each after its delay."""

    __slots__ = ("_alive", "_clock", "_deliver", "_queue", "_timer")

    def __init__(self, clock: Clock, deliver: Callable[[bytes], None],
                 alive: Callable[[], bool]) -> None:
        self._clock = clock
        self._deliver = deliver
        self._alive = alive
        self._queue: deque[tuple[float, bytes]] = deque()
        self._timer: TimerHandle | asyncio.Handle | None = None

    def put(self, body: bytes, delay_s: float) -> None:
        now = self._clock.monotonic()
        due = now + delay_s
        if self._queue:
            due = max(due, self._queue[-1][0])  # never overtake an earlier frame
        self._queue.append((due, body))
        if self._timer is None:
            self._arm(due - now)

    def _arm(self, delay_s: float) -> None:
        if delay_s <= 0:
            self._timer = asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._timer = self._clock.call_later(delay_s, self._flush)

    def _flush(self) -> None:
        self._timer = None
        now = self._clock.monotonic()
        while self._queue and self._queue[0][0] <= now:
            _, body = self._queue.popleft()
            if self._alive():  # a cut or a kill since it was sent loses it
                self._deliver(body)
        if self._queue:
            self._arm(self._queue[0][0] - now)

    def clear(self) -> None:
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class MemoryConnection:
    """One end of an in-memory link: a :class:`~.base.PeerConnection`."""

    def __init__(self, owner: ConnectionOwner, peer: ConnectionOwner, *,
                 outbound: bool) -> None:
        self._owner, self.outbound = owner, outbound
        self._peer_name, self._peer_address = peer.node_name, peer.address or ""
        self._peer_incarnation, self._peer_role = peer.incarnation, peer.role
        self._clock = owner.env.clock
        self._codec = WireCodec()
        self._state: ConnectionState = "open"
        self._pending = PendingRequests(self._clock, lambda: self._peer_name)
        self._requests_read = 0
        self._inbound = InboundRunner(self, owner.handler, answer=self._answer,
                                      on_idle=_nothing, limit=_MAX_INBOUND_TASKS,
                                      name=self._peer_address)
        self._closed = asyncio.Event()
        self._close_exc: TransportError | None = None
        self.other: MemoryConnection | None = None
        self._pipe = FramePipe(self._clock, self._to_other, self._carries)
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    # --- PeerConnection ------------------------------------------------------------

    @property
    def peer_name(self) -> str:
        return self._peer_name

    @property
    def peer_address(self) -> str:
        return self._peer_address

    @property
    def peer_incarnation(self) -> int:
        return self._peer_incarnation

    @property
    def peer_role(self) -> str:
        return self._peer_role

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    def start_request(self, call: Call, timeout_s: float,
                      answered: Callable[[Answer | BaseException], None]) -> bool:
        """:meth:`request` with no task: queue ``call`` now and call ``answered`` with
        the answer, or the error that lost it (its timeout, the connection's loss), from
        the code that gets it (the reader). ``False``: nothing was sent (the connection
        is not open, or its send queue is full): use :meth:`request`.

        Raises:
            ProtocolError: ``call`` exceeds ``max_frame_bytes``; nothing was sent.
        """
        rid = call.request_id
        if self._state != "open" or rid in self._pending:
            return False
        body = self._encode(call)
        self._pending.start(rid, timeout_s, answered)
        self._put(body)
        return True

    async def request(self, call: Call | Cast, timeout_s: float) -> Answer:
        rid = call.request_id
        self._check_open(rid)
        if rid in self._pending:
            raise ValueError(f"request id {rid} is already in flight to {self._peer_name}")
        body = self._encode(call)
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        entry = self._pending.expect(rid, fut)
        self._put(body)
        deadline = self._clock.monotonic() + timeout_s
        return await self._pending.wait(rid, fut, entry, timeout_s, deadline)

    async def send(self, frame: Frame, *, timeout_s: float | None = None) -> None:
        self._check_open(getattr(frame, "request_id", None))
        body = self._encode(frame)
        if isinstance(frame, Call | Cast):  # the peer counts it among the requests it read
            self._pending.count_sent()
        self._put(body)

    def close(self, reason: str = "closed") -> None:
        """Close gracefully: the peer hears a Goodbye after what was already sent."""
        if self._state != "open":
            return
        self._put(self._codec.encode(Goodbye(reason=reason,
                                             requests_read=self._requests_read)))
        self._end(ConnectionClosed(f"connection to {self._peer_name} closed ({reason})",
                                   peer=self._peer_name))

    def fail(self, why: str) -> None:
        """Break both ends at once, as a crash or a reset does."""
        self._end(ConnectionBroken(why, peer=self._peer_name))
        other = self.other
        if other is not None:
            other._end(ConnectionBroken(why, peer=other.peer_name))

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            peer_name=self._peer_name, peer_address=self._peer_address,
            outbound=self.outbound, state=self._state, pending_requests=len(self._pending),
            queued_frames=0, inbound_tasks=self._inbound.count, frames_sent=self._sent,
            frames_received=self._received, bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received, writes=self._sent)

    # --- the wire ------------------------------------------------------------------

    def _check_open(self, rid: int | None) -> None:
        if self._state != "open":
            exc = self._close_exc
            cls = type(exc) if exc is not None else ConnectionClosed
            why = exc.message if exc is not None else f"the connection is {self._state}"
            raise cls(f"cannot send to {self._peer_name}: {why}", peer=self._peer_name,
                      definite=True, request_id=rid)

    def _encode(self, frame: Frame) -> bytes:
        body = self._codec.encode(frame)
        limit = self._owner.max_frame_bytes
        if len(body) > limit:
            raise ProtocolError(f"{type(frame).__name__} of {len(body):,} bytes exceeds"
                                f" max_frame_bytes {limit:,} (to {self._peer_name});"
                                " nothing was sent")
        return body

    def _put(self, body: bytes) -> None:
        self._sent += 1
        self._bytes_sent += len(body)
        net = self._owner.network
        if net.trace is not None:
            net.trace(f"{self._clock.monotonic()!r} frame {self._owner.node_name}"
                      f" {self._peer_name}", body)
        if net.loses(self._owner.node_name, self._peer_name):
            return
        self._pipe.put(body, net.delay(self._owner.node_name, self._peer_name))

    def _carries(self) -> bool:
        return self._owner.network.reachable(self._owner.node_name, self._peer_name)

    def _to_other(self, body: bytes) -> None:
        other = self.other
        if other is not None:
            other._receive(body)

    def _receive(self, body: bytes) -> None:
        if self._state != "open":
            return
        self._received += 1
        self._bytes_received += len(body)
        try:
            msg = self._codec.decode(body)
        except ProtocolError as exc:  # as TCP does: a peer that sends garbage is cut off
            _log.warning("closing in-memory connection to %s: %s", self._peer_name, exc)
            self.fail(f"protocol error from {self._peer_name}: {exc.message}")
            return
        if isinstance(msg, Reply | Error | Redirect):
            self._pending.answer(msg)
        elif isinstance(msg, Call | Cast):
            self._requests_read += 1
            self._inbound.start(msg)
        elif isinstance(msg, Goodbye):
            self._end(ConnectionBroken(f"{self._peer_name} closed the connection"
                                       f" ({msg.reason})", peer=self._peer_name),
                      peer_read=msg.requests_read)

    def _answer(self, frame: Answer) -> None:
        if self._state != "open":
            return  # the peer is gone; nobody to answer
        try:
            body = self._encode(frame)
        except ProtocolError as exc:  # e.g. a result bigger than max_frame_bytes
            body = self._codec.encode(Error(request_id=frame.request_id, code=exc.code,
                                            message=exc.message, definite=False))
        self._put(body)

    def _end(self, exc: TransportError, *, peer_read: int = -1) -> None:
        if self._state != "open":
            return
        self._state, self._close_exc = "closing", exc
        if isinstance(exc, ConnectionBroken):
            self._pipe.clear()  # a crash loses what was still in flight
        self._pending.fail_all(exc, peer_read)  # its Goodbye says which it never read
        self._inbound.cancel()
        self._owner.spawn_close(self)

    async def finish_close(self) -> None:
        await self._inbound.wait()
        self._state = "closed"
        self._closed.set()
        self._owner.connection_closed(self)

    def __repr__(self) -> str:
        return (f"<MemoryConnection {self._owner.node_name} -> {self._peer_name}"
                f" [{self._state}, {len(self._pending)} pending,"
                f" {self._inbound.count} inbound]>")


def _nothing() -> None:
    pass
