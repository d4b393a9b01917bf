"""One HTTP/2 connection carrying one Phoenix stream: the carrier under the HTTP/2 transport.

:class:`H2Carrier` is the asyncio protocol of one HTTP/2 connection (``h2``, sans-I/O),
client or server side: it sends our settings first, accepts exactly one ``POST`` of
:data:`PATH` (anything else is answered ``404`` or refused), and presents that stream's
DATA as the byte stream of a :class:`~.streams.StreamPipe`, acknowledging received DATA
only while the reader reads (HTTP/2 flow control as backpressure). Bad input, or no
request within the handshake timeout, closes this connection only and is reported to its
:class:`CarrierOwner`, the :class:`~.http2.Http2Transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from phoenix_cluster._foundation.env import Env, TimerHandle

from .http2_frames import FrameLengthScan
from .settings import TcpSettings
from .streams import StreamPipe, open_pipe
from .tcp import format_address

__all__ = ["CONTENT_TYPE", "FRAME_BYTES", "PATH", "STREAM_WINDOW_BYTES", "CarrierOwner",
           "H2Carrier"]

_log = logging.getLogger("phoenix_cluster.transport")

PATH = "/phoenix/v1"
"""The one request path; anything else is answered 404 and the connection closed."""

CONTENT_TYPE = "application/x-phoenix-frames"

STREAM_WINDOW_BYTES = 1024 * 1024
"""Flow-control window (stream and connection) we grant the peer. Large enough to keep a
loopback or LAN link busy with one window in flight; it is also the most a stalled
reader buffers (plus the stream reader's own limit) before its sender stops."""

FRAME_BYTES = 256 * 1024
"""Largest HTTP/2 DATA frame we accept (and the peer may send): fewer, bigger frames."""

_MAX_HEADER_LIST_BYTES = 16 * 1024
_PREFACE_BYTES = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", validated by h2
_DEFAULT_WINDOW = 65_535  # RFC 9113 initial connection window


class CarrierOwner(Protocol):
    """What a carrier needs from its transport (implemented by :class:`~.http2.Http2Transport`)."""

    env: Env
    settings: TcpSettings

    def accept_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ...

    def carrier_bad_input(self, carrier: H2Carrier, why: str, *, timeout: bool = False) -> None:
        ...

    def carrier_opened(self, carrier: H2Carrier) -> None: ...

    def carrier_closed(self, carrier: H2Carrier) -> None: ...


class H2Carrier(asyncio.Protocol):
    """One HTTP/2 connection carrying one Phoenix stream; implements ``streams.Carrier``."""

    def __init__(self, owner: CarrierOwner, *, client: bool) -> None:
        self._owner = owner
        self._settings = owner.settings
        self._clock = owner.env.clock
        self.client = client
        config = h2.config.H2Configuration(client_side=client, header_encoding=None)
        self._h2 = h2.connection.H2Connection(config=config)
        # Our settings go out in the very first SETTINGS frame, so the peer never sees
        # the defaults. A second stream is refused: one stream is all a peer needs.
        codes = h2.settings.SettingCodes
        ours: dict[h2.settings.SettingCodes, int] = {
            codes.MAX_CONCURRENT_STREAMS: 1,
            codes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST_BYTES,
            codes.INITIAL_WINDOW_SIZE: STREAM_WINDOW_BYTES,
            codes.MAX_FRAME_SIZE: FRAME_BYTES,
        }
        if client:
            ours[codes.ENABLE_PUSH] = 0
        self._h2.local_settings = h2.settings.Settings(client=client, initial_values=ours)
        self._h2.max_inbound_frame_size = FRAME_BYTES
        self._transport: asyncio.Transport | None = None
        self.peer = "?"
        self._sid: int | None = None
        self._pipe: StreamPipe | None = None
        self._out = bytearray()  # stream bytes waiting for flow-control credit
        self._eof_pending = self._ended_local = self._ended_remote = False
        self._reading = True
        self._unacked = 0  # flow-controlled bytes received while the reader was paused
        self._timer: TimerHandle | None = None
        self._closed = False
        # The server's input starts with the client preface, before the first frame.
        self._frame_lengths = FrameLengthScan(FRAME_BYTES, skip=0 if client else _PREFACE_BYTES)
        self.done = asyncio.get_running_loop().create_future()

    @property
    def has_stream(self) -> bool:
        return self._sid is not None

    # --- asyncio.Protocol (the socket) ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.peer = format_address(transport.get_extra_info("peername"))
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(STREAM_WINDOW_BYTES - _DEFAULT_WINDOW)
        self._owner.carrier_opened(self)
        if not self.client:  # a stranger gets handshake_timeout_s to start its stream
            self._timer = self._clock.call_later(self._settings.handshake_timeout_s,
                                                 self._no_request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if (too_big := self._frame_lengths.feed(data)) is not None:
            self._bad_input(too_big)
            return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._bad_input(f"invalid HTTP/2 ({type(exc).__name__}: {exc})")
            return
        for event in events:
            self._on_event(event)
            if self._closed:
                return
        self._flush()

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost follows

    def pause_writing(self) -> None:
        if self._pipe is not None:
            self._pipe.update_write_pressure()

    def resume_writing(self) -> None:
        if self._pipe is not None:
            self._pipe.update_write_pressure()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        pipe = self._pipe
        if pipe is not None and not pipe.is_lost:
            why = f": {exc!r}" if exc is not None else ""
            pipe.lost(ConnectionResetError(f"HTTP/2 connection with {self.peer} lost{why}"))
        self._owner.carrier_closed(self)
        if not self.done.done():
            self.done.set_result(None)

    # --- HTTP/2 events --------------------------------------------------------------

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.ResponseReceived):
            self._on_response(event)
        elif isinstance(event, h2.events.StreamEnded):
            if event.stream_id == self._sid and not self._ended_remote:
                self._ended_remote = True
                if self._pipe is not None:
                    self._pipe.feed_eof()
                self._maybe_finish()
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id == self._sid:
                self._ended_remote = True
                self._lose(f"{self.peer} reset the HTTP/2 stream (error {event.error_code})")
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._pump()
        elif isinstance(event, h2.events.ConnectionTerminated) and not (
                self._ended_local and self._ended_remote):
            self._lose(f"{self.peer} ended the HTTP/2 connection (GOAWAY, error"
                       f" {event.error_code})")
        # Pings are answered by h2; settings acks, priorities, trailers: nothing to do.

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        if self.client or self._sid is not None:
            self._h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        headers = dict(event.headers or ())
        method, path = headers.get(b":method", b""), headers.get(b":path", b"")
        if method != b"POST" or path != PATH.encode():
            self._h2.send_headers(sid, [(":status", "404"), ("content-type", "text/plain")])
            self._h2.send_data(sid, b"not a Phoenix cluster endpoint\n", end_stream=True)
            self._bad_input(f"HTTP/2 request {method.decode(errors='replace')}"
                            f" {path.decode(errors='replace')[:100]} is not POST {PATH}")
            return
        self._h2.send_headers(sid, [(":status", "200"), ("content-type", CONTENT_TYPE)])
        self._sid = sid
        self._cancel_timer()
        reader, writer = self._start_pipe()
        self._owner.accept_stream(reader, writer)

    def _on_response(self, event: h2.events.ResponseReceived) -> None:
        if event.stream_id != self._sid:
            return
        status = dict(event.headers or ()).get(b":status", b"")
        if status != b"200":
            self._lose(f"{self.peer} answered HTTP status {status.decode(errors='replace')}"
                       f" to POST {PATH}: not a Phoenix HTTP/2 endpoint", refused=True)

    def _on_data(self, event: h2.events.DataReceived) -> None:
        n = event.flow_controlled_length or 0
        if event.stream_id != self._sid or self._pipe is None or self._pipe.is_lost:
            if n:  # not ours, or we are done reading: keep the connection window open
                self._h2.acknowledge_received_data(n, event.stream_id)
            return
        if event.data:
            self._pipe.feed_data(event.data)
        if not n:
            return
        if self._reading:
            self._h2.acknowledge_received_data(n, event.stream_id)
        else:
            self._unacked += n

    # --- streams.Carrier --------------------------------------------------------------

    def open_stream(self, authority: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Client side: send the request headers and return the stream pair at once."""
        sid = self._h2.get_next_available_stream_id()
        scheme = "https" if self.pipe_extra_info("sslcontext") is not None else "http"
        self._h2.send_headers(sid, [(":method", "POST"), (":scheme", scheme),
                                    (":authority", authority), (":path", PATH),
                                    ("content-type", CONTENT_TYPE)])
        self._sid = sid
        pair = self._start_pipe()
        self._flush()
        return pair

    def _start_pipe(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._pipe = StreamPipe(self)
        return open_pipe(self._pipe, limit=self._settings.read_chunk_bytes)

    def pipe_write(self, data: bytes) -> None:
        self._out += data
        self._pump()

    def pipe_write_eof(self) -> None:
        self._eof_pending = True
        self._pump()

    def pipe_abort(self) -> None:
        if self._sid is not None and not (self._ended_local and self._ended_remote):
            with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed
                self._h2.reset_stream(self._sid, ErrorCodes.CANCEL)
        self._close_socket()

    def pipe_buffered(self) -> int:
        t = self._transport
        return len(self._out) + (t.get_write_buffer_size() if t is not None else 0)

    def pipe_set_reading(self, reading: bool) -> None:
        self._reading = reading
        if reading and self._unacked and self._sid is not None and not self._closed:
            n, self._unacked = self._unacked, 0
            self._h2.acknowledge_received_data(n, self._sid)
            self._flush()

    def pipe_extra_info(self, name: str, default: Any = None) -> Any:
        t = self._transport
        return t.get_extra_info(name, default) if t is not None else default

    # --- sending and closing ----------------------------------------------------------

    def _pump(self) -> None:
        """Send queued stream bytes as far as flow control allows, then the end of stream."""
        sid, h2c, out = self._sid, self._h2, self._out
        if sid is None or self._closed or self._ended_local:
            return
        try:
            while out:
                n = min(len(out), h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if n <= 0:
                    break
                h2c.send_data(sid, bytes(out[:n]))
                del out[:n]
            if not out and self._eof_pending:
                h2c.end_stream(sid)
                self._ended_local = True
        except h2.exceptions.ProtocolError:  # the stream was reset meanwhile
            out.clear()
            return
        self._flush()
        pipe = self._pipe
        if pipe is not None:
            if self._ended_local:
                pipe.lost(None)  # everything, then the end of stream, is on the socket
            else:
                pipe.update_write_pressure()
        self._maybe_finish()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        t = self._transport
        if data and t is not None and not t.is_closing():
            t.write(data)

    def _maybe_finish(self) -> None:
        if self._closed or not self._ended_local:
            return
        if self._ended_remote:
            self._close_socket()
        elif self._timer is None:  # linger for the peer's end of stream, then go
            self._timer = self._clock.call_later(self._settings.close_timeout_s,
                                                 self._close_socket)

    def _lose(self, why: str, *, refused: bool = False) -> None:
        pipe = self._pipe
        if pipe is not None and not pipe.is_lost:
            pipe.lost(ConnectionRefusedError(why) if refused else ConnectionResetError(why))
        self._close_socket()

    def _bad_input(self, why: str) -> None:
        self._owner.carrier_bad_input(self, why)
        self._lose(why)

    def _no_request(self) -> None:
        self._timer = None
        if self._sid is None and not self._closed:
            self._owner.carrier_bad_input(
                self, f"no HTTP/2 request within {self._settings.handshake_timeout_s}s",
                timeout=True)
            self._close_socket()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_socket(self) -> None:
        """Say GOAWAY and close the TCP connection (abort it if it cannot drain)."""
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        t = self._transport
        if t is None:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection()
        self._flush()
        if t.get_write_buffer_size() > 0:
            t.abort()  # a peer that does not read must not keep the socket alive
        else:
            t.close()

    def abort(self) -> None:
        """Drop the connection now (transport shutdown)."""
        self._lose("transport closed")
        if self._transport is not None and not self.done.done():
            self._transport.abort()

    def __repr__(self) -> str:
        side = "client" if self.client else "server"
        state = "closed" if self._closed else f"stream {self._sid}" if self._sid else "new"
        return f"<H2Carrier {side} {self.peer} [{state}, {len(self._out)} B queued]>"
