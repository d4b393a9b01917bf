"""Checking each HTTP/2 frame's announced length as soon as its header arrives.

h2 buffers a frame's whole body before it checks the length against ``MAX_FRAME_SIZE``;
checking the 9-byte headers as they stream past means a peer announcing a huge frame
loses its connection before we buffer any of it, as with our own framing
(``docs/design/wire.md``). :class:`~.http2_carrier.H2Carrier` feeds it every chunk it
receives, before h2 sees it.
"""

from __future__ import annotations

__all__ = ["FRAME_HEADER_BYTES", "FrameLengthScan"]

FRAME_HEADER_BYTES = 9
"""An HTTP/2 frame header: 24-bit length, type, flags, stream id (RFC 9113, 4.1)."""


class FrameLengthScan:
    """Follows the frame boundaries of one HTTP/2 byte stream and checks each length.

    Args:
        limit: the largest frame length allowed (our ``MAX_FRAME_SIZE``).
        skip: bytes before the first frame header (the client preface, server side).
    """

    __slots__ = ("_head", "_skip", "limit")

    def __init__(self, limit: int, *, skip: int = 0) -> None:
        self.limit = limit
        self._skip = skip  # bytes until the next frame header starts
        self._head = b""  # the part of a frame header received so far

    def feed(self, data: bytes) -> str | None:
        """Scan the next chunk of the stream: why it is invalid, or ``None``."""
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            need = FRAME_HEADER_BYTES - len(self._head)
            self._head += data[i:i + need]
            i += need
            if len(self._head) < FRAME_HEADER_BYTES:
                break
            length = int.from_bytes(self._head[:3], "big")
            self._head = b""
            if length > self.limit:
                return (f"invalid HTTP/2: frame of {length:,} bytes exceeds MAX_FRAME_SIZE"
                        f" {self.limit:,}")
            self._skip = length
        return None
