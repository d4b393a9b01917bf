"""One stream inside a multiplexing carrier (HTTP/2, QUIC), seen as an asyncio transport.

:class:`~.connection.TcpConnection` and :func:`~.handshake.perform_handshake` speak to an
``asyncio.StreamReader`` / ``asyncio.StreamWriter`` pair. Rather than teach them a second
API, the HTTP/2 and QUIC transports carry the same length-prefixed frame stream inside
one long-lived bidirectional stream, and :class:`StreamPipe` presents that stream as an
``asyncio.Transport``. :func:`open_pipe` then builds the stdlib's own reader, protocol and
writer on top, so every line above the byte stream (handshake, framing, multiplexing,
keepalive, backpressure, close) is the TCP transport's, unchanged.

The carrier (the HTTP/2 or QUIC connection object) implements :class:`Carrier` and
calls the pipe's ``feed_data`` / ``feed_eof`` / ``lost`` / ``update_write_pressure``.
Semantics follow a TCP socket transport:

- ``write`` never blocks. Bytes the carrier cannot send yet (flow control, congestion)
  count as buffered; above ``high_water`` the protocol is told ``pause_writing`` (so
  ``StreamWriter.drain()`` waits), below ``low_water`` ``resume_writing``. This is what
  turns a slow peer into backpressure on the bounded send queue.
- ``pause_reading`` asks the carrier to stop granting the peer flow-control credit, so a
  reader that stops reading pushes back on the sender as TCP's receive window does.
- ``close`` ends our direction once everything written has gone out; the protocol's
  ``connection_lost(None)`` follows once the carrier has handed the end of stream to the
  network. The carrier may linger a little to receive the peer's end of stream before it
  tears the connection down, so neither side resets data the other has not read yet.
- ``abort`` resets the stream and drops the carrier at once.

:func:`dialling` maps what can go wrong while a carrier connects to the transport's
errors, the same way the TCP transport does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from phoenix_cluster._foundation.env import Clock
from phoenix_cluster.errors import AuthenticationError

from .base import ConnectionBroken
from .tasks import fail_after

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_LOW_WATER",
    "Carrier",
    "StreamPipe",
    "dialling",
    "open_pipe",
]

DEFAULT_HIGH_WATER = 256 * 1024
"""Buffered bytes above which the writer is paused: a few write batches' worth, so a
coalesced batch never waits on its own, yet a stalled peer costs bounded memory."""

DEFAULT_LOW_WATER = 64 * 1024
"""Buffered bytes below which the writer resumes."""


class Carrier(Protocol):
    """What a :class:`StreamPipe` needs from the connection that carries its stream."""

    def pipe_write(self, data: bytes) -> None:
        """Queue ``data`` on the stream; send what flow control allows now."""
        ...

    def pipe_write_eof(self) -> None:
        """End our direction after everything queued (``pipe.lost(None)`` follows)."""
        ...

    def pipe_abort(self) -> None:
        """Reset the stream and drop the connection now."""
        ...

    def pipe_buffered(self) -> int:
        """Bytes written to the pipe that are not yet on the network."""
        ...

    def pipe_set_reading(self, reading: bool) -> None:
        """Grant the peer flow-control credit (``True``) or withhold it (``False``)."""
        ...

    def pipe_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername``, ``sockname``, ``sslcontext``... of the carrying connection."""
        ...


