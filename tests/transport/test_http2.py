"""Http2Transport: the TCP transport's behaviour over one HTTP/2 stream, and HTTP/2 bad input."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("h2")

from transport_helpers import (
    SECRET,
    close_raw,
    echo,
    make_call,
    make_cast,
    open_raw,
    read_until_closed,
)

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._transport.base import ConnectionBroken, PeerConnection
from phoenix_cluster._transport.http2 import Http2Transport
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.frames import FrameDecoder, pack_frames
from phoenix_cluster._wire.handshake import ClientHandshake
from phoenix_cluster._wire.messages import Call, Cast, Reply
from phoenix_cluster.errors import AuthenticationError, Overloaded
from phoenix_cluster.testing import wait_until

LOGGER = "phoenix_cluster.transport"
MakeH2 = Callable[..., Http2Transport]


@pytest.fixture
async def make() -> AsyncIterator[MakeH2]:
    made: list[Http2Transport] = []

    def make(name: str, *, secret: bytes = SECRET, handler: Any = echo,
             max_frame_bytes: int = 1 << 20, **kw: Any) -> Http2Transport:
        t = Http2Transport(name, 1, secret, env=Env(), bus=TelemetryBus(),
                           max_frame_bytes=max_frame_bytes, handler=handler, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        await t.aclose()


async def fill_until_overloaded(
    conn: PeerConnection, payload: bytes
) -> tuple[int, Overloaded, float]:
    """Send casts until one is refused; return (accepted, the error, seconds the last waited)."""
    for i in range(100_000):
        t0 = time.monotonic()
        try:
            await conn.send(make_cast(i, payload))
        except Overloaded as exc:
            return i, exc, time.monotonic() - t0
    raise AssertionError("the send queue never filled up")


async def authenticate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       name: str) -> None:
    """Run the real client handshake on a raw stream pair: an authenticated, buggy peer."""
    codec, decoder = WireCodec(), FrameDecoder()
    hs = ClientHandshake(secret=SECRET, node=name, incarnation=1)
    writer.write(pack_frames([codec.encode(m) for m in hs.messages_to_send()]))
    result = None
    while result is None:
        data = await reader.read(65536)
        assert data, "server closed during the handshake"
        for body in decoder.feed(data):
            result = hs.receive(codec.decode(body))
            if out := hs.messages_to_send():
                writer.write(pack_frames([codec.encode(m) for m in out]))
            if result is not None:
                break


async def assert_serves(addr: str, make: MakeH2, name: str) -> None:
    conn = await make(name).connect(addr)
    assert await conn.request(make_call(99, b"still here"), timeout_s=5) == Reply(99,
                                                                                   b"still here")


async def test_request_reply_both_ways_over_one_http2_stream(make: MakeH2) -> None:
    a, b = make("alpha"), make("beta")
    addr = await b.start("127.0.0.1:0")
    conn = await a.connect(addr)
    assert (conn.peer_name, conn.peer_address) == ("beta", addr)
    assert await conn.request(make_call(1, b"hello"), timeout_s=5) == Reply(1, b"hello")
    (back,) = b.connections()
    assert back.peer_name == "alpha" and not back.outbound
    assert await back.request(make_call(2, b"back"), timeout_s=5) == Reply(2, b"back")
    assert await a.connect(addr) is conn
    assert "Http2Transport alpha" in repr(a) and "1 connections" in repr(a)
    (carrier,) = a.carriers()
    assert "client" in repr(carrier) and "stream 1" in repr(carrier)


async def test_thousand_concurrent_requests_and_ordered_casts(make: MakeH2) -> None:
    got: list[int] = []

    async def handler(peer: PeerConnection, frame: Call | Cast) -> Reply | None:
        if isinstance(frame, Cast):
            got.append(frame.request_id)
            return None
        for _ in range(frame.request_id % 7):  # finish out of order
            await asyncio.sleep(0)
        return Reply(frame.request_id, frame.payload * 2)

    a, b = make("alpha"), make("beta", handler=handler)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    ids = range(1, 1001)
    replies = await asyncio.gather(*(conn.request(make_call(i, str(i).encode()), timeout_s=30)
                                     for i in ids))
    assert replies == [Reply(i, str(i).encode() * 2) for i in ids]
    stats = conn.statistics()
    assert stats.frames_sent == 1000 and stats.pending_requests == 0
    assert stats.writes < stats.frames_sent / 10, "writes were not coalesced"
    for i in range(500):
        await conn.send(make_cast(i, b"c" * 100))
    await wait_until(lambda: len(got) == 500, what="500 casts delivered")
    assert got == list(range(500))


async def test_large_messages_cross_the_flow_control_window(make: MakeH2) -> None:
    a, b = make("alpha", max_frame_bytes=8 << 20), make("beta", max_frame_bytes=8 << 20)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    big = bytes(range(256)) * (6 * 1024)  # 1.5 MiB: more than a window each way
    replies = await asyncio.gather(*(conn.request(make_call(i, big), timeout_s=30)
                                     for i in range(2)))
    assert all(r == Reply(i, big) for i, r in enumerate(replies))


async def test_wrong_secret_is_refused_on_both_sides(
    make: MakeH2, caplog: pytest.LogCaptureFixture
) -> None:
    server = make("server")
    addr = await server.start("127.0.0.1:0")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(AuthenticationError):
            await make("intruder", secret=b"not-the-secret").connect(addr)
        await wait_until(lambda: server.statistics().auth_failures == 1)
    assert "refused connection from 127.0.0.1:" in caplog.text
    assert server.statistics().connections == 0
    await assert_serves(addr, make, "friend")


async def test_oversized_frame_after_the_handshake_closes_only_that_connection(
    make: MakeH2, caplog: pytest.LogCaptureFixture
) -> None:
    server = make("server", max_frame_bytes=8 * 1024 * 1024)
    addr = await server.start("127.0.0.1:0")
    reader, writer = await make("raw")._open_stream(addr)
    await authenticate(reader, writer, "buggy")
    await wait_until(lambda: server.statistics().connections == 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        writer.write((9 * 1024 * 1024).to_bytes(4, "big"))  # announces 9 MiB, sends nothing
        await read_until_closed(reader)
        await wait_until(lambda: server.statistics().connections == 0)
    writer.close()
    assert "frame of 9,437,184 bytes exceeds max_frame_bytes 8,388,608" in caplog.text
    assert server.statistics().protocol_errors == 1
    await assert_serves(addr, make, "friend")


async def test_garbage_after_the_handshake_closes_only_that_connection(make: MakeH2) -> None:
    server = make("server")
    addr = await server.start("127.0.0.1:0")
    reader, writer = await make("raw")._open_stream(addr)
    await authenticate(reader, writer, "buggy")
    writer.write(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # a frame that is never valid msgpack
    await read_until_closed(reader)
    writer.close()
    await wait_until(lambda: server.statistics().protocol_errors == 1)
    await wait_until(lambda: server.statistics().connections == 0)
    await assert_serves(addr, make, "friend")


@pytest.mark.parametrize(
    ("garbage", "expect"),
    [
        (b"GET / HTTP/1.1\r\nHost: node\r\n\r\n", "invalid HTTP/2"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, "invalid HTTP/2"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64, "invalid HTTP/2"),
    ],
    ids=["http1-request", "tls-hello", "preface-then-garbage"],
)
async def test_non_http2_input_closes_that_connection(
    make: MakeH2, caplog: pytest.LogCaptureFixture, garbage: bytes, expect: str
) -> None:
    server = make("server")
    addr = await server.start("127.0.0.1:0")
    reader, writer = await open_raw(addr)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        writer.write(garbage)
        await read_until_closed(reader)
        await wait_until(lambda: server.statistics().protocol_errors == 1)
    await close_raw(writer)
    assert expect in caplog.text and "from 127.0.0.1:" in caplog.text
    await assert_serves(addr, make, "friend")


async def test_wrong_path_gets_404_and_a_second_stream_is_refused(make: MakeH2) -> None:
    import h2.config
    import h2.connection
    import h2.events

    server = make("server")
    addr = await server.start("127.0.0.1:0")
    reader, writer = await open_raw(addr)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", addr),
                            (":path", "/")], end_stream=True)
    writer.write(client.data_to_send())
    statuses = []
    for event in client.receive_data(await read_until_closed(reader)):
        if isinstance(event, h2.events.ResponseReceived):
            statuses.append(dict(event.headers)[b":status"])
    await close_raw(writer)
    assert statuses == [b"404"]
    await wait_until(lambda: server.statistics().protocol_errors == 1)
    await assert_serves(addr, make, "friend")


async def test_silent_client_is_dropped_after_the_handshake_timeout(
    make: MakeH2, caplog: pytest.LogCaptureFixture
) -> None:
    server = make("server", handshake_timeout_s=0.2)
    addr = await server.start("127.0.0.1:0")
    reader, writer = await open_raw(addr)
    writer.write(b"PRI * HTTP/2.0\r\n")  # half a preface, then nothing
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await read_until_closed(reader, timeout=5)
        await wait_until(lambda: server.statistics().handshake_failures == 1)
    await close_raw(writer)
    assert "no HTTP/2 request within 0.2s" in caplog.text
    await assert_serves(addr, make, "friend")


async def test_backpressure_through_http2_flow_control(make: MakeH2) -> None:
    release, got = asyncio.Event(), []

    async def slow_consumer(peer: PeerConnection, frame: Call | Cast) -> None:
        await release.wait()
        got.append(frame.request_id)

    a = make("alpha", send_queue_frames=16, send_timeout_s=0.2)
    b = make("beta", handler=slow_consumer, max_inbound_tasks=4)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    accepted, exc, waited = await fill_until_overloaded(conn, b"p" * 128 * 1024)
    assert waited >= 0.19 and "stayed full" in exc.message and exc.definite
    assert 16 <= accepted < 200  # bounded by the window, not by memory
    assert conn.is_open
    release.set()
    await wait_until(lambda: len(got) == accepted, timeout=20, what="every accepted cast")
    assert sorted(got) == list(range(accepted))


async def test_peer_shutdown_fails_pending_fast_and_dead_port_is_definite(make: MakeH2) -> None:
    async def never(peer: PeerConnection, frame: Call | Cast) -> None:
        await asyncio.Event().wait()

    a, b = make("alpha"), make("beta", handler=never)
    addr = await b.start("127.0.0.1:0")
    conn = await a.connect(addr)
    pending = asyncio.ensure_future(conn.request(make_call(1), timeout_s=30))
    await wait_until(lambda: conn.statistics().pending_requests == 1)
    t0 = time.monotonic()
    await b.aclose()
    with pytest.raises(ConnectionBroken):
        await pending
    assert time.monotonic() - t0 < 3
    with pytest.raises(ConnectionBroken, match=f"cannot connect to {addr}") as info:
        await a.connect(addr)
    assert info.value.definite is True


async def test_http2_over_tls(make: MakeH2, tls_files: dict[str, Path]) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_files["server.pem"], tls_files["server.key"])
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                            cafile=str(tls_files["ca.pem"]))
    server = make("server", ssl_server=server_ctx)
    addr = await server.start("127.0.0.1:0")
    conn = await make("client", ssl_client=client_ctx).connect(addr)
    replies = await asyncio.gather(*(conn.request(make_call(i, b"tls"), timeout_s=5)
                                     for i in range(100)))
    assert [r.request_id for r in replies] == list(range(100))
    with pytest.raises(AuthenticationError, match="TLS certificate"):
        await make("strict", ssl_client=ssl.create_default_context()).connect(addr)


async def test_crossing_dials_leave_one_connection_and_lose_nothing(make: Any) -> None:
    low, high = make("alpha"), make("beta")
    low_addr, high_addr = await low.start("127.0.0.1:0"), await high.start("127.0.0.1:0")
    conn_low, conn_high = await asyncio.gather(low.connect(high_addr), high.connect(low_addr))

    async def traffic(conn: PeerConnection, base: int) -> list[int]:
        replies = await asyncio.gather(*(conn.request(make_call(base + i), timeout_s=10)
                                         for i in range(50)))
        return [r.request_id for r in replies]

    got = await asyncio.gather(traffic(conn_low, 0), traffic(conn_high, 1000))
    assert list(got) == [list(range(50)), list(range(1000, 1050))]
    await wait_until(lambda: low.statistics().connections == high.statistics().connections == 1,
                     what="duplicates retired")
    (kept,) = low.connections()
    assert kept.outbound and kept.is_open  # the one the lower name dialled
    for i, conn in enumerate((conn_low, conn_high)):
        assert (await conn.request(make_call(5000 + i), timeout_s=5)).request_id == 5000 + i
    await wait_until(lambda: len(low.carriers()) == len(high.carriers()) == 1,
                     what="the retired carrier closed")
