"""Nodes of different protocol versions against a real TCP transport (docs/compatibility.md).

The current release speaks protocol 1 only. A next release that adds version 2 and still
speaks 1 must interoperate with it; a release that speaks only 2 must be refused with an
error that names both sides' versions, and the node must keep serving. The peer of the
other release is played by a raw socket driving the real handshake with another
version list.
"""

from __future__ import annotations

import asyncio

from transport_helpers import (
    SECRET,
    MakeTransport,
    close_raw,
    make_call,
    open_raw,
    read_until_closed,
)

from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.frames import FrameDecoder, encode_frame
from phoenix_cluster._wire.handshake import ClientHandshake, HandshakeResult
from phoenix_cluster._wire.messages import SUPPORTED_VERSIONS, Refused, Reply
from phoenix_cluster.errors import PhoenixError

NEXT_RELEASE = (*SUPPORTED_VERSIONS, max(SUPPORTED_VERSIONS) + 1)
FUTURE_ONLY = (max(SUPPORTED_VERSIONS) + 1,)


async def handshake(address: str, versions: tuple[int, ...]) -> tuple[
        HandshakeResult | PhoenixError, asyncio.StreamReader, asyncio.StreamWriter,
        list[object]]:
    """Run the client side of the handshake offering ``versions``: its result or error,
    the open socket, and every frame the server sent."""
    reader, writer = await open_raw(address)
    codec, decoder = WireCodec(), FrameDecoder()
    hs = ClientHandshake(secret=SECRET, node="other-release", incarnation=1,
                         versions=versions)
    received: list[object] = []

    def flush() -> None:
        for message in hs.messages_to_send():
            writer.write(encode_frame(codec.encode(message)))

    flush()
    async with asyncio.timeout(5):
        while True:
            data = await reader.read(65536)
            if not data:
                raise AssertionError(f"server closed the connection; it sent {received}")
            for body in decoder.feed(data):
                frame = codec.decode(body)
                received.append(frame)
                try:
                    result = hs.receive(frame)
                except PhoenixError as exc:
                    flush()  # our Refused; then read what the server says until it hangs up
                    rest = await read_until_closed(reader)
                    received += [codec.decode(b) for b in decoder.feed(rest)]
                    return exc, reader, writer, received
                flush()
                if result is not None:
                    return result, reader, writer, received


async def test_a_release_that_adds_a_version_talks_to_this_one(
        make_transport: MakeTransport) -> None:
    server = make_transport("current")
    address = await server.start("127.0.0.1:0")
    outcome, reader, writer, _ = await handshake(address, NEXT_RELEASE)
    assert isinstance(outcome, HandshakeResult)
    assert outcome.version == max(SUPPORTED_VERSIONS)  # the highest both speak
    writer.write(encode_frame(WireCodec().encode(make_call(7, b"across releases"))))
    decoder, codec = FrameDecoder(), WireCodec()
    async with asyncio.timeout(5):
        replies: list[object] = []
        while not replies:
            replies = [codec.decode(b) for b in decoder.feed(await reader.read(65536))]
    assert replies == [Reply(7, b"across releases")]
    await close_raw(writer)


async def test_a_release_without_a_common_version_is_refused_clearly(
        make_transport: MakeTransport) -> None:
    server = make_transport("current")
    address = await server.start("127.0.0.1:0")
    outcome, _, writer, received = await handshake(address, FUTURE_ONLY)
    # Both sides say which versions each speaks.
    ours, theirs = list(SUPPORTED_VERSIONS), list(FUTURE_ONLY)
    assert isinstance(outcome, PhoenixError)
    assert f"we speak {theirs}, peer speaks {ours}" in str(outcome)
    refusals = [f for f in received if isinstance(f, Refused)]
    assert len(refusals) == 1
    assert refusals[0].code == "protocol_error"
    assert f"we speak {ours}, peer speaks {theirs}" in refusals[0].message
    await close_raw(writer)
    # ...and keeps serving this release's peers.
    friend = make_transport("friend")
    conn = await friend.connect(address)
    assert await conn.request(make_call(1, b"ok"), timeout_s=5) == Reply(1, b"ok")
