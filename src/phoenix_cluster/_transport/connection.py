"""One authenticated, multiplexed peer connection over an asyncio stream (TCP or TLS).

After the handshake (:mod:`.handshake`) a :class:`TcpConnection` runs three owned tasks:
a reader that decodes frames and dispatches them, the writer of its :class:`SendQueue`,
and a keepalive that pings when idle and declares the peer dead after
``keepalive_timeout_s`` of silence. Inbound Calls and Casts run in :class:`InboundRunner`.

Invariants:

- Requests in flight follow :mod:`.pending`'s invariant: each leaves exactly once.
- The send queue bounds requests and casts only. Replies, pings and goodbyes bypass the
  bound: there is at most one reply per inbound call, inbound calls are capped by
  ``max_inbound_tasks``, and a full queue must never block the answers that would let
  the peer drain its own.
- A duplicate connection *retires* instead of dying (like HTTP/2 GOAWAY): it sends
  ``Goodbye("duplicate")``, hands new work to the surviving connection, and closes only
  once both sides said goodbye and its in-flight requests and handlers are done, so the
  simultaneous-dial tie-break loses no call.

Owned by :mod:`.tcp`, which dials, accepts and keeps the per-peer registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Protocol

from phoenix_cluster._foundation.env import Env, TimerHandle
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.frames import HEADER_BYTES, FrameDecoder
from phoenix_cluster._wire.handshake import ClientHandshake, HandshakeResult, ServerHandshake
from phoenix_cluster._wire.messages import (
    HANDSHAKE_MESSAGES,
    Call,
    Cast,
    Error,
    Frame,
    Goodbye,
    Ping,
    Pong,
    Redirect,
    Reply,
)
from phoenix_cluster.errors import Overloaded, ProtocolError

from .base import (
    ConnectionBroken,
    ConnectionClosed,
    ConnectionState,
    ConnectionStatistics,
    InboundHandler,
    TransportError,
)
from .handshake import perform_handshake
from .inbound import InboundRunner
from .pending import Answer, PendingRequests
from .sendqueue import SendQueue
from .settings import TcpSettings
from .tasks import LogLimiter, TaskSet, fail_after

__all__ = ["RETIRE_REASON", "ConnectionOwner", "TcpConnection"]

_log = logging.getLogger("phoenix_cluster.transport")

RETIRE_REASON = "duplicate"
"""``Goodbye.reason`` of a connection retired by the simultaneous-dial tie-break."""


class ConnectionOwner(Protocol):
    """What a connection needs from its transport."""

    node_name: str
    incarnation: int
    role: str
    secret: bytes
    env: Env
    bus: TelemetryBus
    settings: TcpSettings
    handler: InboundHandler
    limiter: LogLimiter

    def connection_closed(self, conn: TcpConnection) -> None: ...

    def peer_retired(self, conn: TcpConnection) -> None: ...

    def successor(self, conn: TcpConnection) -> TcpConnection | None: ...

    def note_protocol_error(self) -> None: ...


class TcpConnection:
    """A :class:`~.base.PeerConnection` over an asyncio stream; built by the transport."""

    def __init__(self, owner: ConnectionOwner, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, outbound: bool, address: str) -> None:
        s = owner.settings
        self._owner, self._settings, self._clock = owner, s, owner.env.clock
        self._reader, self._writer = reader, writer
        self.outbound = outbound
        self._address = address
        self._codec = WireCodec()
        self._state: ConnectionState = "handshaking"
        self._peer: HandshakeResult | None = None
        self._pending = PendingRequests(self._clock, lambda: self._who, self._check_drained)
        self._requests_read = 0
        self._sendq = SendQueue(limit=s.send_queue_frames, batch_bytes=s.write_batch_bytes,
                                max_frame_bytes=s.max_frame_bytes, clock=self._clock,
                                bus=owner.bus, metadata=self._metadata)
        self._inbound = InboundRunner(self, owner.handler, answer=self._answer,
                                      on_idle=self._check_drained, limit=s.max_inbound_tasks,
                                      name=address, answer_now=self._answer_now)
        self._tasks = TaskSet(f"connection {address}")
        self._loops: list[asyncio.Task[None]] = []  # reader, writer, keepalive
        # Requests make their futures on it (asyncio.get_running_loop() costs a getpid()
        # system call on CPython 3.11); a connection lives and dies on its streams' loop.
        self._loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self._close_exc: TransportError | None = None
        self._retire_timer: TimerHandle | None = None
        self.peer_said_retire = False
        self._last_recv = self._clock.monotonic()
        self._frames_received = self._bytes_received = 0

    @property
    def peer_name(self) -> str:
        return self._peer.peer_node if self._peer is not None else "?"

    @property
    def peer_address(self) -> str:
        return self._address

    @property
    def peer_incarnation(self) -> int:
        return self._peer.peer_incarnation if self._peer is not None else 0

    @property
    def peer_role(self) -> str:
        return self._peer.peer_role if self._peer is not None else "?"

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    @property
    def _who(self) -> str:
        return f"{self.peer_name} at {self._address}" if self._peer else self._address

    def _metadata(self) -> dict[str, object]:
        return {"node": self._owner.node_name, "peer": self.peer_name}

    async def handshake(self) -> HandshakeResult:
        """Authenticate the peer and start the connection's tasks.

        On failure the socket is closed before raising; see
        :func:`~.handshake.perform_handshake` for what is raised.
        """
        o = self._owner
        kind = ClientHandshake if self.outbound else ServerHandshake
        hs = kind(secret=o.secret, node=o.node_name, incarnation=o.incarnation, role=o.role)
        try:
            result = await perform_handshake(
                hs, self._reader, self._writer, clock=self._clock,
                timeout_s=self._settings.handshake_timeout_s,
                max_frame_bytes=self._settings.max_frame_bytes, address=self._address,
            )
        except BaseException as exc:
            await self._close_socket(hard=isinstance(exc, ConnectionBroken))
            self._state = "closed"
            self._closed.set()
            raise
        self._peer, self._state = result, "open"
        self._last_recv = self._clock.monotonic()
        spawn = self._tasks.spawn
        self._loops = [
            spawn(self._read_loop(), name=f"read {self._address}"),
            spawn(self._write_loop(), name=f"write {self._address}"),
            spawn(self._keepalive_loop(), name=f"keepalive {self._address}"),
        ]
        return result

    # --- sending --------------------------------------------------------------------

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
        if self._state != "open" or self._sendq.full or rid in self._pending:
            return False
        body = self._encode(call)
        self._pending.start(rid, timeout_s, answered)
        self._sendq.put(body, now=True)  # one frame for a batch of work: no writer turn
        return True

    async def request(self, call: Call | Cast, timeout_s: float) -> Answer:
        rid = call.request_id
        if self._state != "open":
            return await self._forward(rid).request(call, timeout_s)
        if rid in self._pending:
            raise ValueError(f"request id {rid} is already in flight to {self._who}")
        body = self._encode(call)
        clock = self._clock
        deadline = clock.monotonic() + timeout_s
        if self._sendq.full:
            await self._wait_for_space(deadline, timeout_s, rid)
            if self._state != "open":  # retired while we waited: go to the successor
                remaining = max(0.0, deadline - clock.monotonic())
                return await self._forward(rid).request(call, remaining)
        fut: asyncio.Future[Answer] = self._loop.create_future()
        entry = self._pending.expect(rid, fut)
        self._sendq.put(body)
        return await self._pending.wait(rid, fut, entry, timeout_s, deadline)

    async def send(self, frame: Frame, *, timeout_s: float | None = None) -> None:
        if isinstance(frame, HANDSHAKE_MESSAGES):
            raise ValueError(f"{type(frame).__name__} is a handshake message; it cannot be sent")
        rid: int | None = getattr(frame, "request_id", None)
        if self._state != "open":
            await self._forward(rid).send(frame, timeout_s=timeout_s)
            return
        body = self._encode(frame)
        if self._sendq.full:
            t = self._settings.send_timeout_s if timeout_s is None else timeout_s
            await self._wait_for_space(self._clock.monotonic() + t, t, rid)
            if self._state != "open":
                await self._forward(rid).send(frame, timeout_s=timeout_s)
                return
        if isinstance(frame, Call | Cast):  # the peer counts it among the requests it read
            self._pending.count_sent()
        self._sendq.put(body)

    def _forward(self, rid: int | None) -> TcpConnection:
        # A retired duplicate hands new work to the surviving connection to the same peer;
        # anything else that is not open raises the reason it is not.
        successor = self._owner.successor(self) if self._state == "retiring" else None
        if successor is not None and successor is not self:
            return successor
        exc = self._close_exc
        cls = type(exc) if exc is not None else ConnectionClosed
        why = exc.message if exc is not None else f"the connection is {self._state}"
        raise cls(f"cannot send to {self._who}: {why}", peer=self.peer_name, definite=True,
                  request_id=rid)

    def _encode(self, frame: Frame) -> bytes:
        body = self._codec.encode(frame)
        if len(body) > self._settings.max_frame_bytes:
            raise ProtocolError(
                f"{type(frame).__name__} of {len(body):,} bytes exceeds max_frame_bytes"
                f" {self._settings.max_frame_bytes:,} (to {self._who}); nothing was sent"
            )
        return body

    async def _wait_for_space(self, deadline: float, timeout_s: float, rid: int | None) -> None:
        if not await self._sendq.wait_for_space(deadline, lambda: self._state == "open"):
            raise Overloaded(
                f"send queue to {self._who} stayed full ({self._sendq.limit:,} frames) for"
                f" {timeout_s}s; nothing was sent",
                request_id=rid,
            )

    def _put_frame(self, frame: Frame) -> None:
        if self._state in ("open", "retiring"):
            self._sendq.put(self._codec.encode(frame))

    def _answer(self, frame: Answer, now: bool = False) -> None:
        if self._state not in ("open", "retiring"):
            return  # the peer is gone; nobody to answer
        try:
            body = self._encode(frame)
        except ProtocolError as exc:  # e.g. a result bigger than max_frame_bytes
            body = self._codec.encode(Error(request_id=frame.request_id, code=exc.code,
                                            message=exc.message, definite=False))
        self._sendq.put(body, now=now)

    def _answer_now(self, frame: Answer) -> None:
        self._answer(frame, now=True)

    # --- background loops -----------------------------------------------------------

    async def _write_loop(self) -> None:
        try:
            await self._sendq.run(writer=self._writer,
                                  stop_when_empty=lambda: self._state in ("closing", "closed"))
        except OSError as exc:
            self.fail(f"writing to {self._who} failed: {exc!r}")

    async def _read_loop(self) -> None:
        decoder = FrameDecoder(self._settings.max_frame_bytes)
        reader, decode, chunk = self._reader, self._codec.decode, self._settings.read_chunk_bytes
        bus, received, inbound = self._owner.bus, events.TRANSPORT_MESSAGE_RECEIVED, self._inbound
        try:
            while True:
                data = await reader.read(chunk)
                if not data:
                    if decoder.buffered_bytes:
                        # Hung up mid-frame: bad input (or a crash mid-write), say so.
                        self._owner.note_protocol_error()
                        self._owner.limiter.warning(
                            _log, "protocol", "truncated frame from %s: the connection ended "
                            "%d bytes into a frame", self._who, decoder.buffered_bytes)
                    self._on_eof()
                    return
                self._last_recv = self._clock.monotonic()
                self._bytes_received += len(data)
                bodies = decoder.feed(data)
                self._frames_received += len(bodies)
                if bodies and received in bus.listened:
                    meta = self._metadata()
                    for body in bodies:
                        bus.execute(received, {"bytes": len(body) + HEADER_BYTES}, meta)
                for body in bodies:
                    try:
                        msg = decode(body)
                    except ValueError as exc:  # e.g. invalid UTF-8 that escaped the codec
                        raise ProtocolError(
                            f"invalid frame body of {len(body):,} bytes: {exc}") from exc
                    if type(msg) is Cast and inbound.full:
                        await inbound.wait_for_slot()  # backpressure: stop reading
                        self._last_recv = self._clock.monotonic()
                    self._dispatch(msg)
        except ProtocolError as exc:
            self._owner.note_protocol_error()
            self._owner.limiter.warning(_log, "protocol", "closing connection to %s: %s from %s",
                                        self.peer_name, exc.message, self._address)
            self._begin_close(ConnectionBroken(f"{self._who} sent bad input: {exc.message}",
                                               peer=self.peer_name),
                              goodbye=f"protocol error: {exc.message}")
        except OSError as exc:
            self.fail(f"connection to {self._who} lost: {exc!r}")
        except Exception as exc:  # a bug: never leave an "open" connection without a reader
            _log.exception("reader for %s failed", self._who)
            self.fail(f"internal error reading from {self._who}: {exc!r}")

    def _dispatch(self, msg: Frame) -> None:
        if isinstance(msg, Reply | Error | Redirect):
            if not self._pending.answer(msg):
                _log.debug("late or unknown answer %d from %s ignored", msg.request_id, self._who)
        elif isinstance(msg, Call | Cast):
            # Once closing, a request is left unread: our Goodbye told the peer how many
            # we read, so it knows this one never ran and sends it elsewhere.
            if self._state in ("open", "retiring"):
                self._requests_read += 1
                self._inbound.start(msg)
        elif isinstance(msg, Ping):
            self._put_frame(Pong(seq=msg.seq))
        elif isinstance(msg, Goodbye):
            self._on_goodbye(msg.reason, msg.requests_read)
        elif not isinstance(msg, Pong):
            raise ProtocolError(f"unexpected {type(msg).__name__} after the handshake")

    async def _keepalive_loop(self) -> None:
        interval, timeout = self._settings.keepalive_interval_s, self._settings.keepalive_timeout_s
        tick, seq = min(interval, timeout) / 2, 0
        while self._state in ("open", "retiring"):
            await self._clock.sleep(tick)
            now = self._clock.monotonic()
            if self._inbound.paused:
                # We are not reading, so silence proves nothing; but keep pinging, or the
                # peer (blocked on our backpressure) would take us for dead.
                self._last_recv = now
            silent = now - self._last_recv
            if silent >= timeout:
                self._owner.limiter.warning(
                    _log, "keepalive", "no frame from %s for %.1fs (keepalive_timeout_s=%s);"
                    " closing the connection", self._who, silent, timeout)
                self.fail(f"no frame from {self._who} for {silent:.1f}s (keepalive)")
                return
            if silent >= interval or now - self._sendq.last_send >= interval:
                seq += 1
                self._put_frame(Ping(seq=seq))

    # --- closing --------------------------------------------------------------------

    def _on_goodbye(self, reason: str, requests_read: int) -> None:
        if reason == RETIRE_REASON:
            self.peer_said_retire = True
            self._owner.peer_retired(self)
            self._check_drained()
        else:
            self._begin_close(ConnectionBroken(
                f"{self._who} closed the connection ({reason or 'goodbye'})", peer=self.peer_name),
                peer_read=requests_read)

    def _on_eof(self) -> None:
        if self._state == "retiring" and self.peer_said_retire and not self._pending:
            self._begin_close(ConnectionClosed("retired duplicate", peer=self.peer_name))
        else:
            self.fail(f"{self._who} closed the connection without a goodbye")

    def fail(self, why: str) -> None:
        """Drop the connection as broken: pending requests fail with ``ConnectionBroken``."""
        self._begin_close(ConnectionBroken(why, peer=self.peer_name), hard=True)

    def retire(self) -> None:
        """Start nothing new here (new work goes to the successor); close once drained."""
        if self._state != "open":
            return
        self._state = "retiring"
        self._put_frame(Goodbye(reason=RETIRE_REASON))
        self._retire_timer = self._clock.call_later(
            self._settings.retire_timeout_s,
            partial(self._begin_close, ConnectionClosed(
                f"retired duplicate to {self._who} did not drain in time", peer=self.peer_name)),
        )
        self._check_drained()

    def _check_drained(self) -> None:
        if (self._state == "retiring" and self.peer_said_retire and not self._pending
                and not self._inbound.count):
            self._begin_close(ConnectionClosed("retired duplicate", peer=self.peer_name))

    def close(self, reason: str = "closed") -> None:
        self._begin_close(ConnectionClosed(f"connection to {self._who} closed ({reason})",
                                           peer=self.peer_name), goodbye=reason)

    def abort(self) -> None:
        """Drop the connection at once, without a goodbye, as a crash would."""
        if self._state == "closing":  # a graceful close is slow: cut it short
            self._writer.transport.abort()
            return
        self._begin_close(ConnectionClosed(f"connection to {self._who} aborted",
                                           peer=self.peer_name), hard=True)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _begin_close(self, exc: TransportError, *, goodbye: str | None = None,
                     hard: bool = False, peer_read: int = -1) -> None:
        """``peer_read``: how many of our requests the peer's Goodbye says it read (-1:
        not known); the ones after those fail definite, the rest indefinite."""
        if self._state not in ("open", "retiring"):
            return
        self._state = "closing"
        self._close_exc = exc
        if self._retire_timer is not None:
            self._retire_timer.cancel()
        self._pending.fail_all(exc, peer_read)
        self._sendq.release_waiters()
        if goodbye is not None and not hard:
            self._sendq.put(self._codec.encode(Goodbye(reason=goodbye,
                                                       requests_read=self._requests_read)))
        self._sendq.wake()
        self._tasks.spawn(self._shutdown(hard), name=f"close {self._address}")

    async def _shutdown(self, hard: bool) -> None:
        reader, writer, keepalive = self._loops
        reader.cancel()
        keepalive.cancel()
        self._inbound.cancel()
        if not hard and not writer.done():
            try:
                async with fail_after(self._clock, self._settings.close_timeout_s):
                    await asyncio.wait({writer})  # flush what was queued, Goodbye last
            except TimeoutError:
                hard = True
        writer.cancel()
        await self._close_socket(hard=hard)
        await self._tasks.wait()
        try:
            async with fail_after(self._clock, self._settings.close_timeout_s):
                await self._inbound.wait()
        except TimeoutError:  # a handler swallowed its cancellation; do not hang on it
            _log.error("%d inbound handlers for %s ignored cancellation; abandoning them",
                       self._inbound.count, self._who)
        self._state = "closed"
        self._closed.set()
        _log.debug("connection to %s closed: %s", self._who, self._close_exc)
        self._owner.connection_closed(self)

    async def _close_socket(self, *, hard: bool) -> None:
        writer = self._writer
        if hard:
            writer.transport.abort()
        else:
            writer.close()
        try:
            async with fail_after(self._clock, self._settings.close_timeout_s):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            writer.transport.abort()

    # --- introspection --------------------------------------------------------------

    def statistics(self) -> ConnectionStatistics:
        q = self._sendq
        return ConnectionStatistics(
            peer_name=self.peer_name, peer_address=self._address, outbound=self.outbound,
            state=self._state, pending_requests=len(self._pending), queued_frames=len(q),
            inbound_tasks=self._inbound.count, frames_sent=q.frames_sent,
            frames_received=self._frames_received, bytes_sent=q.bytes_sent,
            bytes_received=self._bytes_received, writes=q.writes,
        )

    def __repr__(self) -> str:
        direction = "outbound" if self.outbound else "inbound"
        return (
            f"<TcpConnection {self._owner.node_name} -> {self.peer_name} ({self._address},"
            f" {direction}) [{self._state}, {len(self._pending)} pending,"
            f" {len(self._sendq)} queued, {self._inbound.count} inbound]>"
        )
