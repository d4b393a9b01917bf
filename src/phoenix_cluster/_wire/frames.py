"""Length-prefixed framing: ``[4-byte big-endian unsigned length][body]``, sans I/O.

The length is checked against ``max_frame_bytes`` as soon as its 4 bytes arrive, before
any of the body is buffered, so a peer cannot make a node allocate 4 GiB by announcing it
(DESIGN, wire layer). A zero length is invalid because every body is a tagged message.

:class:`FrameDecoder` is fed whatever the socket produced and hands back complete bodies;
the transport owns the socket and adds the peer address to error messages. Must not import
anything above L0; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from phoenix_cluster.errors import ConfigError, ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "HEADER_BYTES",
    "FrameDecoder",
    "encode_frame",
    "pack_frames",
]

HEADER_BYTES: Final = 4
"""Size of the length prefix."""

DEFAULT_MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
"""Largest body accepted by default: big enough for a large agent snapshot, small enough
that a handful of connections cannot exhaust a node's memory."""

_LIMIT: Final = 2**32 - 1  # what 4 length bytes can express


def _check_max(max_frame_bytes: int) -> None:
    if not 1 <= max_frame_bytes <= _LIMIT:
        raise ConfigError(
            f"max_frame_bytes must be between 1 and {_LIMIT:,}, got {max_frame_bytes:,}",
            key="max_frame_bytes",
        )


def _check_length(length: int, max_frame_bytes: int) -> None:
    if length == 0:
        raise ProtocolError("zero-length frame (every frame carries a message)")
    if length > max_frame_bytes:
        raise ProtocolError(
            f"frame of {length:,} bytes exceeds max_frame_bytes {max_frame_bytes:,}"
        )


def encode_frame(body: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Prefix ``body`` with its length.

    Checking on the way out too means an oversized message fails here, as a definite error
    for one call, instead of making the peer drop the whole connection.

    Raises:
        ProtocolError: ``body`` is empty or longer than ``max_frame_bytes``.
    """
    _check_length(len(body), max_frame_bytes)
    return len(body).to_bytes(HEADER_BYTES, "big") + body


def pack_frames(bodies: Iterable[bytes], max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Frame several bodies into one buffer, so a burst of messages costs one socket write.

    Raises:
        ProtocolError: any body is empty or too large; nothing is returned in that case.
    """
    parts: list[bytes] = []
    for body in bodies:
        _check_length(len(body), max_frame_bytes)
        parts.append(len(body).to_bytes(HEADER_BYTES, "big"))
        parts.append(body)
    return b"".join(parts)


class FrameDecoder:
    """Incremental frame parser: feed it bytes in any chunking, get complete bodies back.

    Parsing walks an offset through the input and copies each body once, so a chunk holding
    thousands of small frames costs linear time; unconsumed bytes (at most one partial
    frame) are kept for the next :meth:`feed`.

    After any error the decoder is poisoned and every later :meth:`feed` raises: the stream
    has lost its framing and nothing after the bad header can be trusted.

    Args:
        max_frame_bytes: largest body accepted, at most 2**32 - 1.
    """

    __slots__ = ("_buffer", "_error", "_frames", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        _check_max(max_frame_bytes)
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._error: ProtocolError | None = None
        self._frames = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every body completed by them, in order.

        Raises:
            ProtocolError: a header announces a zero or oversized frame (raised as soon as
                the 4 header bytes are in), or the decoder failed earlier.
        """
        if self._error is not None:
            raise ProtocolError(f"frame stream already broken: {self._error}")
        if not data:
            return []
        if self._buffer:
            # A partial frame is pending; appending is amortised O(len(data)).
            self._buffer += data
            source: bytes | bytearray = self._buffer
        else:
            # Fast path: parse straight out of the caller's bytes, no staging copy.
            source = data
        try:
            bodies, consumed = self._parse(source)
        except ProtocolError as exc:
            self._error = exc
            self._buffer.clear()
            raise
        if source is self._buffer:
            del self._buffer[:consumed]
        else:
            self._buffer += memoryview(data)[consumed:]
        self._frames += len(bodies)
        return bodies

    def _parse(self, source: bytes | bytearray) -> tuple[list[bytes], int]:
        bodies: list[bytes] = []
        offset = 0
        end = len(source)
        limit = self.max_frame_bytes
        with memoryview(source) as view:
            while end - offset >= HEADER_BYTES:
                length = int.from_bytes(view[offset : offset + HEADER_BYTES], "big")
                _check_length(length, limit)
                start = offset + HEADER_BYTES
                if end - start < length:
                    break
                bodies.append(bytes(view[start : start + length]))
                offset = start + length
        return bodies, offset

    def __repr__(self) -> str:
        state = f"broken: {self._error}" if self._error is not None else "ok"
        return (
            f"<FrameDecoder [{self._frames} frames, {len(self._buffer):,} bytes buffered,"
            f" max {self.max_frame_bytes:,}] {state}>"
        )
