"""Drives the I/O-free wire handshake (``_wire.handshake``) over an asyncio stream.

Reads exactly one frame at a time (4-byte header, then the body), so not a single byte
that belongs to the traffic after ``Welcome`` is consumed here, and the post-handshake
decoder starts on a frame boundary. Before the peer has proved the secret it may send
frames of at most :data:`HANDSHAKE_MAX_FRAME_BYTES`, and the whole exchange must finish
within the timeout, so an unauthenticated stranger costs little memory and no socket for
long (slowloris).
"""

from __future__ import annotations

import asyncio

from phoenix_cluster._foundation.env import Clock
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.frames import HEADER_BYTES, FrameDecoder, pack_frames
from phoenix_cluster._wire.handshake import ClientHandshake, HandshakeResult, ServerHandshake
from phoenix_cluster._wire.messages import Frame, Refused
from phoenix_cluster.errors import PhoenixError, ProtocolError, error_from_code

from .base import ConnectionBroken
from .tasks import fail_after

__all__ = ["HANDSHAKE_MAX_FRAME_BYTES", "HandshakeTimeout", "perform_handshake"]

HANDSHAKE_MAX_FRAME_BYTES = 64 * 1024
"""Frame limit before the peer is authenticated: a Hello is tiny, so a stranger gets
64 KiB of our memory, not ``max_frame_bytes``."""


class HandshakeTimeout(ConnectionBroken):
    """The peer did not finish the handshake in time (slowloris, or a wedged peer)."""


async def perform_handshake(
    hs: ClientHandshake | ServerHandshake,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    clock: Clock,
    timeout_s: float,
    max_frame_bytes: int,
    address: str,
) -> HandshakeResult:
    """Run ``hs`` to completion; the caller closes the socket if this raises.

    A ``Refused`` explaining the failure is written before raising when there is
    something to say (the wire state machine queues one; bad framing gets one here).

    Raises:
        phx.AuthenticationError: a wrong secret, on whichever side found out.
        phx.ProtocolError: bad framing, an unexpected message, no common version.
        HandshakeTimeout: not finished within ``timeout_s``.
        ConnectionBroken: the peer hung up or the network failed (``definite=True``).
    """
    codec = WireCodec()
    try:
        async with fail_after(clock, timeout_s):
            return await _exchange(hs, reader, writer, codec, max_frame_bytes)
    except TimeoutError:
        raise HandshakeTimeout(
            f"handshake with {address} not completed within {timeout_s}s",
            peer=address,
            definite=True,
        ) from None
    except PhoenixError as exc:  # ours, or the peer's Refused turned back into its class
        raise error_from_code(exc.code, f"{exc.message} (peer {address})", definite=True) from exc
    except (OSError, EOFError) as exc:  # IncompleteReadError is an EOFError
        raise ConnectionBroken(
            f"{address} hung up during the handshake: {exc!r}", peer=address, definite=True
        ) from exc


async def _exchange(
    hs: ClientHandshake | ServerHandshake,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    codec: WireCodec,
    max_frame_bytes: int,
) -> HandshakeResult:
    decoder = FrameDecoder(min(HANDSHAKE_MAX_FRAME_BYTES, max_frame_bytes))

    def write(frames: list[Frame]) -> None:
        if frames and not writer.is_closing():
            writer.write(pack_frames([codec.encode(f) for f in frames]))

    write(hs.messages_to_send())  # our Hello, without waiting for the peer's
    await writer.drain()
    while True:
        header = await _read_exactly(reader, HEADER_BYTES, "a frame header")
        try:
            decoder.feed(header)  # checks the announced size before the body is read
            size = int.from_bytes(header, "big")
            (body,) = decoder.feed(await _read_exactly(reader, size, f"a {size:,}-byte frame"))
            try:
                msg = codec.decode(body)
            except ValueError as exc:  # e.g. invalid UTF-8 that escaped the codec
                raise ProtocolError(f"invalid frame body of {len(body):,} bytes: {exc}") from exc
        except ProtocolError as exc:  # below the state machine: tell the peer, then fail
            write([Refused(code=exc.code, message=exc.message)])
            raise
        try:
            result = hs.receive(msg)
        finally:
            write(hs.messages_to_send())  # the next step, or the Refused queued on failure
        await writer.drain()
        if result is not None:
            return result


async def _read_exactly(reader: asyncio.StreamReader, n: int, what: str) -> bytes:
    """``readexactly``, but a peer that hangs up mid-frame is bad input, not a goodbye."""
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial and what == "a frame header":
            raise  # a clean hang-up between frames
        raise ProtocolError(
            f"truncated frame: the peer closed after {len(exc.partial):,} of the "
            f"{n:,} bytes of {what}") from exc
