"""QuicTransport: the TCP transport's behaviour over one QUIC stream, and QUIC bad input."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aioquic")

from transport_helpers import SECRET, echo, make_call, make_cast, read_until_closed

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._transport.base import ConnectionBroken, PeerConnection
from phoenix_cluster._transport.quic import QuicTransport
from phoenix_cluster._transport.tcp import parse_address
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.frames import FrameDecoder, pack_frames
from phoenix_cluster._wire.handshake import ClientHandshake
from phoenix_cluster._wire.messages import Call, Cast, Reply
from phoenix_cluster.errors import AuthenticationError, ConfigError, Overloaded
from phoenix_cluster.testing import wait_until

LOGGER = "phoenix_cluster.transport"
MakeQuic = Callable[..., QuicTransport]


@pytest.fixture
async def make() -> AsyncIterator[MakeQuic]:
    made: list[QuicTransport] = []

    def make(name: str, *, secret: bytes = SECRET, handler: Any = echo,
             max_frame_bytes: int = 1 << 20, **kw: Any) -> QuicTransport:
        t = QuicTransport(name, 1, secret, env=Env(), bus=TelemetryBus(),
                          max_frame_bytes=max_frame_bytes, handler=handler, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        await t.aclose()


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


async def assert_serves(addr: str, make: MakeQuic, name: str, **kw: Any) -> None:
    conn = await make(name, **kw).connect(addr)
    assert await conn.request(make_call(99, b"still here"), timeout_s=5) == Reply(99,
                                                                                   b"still here")


async def test_request_reply_both_ways_over_one_quic_stream(make: MakeQuic) -> None:
    a, b = make("alpha"), make("beta")
    addr = await b.start("127.0.0.1:0")
    conn = await a.connect(addr)
    assert (conn.peer_name, conn.peer_address) == ("beta", addr)
    assert await conn.request(make_call(1, b"hello"), timeout_s=5) == Reply(1, b"hello")
    (back,) = b.connections()
    assert back.peer_name == "alpha" and not back.outbound
    assert await back.request(make_call(2, b"back"), timeout_s=5) == Reply(2, b"back")
    assert await a.connect(addr) is conn
    assert "QuicTransport alpha" in repr(a) and "1 connections" in repr(a)


async def test_thousand_concurrent_requests_and_ordered_casts(make: MakeQuic) -> None:
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


async def test_large_messages_cross_the_flow_control_window(make: MakeQuic) -> None:
    a, b = make("alpha", max_frame_bytes=8 << 20), make("beta", max_frame_bytes=8 << 20)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    big = bytes(range(256)) * (6 * 1024)  # 1.5 MiB: more than a window each way
    replies = await asyncio.gather(*(conn.request(make_call(i, big), timeout_s=30)
                                     for i in range(2)))
    assert all(r == Reply(i, big) for i, r in enumerate(replies))


async def test_wrong_secret_is_refused_on_both_sides(
    make: MakeQuic, caplog: pytest.LogCaptureFixture
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
    make: MakeQuic, caplog: pytest.LogCaptureFixture
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


async def test_garbage_after_the_handshake_closes_only_that_connection(make: MakeQuic) -> None:
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


async def test_a_second_stream_closes_that_connection(
    make: MakeQuic, caplog: pytest.LogCaptureFixture
) -> None:
    server = make("server")
    addr = await server.start("127.0.0.1:0")
    raw = make("raw")
    reader, writer = await raw._open_stream(addr)
    await authenticate(reader, writer, "buggy")
    await wait_until(lambda: server.statistics().connections == 1)
    (carrier,) = raw.carriers()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        carrier._quic.send_stream_data(4, b"sneaky")  # the next client bidi stream
        carrier.transmit()
        await read_until_closed(reader)
        await wait_until(lambda: server.statistics().connections == 0)
    writer.close()
    assert "unexpected QUIC stream 4" in caplog.text
    assert server.statistics().protocol_errors == 1
    await assert_serves(addr, make, "friend")


async def test_udp_garbage_is_ignored(make: MakeQuic) -> None:
    server = make("server")
    addr = await server.start("127.0.0.1:0")
    rng = random.Random(7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for size in (1, 20, 1200, 1500):
            s.sendto(rng.randbytes(size), parse_address(addr))
        s.sendto(b"GET / HTTP/1.1\r\n\r\n", parse_address(addr))
    await assert_serves(addr, make, "friend")
    assert server.statistics().connections == 1


async def test_silent_client_is_dropped_after_the_handshake_timeout(
    make: MakeQuic, caplog: pytest.LogCaptureFixture
) -> None:
    server = make("server", handshake_timeout_s=0.3)
    addr = await server.start("127.0.0.1:0")
    reader, writer = await make("raw")._open_stream(addr)  # TLS done, no stream opened
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await read_until_closed(reader, timeout=5)
        await wait_until(lambda: server.statistics().handshake_failures == 1)
    writer.close()
    assert "no QUIC stream within 0.3s" in caplog.text
    await assert_serves(addr, make, "friend")


async def test_backpressure_through_quic_flow_control(make: MakeQuic) -> None:
    release, got = asyncio.Event(), []

    async def slow_consumer(peer: PeerConnection, frame: Call | Cast) -> None:
        await release.wait()
        got.append(frame.request_id)

    a = make("alpha", send_queue_frames=16, send_timeout_s=0.2)
    b = make("beta", handler=slow_consumer, max_inbound_tasks=4)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    payload = b"p" * 128 * 1024
    t0 = time.monotonic()
    accepted, exc, waited = await fill_until_overloaded(conn, payload)
    assert waited >= 0.19 and "stayed full" in exc.message and exc.definite
    # The receiver stopped granting credit: a window plus the queues, not everything.
    assert 16 <= accepted < 200, accepted
    assert time.monotonic() - t0 < 10
    assert conn.is_open
    release.set()
    await wait_until(lambda: len(got) == accepted, timeout=20, what="every accepted cast")
    assert sorted(got) == list(range(accepted))


async def fill_until_overloaded(
    conn: PeerConnection, payload: bytes
) -> tuple[int, Overloaded, float]:
    for i in range(100_000):
        t0 = time.monotonic()
        try:
            await conn.send(make_cast(i, payload))
        except Overloaded as exc:
            return i, exc, time.monotonic() - t0
    raise AssertionError("the send queue never filled up")


async def test_peer_shutdown_fails_pending_fast_and_dead_port_fails_fast(
    make: MakeQuic,
) -> None:
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
    # Nobody listens on the UDP port any more: ICMP says so at once, no 5 s timeout.
    with pytest.raises(ConnectionBroken, match=f"cannot connect to {addr}") as info:
        await a.connect(addr)
    assert info.value.definite is True
    assert time.monotonic() - t0 < 3


async def test_given_certificate_is_verified_against_the_given_ca(
    make: MakeQuic, tls_files: dict[str, Path]
) -> None:
    server = make("server", tls_cert=tls_files["server.pem"], tls_key=tls_files["server.key"])
    addr = await server.start("127.0.0.1:0")
    conn = await make("client", tls_ca=tls_files["ca.pem"]).connect(addr)
    assert await conn.request(make_call(1, b"verified"), timeout_s=5) == Reply(1, b"verified")
    ephemeral = make("ephemeral")
    other = await ephemeral.start("127.0.0.1:0")
    with pytest.raises(AuthenticationError, match="TLS handshake"):
        await make("strict", tls_ca=tls_files["ca.pem"]).connect(other)
    await assert_serves(other, make, "lenient")  # no TLS settings: the secret authenticates
    with pytest.raises(AuthenticationError, match="TLS handshake"):  # system CAs only
        await make("system", tls_cert=tls_files["client.pem"],
                   tls_key=tls_files["client.key"]).connect(addr)
    with pytest.raises(ConfigError):
        make("bad", tls_key=tls_files["server.key"])
    with pytest.raises(ConfigError):
        make("bad", max_datagram_bytes=100)


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