class StreamPipe(asyncio.Transport):
    """A byte stream inside an HTTP/2 or QUIC connection, as an asyncio transport."""

    def __init__(
        self,
        carrier: Carrier,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = DEFAULT_LOW_WATER,
    ) -> None:
        super().__init__()
        self._carrier = carrier
        self._protocol: asyncio.BaseProtocol | None = None
        self._high, self._low = high_water, low_water
        self._closing = False  # close(), write_eof() or abort() was called
        self._lost = False  # connection_lost was delivered
        self._write_paused = False
        self._reading = True
        self._eof_written = False

    # --- called by the carrier ------------------------------------------------------

    def feed_data(self, data: bytes) -> None:
        """Bytes from the peer."""
        protocol = self._protocol
        if not self._lost and data and isinstance(protocol, asyncio.Protocol):
            protocol.data_received(data)

    def feed_eof(self) -> None:
        """The peer ended its direction."""
        protocol = self._protocol
        if self._lost or not isinstance(protocol, asyncio.Protocol):
            return
        if not protocol.eof_received():
            self.close()  # what a socket transport does when the protocol returns false

    def lost(self, exc: Exception | None) -> None:
        """The stream is over: cleanly (``None``) or not. Delivered once."""
        if self._lost:
            return
        self._lost = self._closing = True
        protocol = self._protocol
        if protocol is not None:
            protocol.connection_lost(exc)

    @property
    def is_lost(self) -> bool:
        return self._lost

    @property
    def eof_written(self) -> bool:
        return self._eof_written

    def update_write_pressure(self) -> None:
        """Re-check the buffered amount against the water marks (call after sending)."""
        protocol = self._protocol
        if self._lost or protocol is None:
            return
        size = self._carrier.pipe_buffered()
        if not self._write_paused and size > self._high:
            self._write_paused = True
            protocol.pause_writing()
        elif self._write_paused and size <= self._low:
            self._write_paused = False
            protocol.resume_writing()

    # --- asyncio.Transport ----------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._carrier.pipe_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._eof_written or not data:
            return  # like a closed socket transport: late writes go nowhere
        self._carrier.pipe_write(bytes(data))
        self.update_write_pressure()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._eof_written or self._lost:
            return
        self._eof_written = True
        self._carrier.pipe_write_eof()

    def close(self) -> None:
        if self._closing:
            return
        self.write_eof()
        self._closing = True

    def abort(self) -> None:
        self._closing = True
        if self._lost:
            return
        self._carrier.pipe_abort()
        # Like a socket transport, connection_lost comes on the next loop turn.
        asyncio.get_running_loop().call_soon(self.lost, None)

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._carrier.pipe_set_reading(False)

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._carrier.pipe_set_reading(True)

    def is_reading(self) -> bool:
        return self._reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = DEFAULT_HIGH_WATER if high is None else high
        self._low = min(self._high, self._high // 4 if low is None else low)
        self.update_write_pressure()

    def get_write_buffer_size(self) -> int:
        return self._carrier.pipe_buffered()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def __repr__(self) -> str:
        state = "lost" if self._lost else "closing" if self._closing else "open"
        return f"<StreamPipe [{state}, {self._carrier.pipe_buffered()} B buffered]>"


def open_pipe(pipe: StreamPipe, *, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Wrap ``pipe`` in the stdlib's stream reader, protocol and writer.

    Args:
        limit: the reader's buffer limit; past twice this the reader asks the pipe to
            ``pause_reading`` (``read_chunk_bytes`` of the transport settings).
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    protocol = asyncio.StreamReaderProtocol(reader)
    pipe.set_protocol(protocol)
    protocol.connection_made(pipe)
    return reader, asyncio.StreamWriter(pipe, protocol, reader, loop)


@asynccontextmanager
async def dialling(address: str, *, clock: Clock, timeout_s: float) -> AsyncIterator[None]:
    """Bound a dial by ``timeout_s`` on ``clock`` and map its failures.

    Raises:
        ConnectionBroken: timed out, refused or unreachable (``definite=True``).
        phx.AuthenticationError: the peer's TLS certificate was rejected.
    """
    try:
        async with fail_after(clock, timeout_s):
            yield
    except TimeoutError:
        raise ConnectionBroken(f"cannot connect to {address}: no answer within {timeout_s}s",
                               peer=address, definite=True) from None
    except ssl.SSLCertVerificationError as exc:
        raise AuthenticationError(f"TLS certificate of {address} rejected:"
                                  f" {exc.verify_message}") from exc
    except OSError as exc:
        raise ConnectionBroken(f"cannot connect to {address}: {exc.strerror or exc!r}",
                               peer=address, definite=True) from exc
