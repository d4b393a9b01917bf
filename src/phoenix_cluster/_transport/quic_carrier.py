"""One QUIC connection carrying one Phoenix stream: the carrier under the QUIC transport.

:class:`QuicCarrier` is the aioquic protocol of one QUIC connection, client or server
side: the first client-initiated bidirectional stream is the Phoenix stream, presented
as the byte stream of a :class:`~.streams.StreamPipe`; a second stream, a
server-initiated one, or no stream within the handshake timeout is bad input, which
closes this connection only and is reported to its :class:`CarrierOwner`, the
:class:`~.quic.QuicTransport`. :class:`PhxQuicConnection` is aioquic's connection with
reader-driven flow control on that stream (a sliding window of
:data:`STREAM_WINDOW_BYTES` past what was received while reading).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events as qe
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

from phoenix_cluster._foundation.env import Env, TimerHandle
from phoenix_cluster.errors import AuthenticationError

from .settings import TcpSettings
from .streams import StreamPipe, open_pipe
from .tasks import fail_after
from .tcp import format_address

__all__ = ["STREAM_WINDOW_BYTES", "CarrierOwner", "PhxQuicConnection", "QuicCarrier"]

_log = logging.getLogger("phoenix_cluster.transport")

STREAM_WINDOW_BYTES = 1024 * 1024
"""Flow-control credit granted ahead of what the reader has taken (see module docstring)."""

_CLOSE_WAIT_S = 1.0  # how long a client waits for QUIC's closing period before dropping


class CarrierOwner(Protocol):
    """What a carrier needs from its transport (implemented by :class:`~.quic.QuicTransport`)."""

    env: Env
    settings: TcpSettings

    def accept_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ...

    def carrier_bad_input(self, carrier: QuicCarrier, why: str, *, timeout: bool = False
                          ) -> None: ...

    def carrier_opened(self, carrier: QuicCarrier) -> None: ...

    def carrier_closed(self, carrier: QuicCarrier) -> None: ...

    def spawn_teardown(self, carrier: QuicCarrier) -> None: ...


class PhxQuicConnection(QuicConnection):
    """aioquic's connection with reader-driven flow control on the Phoenix stream.

    aioquic doubles a stream's receive limit whenever half of it has arrived, read or
    not. For the one stream we carry, grant instead ``window`` bytes past the highest
    offset received, and nothing while the reader is paused (``held``). Other streams
    (refused anyway) keep aioquic's rule. This overrides a private method of aioquic
    (tested with 1.2 - 1.7); the override is checked at import below.
    """

    phx_stream: int | None = None
    phx_held = False
    phx_window = STREAM_WINDOW_BYTES

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        if stream.stream_id != self.phx_stream or not stream.max_stream_data_local:
            super()._write_stream_limits(builder, space, stream)
            return
        window = self.phx_window
        target = stream.receiver.highest_offset + window
        if not self.phx_held and target - stream.max_stream_data_local >= window // 4:
            stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id or 0)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local


assert callable(getattr(QuicConnection, "_write_stream_limits", None)), (
    "aioquic changed: QuicConnection._write_stream_limits is gone; update PhxQuicConnection")


class QuicCarrier(QuicConnectionProtocol):
    """One QUIC connection carrying one Phoenix stream; implements ``streams.Carrier``."""

    def __init__(self, quic: QuicConnection, stream_handler: object = None, *,
                 owner: CarrierOwner, client: bool) -> None:
        if not isinstance(quic, PhxQuicConnection):
            # The server side builds plain QuicConnections; give ours the override above
            # (it adds no state, only the method and two class-level defaults).
            quic.__class__ = PhxQuicConnection
        super().__init__(quic)
        self._phx = cast(PhxQuicConnection, quic)
        self._owner = owner
        self._settings = owner.settings
        self._clock = owner.env.clock
        self.client = client
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()  # client: TLS done
        self.ready.add_done_callback(_retrieve)  # a failure nobody awaited is no error
        self.done: asyncio.Future[None] = loop.create_future()  # terminated / dropped
        self._udp_lost: asyncio.Future[None] = loop.create_future()  # client socket
        self._udp: asyncio.DatagramTransport | None = None
        self.peer_addr: tuple[Any, ...] | None = None  # where the peer's datagrams come from
        self._sid: int | None = None
        self._pipe: StreamPipe | None = None
        self._stream_obj: QuicStream | None = None
        self._written = 0  # bytes handed to aioquic on our stream
        self._eof_sent = self._ended_remote = False
        self._phx_timer: TimerHandle | None = None
        self._closing = False  # CONNECTION_CLOSE issued (or received)
        self._dropping = False  # client: the task closing our socket was started
        self._phx_transmit: asyncio.Handle | None = None
        owner.carrier_opened(self)
        if not client:  # a stranger gets handshake_timeout_s to open its stream
            self._phx_timer = self._clock.call_later(self._settings.handshake_timeout_s,
                                                     self._no_stream)

    @property
    def peer(self) -> str:
        addr = self.peer_addr
        return format_address(addr[:2]) if addr else "?"

    @property
    def has_stream(self) -> bool:
        return self._sid is not None

    # --- asyncio.DatagramProtocol (client socket) and aioquic hooks -------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.client:  # asyncio's datagram transport is no DatagramTransport subclass
            self._udp = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self.peer_addr is None:
            self.peer_addr = tuple(addr)
        super().datagram_received(data, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only for the client's own socket; a server's shared socket is the QuicServer's.
        self._lose(f"UDP socket to {self.peer} closed")
        self._finish()
        if not self._udp_lost.done():
            self._udp_lost.set_result(None)

    def error_received(self, exc: Exception) -> None:
        if not isinstance(exc, ConnectionRefusedError):
            _log.debug("QUIC socket error from %s ignored: %r", self.peer, exc)
            return
        # ICMP port unreachable on our connected socket: nobody listens there (any more).
        if not self.ready.done():
            self.ready.set_exception(ConnectionRefusedError(f"{exc.strerror or exc}"))
        self._lose(f"{self.peer} is unreachable: {exc.strerror or exc!r}")
        self.teardown(error=True)

    def transmit(self) -> None:
        self._phx_transmit = None
        super().transmit()
        self._after_io()

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamDataReceived):
            self._on_stream_data(event)
        elif isinstance(event, qe.HandshakeCompleted):
            if not self.ready.done():
                self.ready.set_result(None)
        elif isinstance(event, qe.StreamReset):
            if event.stream_id == self._sid:
                self._ended_remote = True
                self._lose(f"{self.peer} reset the QUIC stream (error {event.error_code})")
                self.teardown(error=True)
        elif isinstance(event, qe.ConnectionTerminated):
            why = (f"QUIC connection with {self.peer} closed"
                   f" ({event.reason_phrase or 'no reason'}, error {event.error_code:#x})")
            if not self.ready.done():
                crypto = QuicErrorCode.CRYPTO_ERROR <= event.error_code < 0x200
                self.ready.set_exception(
                    AuthenticationError(f"TLS handshake with {self.peer} failed:"
                                        f" {event.reason_phrase}") if crypto
                    else ConnectionRefusedError(why))
            self._closing = True
            self._lose(why)
            self.teardown()

    def _on_stream_data(self, event: qe.StreamDataReceived) -> None:
        if self._closing:
            return  # we are leaving; whatever still arrives is moot
        sid = event.stream_id
        if self._sid is None and not self.client and sid % 4 == 0:
            self._sid = self._phx.phx_stream = sid  # the first client-initiated bidi stream
            if self._phx_timer is not None:
                self._phx_timer.cancel()
                self._phx_timer = None
            reader, writer = self._start_pipe()
            self._owner.accept_stream(reader, writer)
        elif sid != self._sid:
            self._bad_input(f"unexpected QUIC stream {sid} (one stream per connection)")
            return
        pipe = self._pipe
        if pipe is None:
            return
        pipe.feed_data(event.data)
        if event.end_stream and not self._ended_remote:
            self._ended_remote = True
            pipe.feed_eof()
            self._maybe_finish()

    # --- streams.Carrier --------------------------------------------------------------

    def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Client side: claim the first bidirectional stream and return its pair."""
        self._sid = self._phx.phx_stream = self._quic.get_next_available_stream_id()
        return self._start_pipe()

    def _start_pipe(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._pipe = StreamPipe(self)
        return open_pipe(self._pipe, limit=self._settings.read_chunk_bytes)

    def pipe_write(self, data: bytes) -> None:
        if self._sid is None or self._closing:
            return
        self._quic.send_stream_data(self._sid, data)
        self._written += len(data)
        self._schedule_transmit()

    def pipe_write_eof(self) -> None:
        if self._sid is None or self._closing or self._eof_sent:
            return
        self._eof_sent = True
        self._quic.send_stream_data(self._sid, b"", end_stream=True)
        self._schedule_transmit()

    def pipe_abort(self) -> None:
        self.teardown(error=True)

    def pipe_buffered(self) -> int:
        stream = self._stream()
        return self._written - stream.sender.highest_offset if stream is not None else 0

    def pipe_set_reading(self, reading: bool) -> None:
        self._phx.phx_held = not reading
        if reading:
            self._schedule_transmit()  # send the credit we held back

    def pipe_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer_addr[:2] if self.peer_addr else default
        if name == "sockname" and self._transport is not None:
            return self._transport.get_extra_info("sockname", default)
        return default

    # --- sending and closing ----------------------------------------------------------

    def _stream(self) -> QuicStream | None:
        # aioquic keeps no public per-stream view; the send offset and the FIN's ack live
        # on its stream object, which it forgets once both directions finished: keep it.
        if self._stream_obj is None and self._sid is not None:
            self._stream_obj = self._quic._streams.get(self._sid)
        return self._stream_obj

    def _schedule_transmit(self) -> None:
        if self._phx_transmit is None and not self.done.done():
            self._phx_transmit = asyncio.get_running_loop().call_soon(self.transmit)

    def _after_io(self) -> None:
        pipe = self._pipe
        if pipe is None or pipe.is_lost:
            return
        stream = self._stream()
        if self._eof_sent and stream is not None and stream.sender.is_finished:
            pipe.lost(None)  # everything we wrote, and the end of stream, was acknowledged
            self._maybe_finish()
        else:
            pipe.update_write_pressure()

    def _maybe_finish(self) -> None:
        pipe = self._pipe
        if self._closing or pipe is None or not pipe.is_lost:
            return
        if self._ended_remote:
            self.teardown()
        elif self._phx_timer is None:  # linger for the peer's end of stream, then go
            self._phx_timer = self._clock.call_later(self._settings.close_timeout_s, self.teardown)

    def _lose(self, why: str) -> None:
        pipe = self._pipe
        if pipe is not None and not pipe.is_lost:
            pipe.lost(ConnectionResetError(why))

    def _bad_input(self, why: str) -> None:
        self._owner.carrier_bad_input(self, why)
        self._lose(why)
        self.teardown(error=True, reason=why)

    def _no_stream(self) -> None:
        self._phx_timer = None
        if self._sid is None and not self._closing:
            self._owner.carrier_bad_input(
                self, f"no QUIC stream within {self._settings.handshake_timeout_s}s",
                timeout=True)
            self.teardown(error=True)

    def teardown(self, *, error: bool = False, reason: str = "") -> None:
        """Send CONNECTION_CLOSE (once); a client then drops its own socket."""
        if self._phx_timer is not None:
            self._phx_timer.cancel()
            self._phx_timer = None
        if not self._closing:
            self._closing = True
            code = QuicErrorCode.APPLICATION_ERROR if error else QuicErrorCode.NO_ERROR
            if self._transport is not None and not self.done.done():
                self.close(error_code=code, reason_phrase=reason[:100])
        if not self.client:
            self._finish()  # the QuicServer forgets us when QUIC's closing period ends
        elif not self._dropping:
            self._dropping = True
            self._owner.spawn_teardown(self)

    async def drop(self) -> None:
        """Client: wait out QUIC's short closing period, then close the UDP socket."""
        try:
            if self.ready.done() and not self.ready.exception():  # a peer to say bye to
                async with fail_after(self._clock, _CLOSE_WAIT_S):
                    await self.wait_closed()
        except TimeoutError:
            pass
        finally:
            if self._udp is not None:
                self._udp.close()
                await self._udp_lost
            self._finish()

    def abort(self) -> None:
        """Drop the connection now (transport shutdown)."""
        self._lose("transport closed")
        self.teardown(error=True)

    def _finish(self) -> None:
        if self._phx_timer is not None:
            self._phx_timer.cancel()
            self._phx_timer = None
        self._closing = True
        if not self.done.done():
            self.done.set_result(None)
            self._owner.carrier_closed(self)

    def __repr__(self) -> str:
        side = "client" if self.client else "server"
        state = "closed" if self._closing else f"stream {self._sid}" if self._sid else "new"
        return f"<QuicCarrier {side} {self.peer} [{state}]>"


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
