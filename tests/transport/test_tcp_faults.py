"""Faults: simultaneous dials, dead and paused peers, restarts, and backpressure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from transport_helpers import MakeTransport, Proxy, echo, make_call, make_cast

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._resilience.backoff import Backoff
from phoenix_cluster._transport.base import ConnectionBroken, PeerConnection
from phoenix_cluster._transport.peers import PeerManager
from phoenix_cluster._wire.messages import Call, Cast, Reply
from phoenix_cluster.errors import Overloaded
from phoenix_cluster.testing import wait_until


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


def blocking_handler(release: asyncio.Event, started: list[int]) -> object:
    async def handler(peer: PeerConnection, frame: Call | Cast) -> Reply | None:
        started.append(frame.request_id)
        await release.wait()
        return await echo(peer, frame)

    return handler


@pytest.mark.parametrize("round_", range(8))
async def test_simultaneous_dial_leaves_exactly_one_connection(
    make_transport: MakeTransport, round_: int
) -> None:
    low, high = make_transport("alpha"), make_transport("beta")
    low_addr, high_addr = await low.start("127.0.0.1:0"), await high.start("127.0.0.1:0")
    # Both dial at once; each side also uses what it got right away.
    conn_low, conn_high = await asyncio.gather(low.connect(high_addr), high.connect(low_addr))

    async def traffic(conn: PeerConnection, base: int) -> list[int]:
        replies = await asyncio.gather(
            *(conn.request(make_call(base + i, b"x"), timeout_s=10) for i in range(50))
        )
        return [r.request_id for r in replies]

    got = await asyncio.gather(traffic(conn_low, 0), traffic(conn_high, 1000))
    assert list(got) == [list(range(50)), list(range(1000, 1050))]  # nothing lost in the tie-break
    await wait_until(lambda: low.statistics().connections == high.statistics().connections == 1,
                     what="duplicates retired")
    (kept_low,), (kept_high,) = low.connections(), high.connections()
    assert kept_low.outbound and not kept_high.outbound  # dialled by the lower name
    assert kept_low.is_open and kept_high.is_open
    # Whatever connection object a caller holds, new work still gets through.
    for i, conn in enumerate((conn_low, conn_high)):
        assert (await conn.request(make_call(5000 + i), timeout_s=5)).request_id == 5000 + i


async def test_dialling_a_peer_that_already_dialled_us_reuses_the_winner(
    make_transport: MakeTransport,
) -> None:
    low, high = make_transport("alpha"), make_transport("beta")
    low_addr, high_addr = await low.start("127.0.0.1:0"), await high.start("127.0.0.1:0")
    first = await low.connect(high_addr)  # alpha dials: this one wins
    second = await high.connect(low_addr)  # beta dials too: the duplicate retires
    assert second.peer_name == "alpha"
    assert (await second.request(make_call(1), timeout_s=5)).request_id == 1
    await wait_until(lambda: low.statistics().connections == high.statistics().connections == 1)
    assert low.connections() == [first]
    assert await high.connect(low_addr) is high.connections()[0]


async def test_retired_connection_finishes_its_in_flight_calls(
    make_transport: MakeTransport,
) -> None:
    release, started = asyncio.Event(), list[int]()
    low = make_transport("alpha", handler=blocking_handler(release, started))
    high = make_transport("beta", handler=blocking_handler(release, started))
    low_addr, high_addr = await low.start("127.0.0.1:0"), await high.start("127.0.0.1:0")
    loser = await high.connect(low_addr)  # beta dials first and starts using it
    in_flight = [asyncio.ensure_future(loser.request(make_call(i), timeout_s=30))
                 for i in range(10)]
    await wait_until(lambda: len(started) == 10)
    winner = await low.connect(high_addr)  # alpha dials too: its connection wins
    await wait_until(lambda: loser.state == "retiring", what="loser retired")
    assert winner.is_open and winner.outbound
    # New work through the old handle goes to the winner, even while the loser drains.
    forwarded = asyncio.ensure_future(loser.request(make_call(100), timeout_s=30))
    await wait_until(lambda: len(started) == 11)
    (high_winner,) = [c for c in high.connections() if c.is_open]
    assert not high_winner.outbound and high_winner.statistics().pending_requests == 1
    release.set()
    assert [r.request_id for r in await asyncio.gather(*in_flight)] == list(range(10))
    assert (await forwarded).request_id == 100
    await wait_until(lambda: low.statistics().connections == high.statistics().connections == 1)
    assert loser.state == "closed"


async def test_peer_shutdown_fails_pending_requests_fast(make_transport: MakeTransport) -> None:
    release, started = asyncio.Event(), list[int]()
    a = make_transport("alpha")
    b = make_transport("beta", handler=blocking_handler(release, started))
    conn = await a.connect(await b.start("127.0.0.1:0"))
    pending = [asyncio.ensure_future(conn.request(make_call(i), timeout_s=60)) for i in range(50)]
    await wait_until(lambda: len(started) == 50)
    t0 = time.monotonic()
    await b.aclose()  # Goodbye, then close
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert time.monotonic() - t0 < 2
    assert all(isinstance(r, ConnectionBroken) and not r.definite for r in results)
    assert {r.request_id for r in results if isinstance(r, ConnectionBroken)} == set(range(50))
    assert "shutdown" in str(results[0])
    await wait_until(lambda: a.statistics().connections == 0)


async def test_peer_shutdown_fails_the_requests_it_never_read_definite(
    make_transport: MakeTransport,
) -> None:
    """Its Goodbye says how many requests it read (like HTTP/2 GOAWAY): the ones after
    those never ran, so the sender may safely send them elsewhere."""
    release, started = asyncio.Event(), list[int]()
    a = make_transport("alpha")
    b = make_transport("beta", handler=blocking_handler(release, started), max_inbound_tasks=2)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    pending = [asyncio.ensure_future(conn.request(make_cast(i), timeout_s=60)) for i in range(5)]
    await wait_until(lambda: len(started) == 2)  # beta stops reading at its third cast
    await b.aclose()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(r, ConnectionBroken) for r in results), results
    definite = {r.request_id for r in results if isinstance(r, ConnectionBroken) and r.definite}
    assert definite == {2, 3, 4}  # never read; 0 and 1 ran (and were cancelled): unknown
    assert "did not read request 2" in str(results[2])


async def test_crashed_peer_fails_pending_and_reconnect_works_when_it_returns(
    make_transport: MakeTransport, make_proxy: Callable[[str], Proxy]
) -> None:
    release, started = asyncio.Event(), list[int]()
    a = make_transport("alpha")
    b = make_transport("beta", handler=blocking_handler(release, started))
    b_addr = await b.start("127.0.0.1:0")
    proxy = make_proxy(b_addr)
    via = await proxy.start()
    conn = await a.connect(via)
    pending = [asyncio.ensure_future(conn.request(make_call(i), timeout_s=60)) for i in range(20)]
    await wait_until(lambda: len(started) == 20)
    t0 = time.monotonic()
    proxy.kill()  # sockets reset, no goodbye: a crash or a pulled cable
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert time.monotonic() - t0 < 2
    assert all(isinstance(r, ConnectionBroken) for r in results)

    # The peer comes back at the same address: the manager's watch loop reconnects.
    port = int(b_addr.rsplit(":", 1)[1])
    await b.aclose()
    manager = PeerManager(a, env=Env(), backoff=Backoff(base_s=0.01, max_s=0.05),
                          failure_threshold=1000)
    manager.watch(b_addr)
    try:
        await wait_until(lambda: a.statistics().dial_attempts >= 3, what="redial attempts")
        b2 = make_transport("beta", incarnation=2)
        await b2.start(f"127.0.0.1:{port}")
        await wait_until(lambda: manager.statistics()[0].connected, what="reconnected")
        again = await manager.connection(b_addr)
        assert again.peer_incarnation == 2
        assert await again.request(make_call(1, b"back"), timeout_s=5) == Reply(1, b"back")
        # And when it drops again, the watch loop redials on its own.
        again.close()
        await wait_until(lambda: manager.statistics()[0].connects >= 2, what="redialled")
    finally:
        await manager.aclose()


async def test_keepalive_detects_a_paused_peer(
    make_transport: MakeTransport, make_proxy: Callable[[str], Proxy]
) -> None:
    a = make_transport("alpha", keepalive_interval_s=0.05, keepalive_timeout_s=0.4)
    b = make_transport("beta")
    proxy = make_proxy(await b.start("127.0.0.1:0"))
    conn = await a.connect(await proxy.start())
    # Idle but alive: pings keep it open well past the timeout.
    await asyncio.sleep(0)  # let the connection settle
    t_idle = time.monotonic()
    await wait_until(lambda: conn.statistics().frames_received >= 6, timeout=5,
                     what="pongs while idle")
    assert conn.is_open and time.monotonic() - t_idle > 0.2
    proxy.pause()  # the peer stops answering (SIGSTOP, a hung machine)
    t0 = time.monotonic()
    with pytest.raises(ConnectionBroken, match="keepalive"):
        await conn.request(make_call(1), timeout_s=30)
    assert time.monotonic() - t0 < 3
    await wait_until(lambda: a.statistics().connections == 0)


async def test_backpressure_send_waits_then_overloaded_and_nothing_is_dropped(
    make_transport: MakeTransport,
) -> None:
    release, got = asyncio.Event(), []

    async def slow_consumer(peer: PeerConnection, frame: Call | Cast) -> None:
        await release.wait()
        got.append(frame.request_id)

    a = make_transport("alpha", send_queue_frames=16, send_timeout_s=0.2)
    b = make_transport("beta", handler=slow_consumer, max_inbound_tasks=4)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    payload = b"p" * 128 * 1024
    accepted, exc, waited = await fill_until_overloaded(conn, payload)
    assert waited >= 0.19  # it waited for room before giving up
    assert "stayed full" in exc.message
    assert exc.definite is True and exc.request_id == accepted
    assert 16 <= accepted < 1000
    assert conn.is_open  # backpressure is not an error of the connection
    release.set()
    await wait_until(lambda: len(got) == accepted, timeout=20, what="every accepted cast")
    assert sorted(got) == list(range(accepted))
    await conn.send(make_cast(accepted, b"after"))  # room again
    await wait_until(lambda: len(got) == accepted + 1)


async def test_backpressure_longer_than_keepalive_timeout_is_not_a_dead_peer(
    make_transport: MakeTransport,
) -> None:
    release, got = asyncio.Event(), []

    async def slow_consumer(peer: PeerConnection, frame: Call | Cast) -> None:
        await release.wait()
        got.append(frame.request_id)

    keepalive = {"keepalive_interval_s": 0.05, "keepalive_timeout_s": 0.3}
    a = make_transport("alpha", send_queue_frames=8, send_timeout_s=0.05, **keepalive)
    b = make_transport("beta", handler=slow_consumer, max_inbound_tasks=2, **keepalive)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    accepted, _, _ = await fill_until_overloaded(conn, b"p" * 128 * 1024)
    (b_side,) = b.connections()
    t0 = time.monotonic()
    # The stalled receiver keeps pinging, so the sender sees it alive well past the timeout.
    received = conn.statistics().frames_received
    await wait_until(lambda: conn.statistics().frames_received >= received + 15, timeout=10,
                     what="pings from the stalled peer")
    assert time.monotonic() - t0 > 0.3
    assert conn.is_open and b_side.is_open
    release.set()
    await wait_until(lambda: len(got) == accepted, timeout=20)
    assert conn.is_open and b_side.is_open


async def test_request_backpressure_raises_overloaded_within_its_timeout(
    make_transport: MakeTransport,
) -> None:
    release = asyncio.Event()

    async def slow(peer: PeerConnection, frame: Call | Cast) -> None:
        await release.wait()

    a = make_transport("alpha", send_queue_frames=4, send_timeout_s=0.1)
    b = make_transport("beta", handler=slow, max_inbound_tasks=2)
    conn = await a.connect(await b.start("127.0.0.1:0"))
    await fill_until_overloaded(conn, b"q" * 128 * 1024)
    with pytest.raises(Overloaded) as info:
        await conn.request(make_call(99_999), timeout_s=0.1)
    assert info.value.request_id == 99_999
    release.set()


async def test_restarted_peer_replaces_the_old_connection(make_transport: MakeTransport) -> None:
    a = make_transport("alpha")
    old = make_transport("beta", incarnation=1)
    a_addr = await a.start("127.0.0.1:0")
    old_conn = await old.connect(a_addr)
    await wait_until(lambda: a.statistics().connections == 1)
    (stale,) = a.connections()
    new = make_transport("beta", incarnation=2)  # same name, restarted process
    new_conn = await new.connect(a_addr)
    await wait_until(lambda: stale.state == "closed", what="stale connection dropped")
    (current,) = a.connections()
    assert current.peer_incarnation == 2 and current is not stale
    assert (await new_conn.request(make_call(1), timeout_s=5)).request_id == 1
    await wait_until(lambda: not old_conn.is_open)
