"""TcpTransport basics: calls, casts, multiplexing, handler errors, timeouts, telemetry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import pytest
from transport_helpers import MakeTransport, echo, make_call, make_cast

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._transport.base import ConnectionClosed, PeerConnection
from phoenix_cluster._transport.tcp import TcpTransport, parse_address
from phoenix_cluster._wire.messages import Call, Cast, Error, Reply
from phoenix_cluster.errors import CallTimeout, ConfigError, NodeClosed, ProtocolError
from phoenix_cluster.testing import wait_until


async def test_request_reply_round_trip_both_ways(make_transport: MakeTransport) -> None:
    seen: list[str] = []

    async def named_echo(peer: PeerConnection, frame: Call | Cast) -> Reply | None:
        seen.append(peer.peer_name)
        return await echo(peer, frame)

    a = make_transport("alpha", handler=named_echo)
    b = make_transport("beta", handler=named_echo)
    b_addr = await b.start("127.0.0.1:0")
    assert parse_address(b_addr)[1] != 0

    conn = await a.connect(b_addr)
    assert (conn.peer_name, conn.peer_address) == ("beta", b_addr)
    reply = await conn.request(make_call(1, b"hello"), timeout_s=5)
    assert reply == Reply(request_id=1, payload=b"hello")

    # The accepted side talks back over the same connection: one per peer pair.
    (back,) = b.connections()
    assert back.peer_name == "alpha" and not back.outbound
    assert await back.request(make_call(2, b"back"), timeout_s=5) == Reply(2, b"back")
    assert seen == ["alpha", "beta"]
    assert a.statistics().connections == b.statistics().connections == 1
    assert await a.connect(b_addr) is conn  # reused, not redialled
    assert a.statistics().dial_attempts == 1
    assert "alpha -> beta" in repr(conn) and "open" in repr(conn)
    assert "1 connections" in repr(a)


async def test_thousand_concurrent_requests_multiplexed(make_transport: MakeTransport) -> None:
    async def slow_echo(peer: PeerConnection, frame: Call | Cast) -> Reply | None:
        assert isinstance(frame, Call)
        for _ in range(frame.request_id % 7):  # finish out of order
            await asyncio.sleep(0)
        return Reply(request_id=frame.request_id, payload=frame.payload * 2)

    a = make_transport("alpha")
    b = make_transport("beta", handler=slow_echo)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    ids = range(1, 1001)
    replies = await asyncio.gather(
        *(conn.request(make_call(i, str(i).encode()), timeout_s=30) for i in ids)
    )
    for i, reply in zip(ids, replies, strict=True):
        assert reply == Reply(request_id=i, payload=str(i).encode() * 2)
    stats = conn.statistics()
    assert stats.frames_sent == 1000 and stats.frames_received == 1000
    assert stats.writes < stats.frames_sent / 10, "writes were not coalesced"
    assert stats.pending_requests == 0
    assert a.statistics().connections == 1


async def test_casts_are_delivered_in_order(make_transport: MakeTransport) -> None:
    got: list[int] = []

    async def record(peer: PeerConnection, frame: Call | Cast) -> None:
        got.append(frame.request_id)

    a = make_transport("alpha")
    b = make_transport("beta", handler=record)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    for i in range(500):
        await conn.send(make_cast(i))
    await wait_until(lambda: len(got) == 500, what="500 casts delivered")
    assert got == list(range(500))


async def test_handler_exception_is_an_internal_error_reply(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    async def flaky(peer: PeerConnection, frame: Call | Cast) -> Reply | None:
        if frame.method == "boom":
            raise RuntimeError("kaboom")
        return await echo(peer, frame)

    a = make_transport("alpha")
    b = make_transport("beta", handler=flaky)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    with caplog.at_level(logging.ERROR, logger="phoenix_cluster.transport"):
        err = await conn.request(make_call(1, method="boom"), timeout_s=5)
    assert isinstance(err, Error)
    assert (err.request_id, err.code, err.definite) == (1, "internal_error", False)
    assert "RuntimeError: kaboom" in err.message
    assert any("kaboom" in str(r.exc_info) for r in caplog.records if r.exc_info)
    # The connection survived.
    assert await conn.request(make_call(2, b"ok"), timeout_s=5) == Reply(2, b"ok")


async def test_handler_returning_nothing_to_a_call_is_an_error(
    make_transport: MakeTransport,
) -> None:
    async def silent(peer: PeerConnection, frame: Call | Cast) -> None:
        return None

    a = make_transport("alpha")
    b = make_transport("beta", handler=silent)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    err = await conn.request(make_call(7), timeout_s=5)
    assert isinstance(err, Error) and err.code == "internal_error" and err.request_id == 7


async def test_call_timeout_then_connection_still_works(make_transport: MakeTransport) -> None:
    release = asyncio.Event()

    async def stuck(peer: PeerConnection, frame: Call | Cast) -> Reply | None:
        if frame.method == "stuck":
            await release.wait()
        return await echo(peer, frame)

    a = make_transport("alpha")
    b = make_transport("beta", handler=stuck)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    with pytest.raises(CallTimeout) as info:
        await conn.request(make_call(1, method="stuck"), timeout_s=0.05)
    assert info.value.request_id == 1 and info.value.definite is False
    release.set()  # the late reply arrives and is ignored
    assert await conn.request(make_call(2, b"x"), timeout_s=5) == Reply(2, b"x")
    assert conn.statistics().pending_requests == 0


async def test_calls_beyond_the_inbound_cap_are_refused_as_overloaded(
    make_transport: MakeTransport,
) -> None:
    release = asyncio.Event()

    async def stuck(peer: PeerConnection, frame: Call | Cast) -> Reply | None:
        await release.wait()
        return await echo(peer, frame)

    a = make_transport("alpha")
    b = make_transport("beta", handler=stuck, max_inbound_tasks=2)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    first = [asyncio.ensure_future(conn.request(make_call(i), timeout_s=5)) for i in (1, 2)]
    await wait_until(lambda: b.connections()[0].statistics().inbound_tasks == 2)
    refused = await conn.request(make_call(3), timeout_s=5)
    assert isinstance(refused, Error) and refused.code == "overloaded" and refused.definite
    release.set()
    assert [r.request_id for r in await asyncio.gather(*first)] == [1, 2]


async def test_concurrent_connects_share_one_dial(make_transport: MakeTransport) -> None:
    a = make_transport("alpha")
    b = make_transport("beta")
    addr = await b.start("127.0.0.1:0")
    conns = await asyncio.gather(*(a.connect(addr) for _ in range(20)))
    assert all(c is conns[0] for c in conns)
    assert a.statistics().dial_attempts == 1


async def test_oversized_outgoing_message_fails_only_that_call(
    make_transport: MakeTransport,
) -> None:
    a = make_transport("alpha", max_frame_bytes=1024)
    b = make_transport("beta")
    conn = await a.connect(await b.start("127.0.0.1:0"))
    with pytest.raises(ProtocolError, match="exceeds max_frame_bytes 1,024"):
        await conn.request(make_call(1, b"x" * 2000), timeout_s=5)
    assert await conn.request(make_call(2, b"small"), timeout_s=5) == Reply(2, b"small")


async def test_telemetry_events_only_with_handlers(make_transport: MakeTransport) -> None:
    bus = TelemetryBus()
    seen: list[tuple[tuple[str, ...], float, str, str]] = []

    def on_event(name: tuple[str, ...], m: Mapping[str, float], md: Mapping[str, object]) -> None:
        seen.append((name, m["bytes"], str(md["node"]), str(md["peer"])))

    a = make_transport("alpha", bus=bus)
    b = make_transport("beta")
    conn = await a.connect(await b.start("127.0.0.1:0"))
    await conn.request(make_call(1, b"12345"), timeout_s=5)
    assert seen == []  # nobody listening: nothing built
    bus.attach("t", [events.TRANSPORT_MESSAGE_SENT, events.TRANSPORT_MESSAGE_RECEIVED], on_event)
    await conn.request(make_call(2, b"12345"), timeout_s=5)
    await wait_until(lambda: len(seen) == 2)
    by_name = {name: (size, node, peer) for name, size, node, peer in seen}
    sent = by_name[events.TRANSPORT_MESSAGE_SENT]
    received = by_name[events.TRANSPORT_MESSAGE_RECEIVED]
    assert sent[1:] == received[1:] == ("alpha", "beta")
    assert sent[0] > 5 and received[0] > 5  # frame bytes, header included


async def test_closed_connection_and_transport_refuse_work(make_transport: MakeTransport) -> None:
    a = make_transport("alpha")
    b = make_transport("beta")
    addr = await b.start("127.0.0.1:0")
    conn = await a.connect(addr)
    conn.close()
    with pytest.raises(ConnectionClosed) as info:
        await conn.request(make_call(1), timeout_s=5)
    assert info.value.definite is True
    await conn.wait_closed()
    assert conn.state == "closed"
    # A new connect dials again.
    conn2 = await a.connect(addr)
    assert conn2 is not conn and conn2.is_open
    await a.aclose()
    await a.aclose()  # idempotent
    with pytest.raises(NodeClosed):
        await a.connect(addr)
    assert "closed" in repr(a)


async def test_bad_settings_are_config_errors() -> None:
    def make(**kw: object) -> TcpTransport:
        return TcpTransport("n", 1, b"s", env=Env(), bus=TelemetryBus(), max_frame_bytes=1024,
                            handler=echo, **kw)  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match="send_queue_frames"):
        make(send_queue_frames=0)
    with pytest.raises(ConfigError, match="unknown transport option"):
        make(no_such_option=1)
    with pytest.raises(ConfigError):
        TcpTransport("n", 1, b"", env=Env(), bus=TelemetryBus(), max_frame_bytes=1024,
                     handler=echo)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_address("no-port")


def test_round_trip_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        a = TcpTransport("alpha", 1, b"s", env=Env(), bus=TelemetryBus(), max_frame_bytes=1 << 20,
                         handler=echo)
        b = TcpTransport("beta", 1, b"s", env=Env(), bus=TelemetryBus(), max_frame_bytes=1 << 20,
                         handler=echo)
        try:
            conn = await a.connect(await b.start("127.0.0.1:0"))
            replies = await asyncio.gather(
                *(conn.request(make_call(i, b"u"), timeout_s=10) for i in range(200))
            )
            assert [r.request_id for r in replies] == list(range(200))
            await conn.send(make_cast(1))
        finally:
            await a.aclose()
            await b.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
