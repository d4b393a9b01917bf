"""Backoff, circuit breaker and PeerManager: pure logic under a ManualClock, then real sockets."""

from __future__ import annotations

import asyncio
import random

import pytest
from transport_helpers import MakeTransport, make_call

from phoenix_cluster._foundation.env import Env, ManualClock
from phoenix_cluster._resilience.backoff import Backoff
from phoenix_cluster._resilience.breaker import CircuitBreaker
from phoenix_cluster._transport.base import ConnectionBroken, PeerConnection
from phoenix_cluster._transport.peers import PeerManager
from phoenix_cluster.errors import AuthenticationError, ConfigError, NodeClosed, NodeUnavailable
from phoenix_cluster.testing import wait_until

# --- backoff ------------------------------------------------------------------------------


def test_backoff_grows_caps_and_jitters_within_bounds() -> None:
    b = Backoff(base_s=0.1, max_s=2.0, multiplier=2.0, jitter=0.5)
    assert [b.ceiling(n) for n in range(7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert b.ceiling(10_000) == 2.0  # no float overflow for a long-dead peer
    rng = random.Random(7)
    for n in range(12):
        for _ in range(50):
            d = b.delay(n, rng)
            assert b.ceiling(n) * 0.5 <= d <= b.ceiling(n)


def test_backoff_is_replayable_from_a_seed_and_jitter_spreads_retries() -> None:
    b = Backoff()
    first = [b.delay(3, random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    rng = random.Random(1)
    assert len({round(b.delay(3, rng), 9) for _ in range(20)}) > 15  # no lock-step
    assert Backoff(jitter=0).delay(3, rng) == Backoff(jitter=0).ceiling(3)


@pytest.mark.parametrize(
    "kw", [{"base_s": 0}, {"base_s": 5, "max_s": 1}, {"multiplier": 0.5}, {"jitter": 1.5}]
)
def test_backoff_rejects_bad_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Backoff(**kw)


# --- breaker ------------------------------------------------------------------------------


def test_breaker_opens_after_k_failures_and_half_opens_after_cooldown() -> None:
    br = CircuitBreaker(failure_threshold=3, cooldown_s=10.0, name="10.0.0.7:7100")
    for t in (0.0, 1.0):
        assert br.allow(t)
        br.record_failure(t)
        assert br.state(t) == "closed"
    assert br.allow(2.0)
    br.record_failure(2.0)  # third in a row: trip
    assert br.state(2.0) == "open" and not br.allow(2.0)
    assert br.retry_after(5.0) == pytest.approx(7.0)
    assert not br.allow(11.9)
    assert br.state(12.0) == "half_open"
    assert br.allow(12.0)  # the probe
    assert not br.allow(12.0)  # only one
    br.record_failure(12.5)  # probe failed: open again, cool-down restarts
    assert br.state(13.0) == "open" and br.retry_after(13.0) == pytest.approx(9.5)
    assert br.allow(22.5)
    br.record_success(22.6)
    assert br.state(22.6) == "closed" and br.allow(22.6)
    stats = br.statistics(22.6)
    assert (stats.times_opened, stats.consecutive_failures, stats.state) == (2, 0, "closed")
    assert "10.0.0.7:7100" in repr(br)


def test_breaker_success_resets_the_count_and_abandon_frees_the_probe() -> None:
    br = CircuitBreaker(failure_threshold=2, cooldown_s=1.0)
    br.record_failure(0)
    br.record_success(0)
    br.record_failure(0)
    assert br.state(0) == "closed"  # not consecutive
    br.record_failure(0)
    assert br.state(0) == "open"
    assert br.allow(1.0) and not br.allow(1.0)
    br.abandon()  # the probe was cancelled: let another one through
    assert br.allow(1.0)
    with pytest.raises(ConfigError):
        CircuitBreaker(failure_threshold=0)


# --- PeerManager with a scripted transport ------------------------------------------------


class FakeConn:
    def __init__(self, name: str) -> None:
        self.peer_name, self.peer_address = name, "addr"
        self.peer_incarnation, self.peer_role = 1, "member"
        self.is_open = True
        self._closed = asyncio.Event()

    def close(self) -> None:
        self.is_open = False
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


class ScriptedTransport:
    """connect() fails while ``up`` is False; counts dials."""

    node_name = "me"

    def __init__(self) -> None:
        self.up = False
        self.dials = 0
        self.gate: asyncio.Event | None = None

    async def connect(self, address: str) -> FakeConn:
        self.dials += 1
        if self.gate is not None:
            await self.gate.wait()
        if not self.up:
            raise ConnectionBroken(f"cannot connect to {address}: refused", definite=True)
        return FakeConn("peer")


async def test_manager_fails_fast_while_the_breaker_is_open() -> None:
    clock = ManualClock()
    transport = ScriptedTransport()
    pm = PeerManager(transport, env=Env(clock=clock), failure_threshold=3,  # type: ignore[arg-type]
                     cooldown_s=30.0)
    for _ in range(3):
        with pytest.raises(NodeUnavailable) as info:
            await pm.connection("10.0.0.9:7100")
        assert info.value.definite and "refused" in info.value.message
    assert transport.dials == 3
    with pytest.raises(NodeUnavailable, match="circuit open after 3 consecutive failures") as info:
        await pm.connection("10.0.0.9:7100")
    assert info.value.definite and "next attempt in 30.0s" in info.value.message
    assert transport.dials == 3  # refused without dialling
    clock.advance(29.0)
    with pytest.raises(NodeUnavailable, match="circuit open"):
        await pm.connection("10.0.0.9:7100")
    clock.advance(1.0)  # cool-down over: one probe
    assert pm.breaker("10.0.0.9:7100").state(clock.monotonic()) == "half_open"
    transport.up = True
    transport.gate = asyncio.Event()
    probe = asyncio.ensure_future(pm.connection("10.0.0.9:7100"))
    await wait_until(lambda: transport.dials == 4)
    with pytest.raises(NodeUnavailable, match=r"probe in progress|circuit open"):
        await pm.connection("10.0.0.9:7100")  # a second caller does not pile on
    transport.gate.set()
    conn = await probe
    assert conn.peer_name == "peer"
    (row,) = pm.statistics()
    assert row.connected and row.breaker.state == "closed" and row.breaker.times_opened == 1
    assert await pm.connection("10.0.0.9:7100") is conn  # reused, no dial
    assert transport.dials == 4
    assert "1/1 peers up" in repr(pm)
    await pm.aclose()
    with pytest.raises(NodeClosed):
        await pm.connection("10.0.0.9:7100")


async def test_manager_probe_failure_reopens_and_cancel_abandons() -> None:
    clock = ManualClock()
    transport = ScriptedTransport()
    pm = PeerManager(transport, env=Env(clock=clock), failure_threshold=1,  # type: ignore[arg-type]
                     cooldown_s=5.0)
    with pytest.raises(NodeUnavailable):
        await pm.connection("x:1")
    clock.advance(5.0)
    transport.gate = asyncio.Event()
    probe = asyncio.ensure_future(pm.connection("x:1"))
    await wait_until(lambda: transport.dials == 2)
    probe.cancel()  # the caller gave up: the probe slot is released
    with pytest.raises(asyncio.CancelledError):
        await probe
    transport.gate = None
    with pytest.raises(NodeUnavailable, match="refused"):
        await pm.connection("x:1")  # a new probe is allowed, and fails
    with pytest.raises(NodeUnavailable, match="circuit open"):
        await pm.connection("x:1")
    await pm.aclose()


async def test_watch_loop_backs_off_with_jitter_on_the_manual_clock() -> None:
    clock = ManualClock(autojump=True)
    transport = ScriptedTransport()
    pm = PeerManager(transport, env=Env(clock=clock, random=random.Random(3)),  # type: ignore[arg-type]
                     backoff=Backoff(base_s=1.0, max_s=8.0), failure_threshold=1000)
    pm.watch("p:1")
    await wait_until(lambda: transport.dials >= 6, what="six dial attempts")
    # Delays 1, 2, 4, 8, 8 with jitter in [50%, 100%]: at least 11.5 s of clock time.
    assert 11.5 <= clock.monotonic() <= 23.0
    transport.up = True
    await wait_until(lambda: pm.statistics()[0].connected)
    assert pm.statistics()[0].watched
    pm.unwatch("p:1")
    assert not pm.statistics()[0].watched
    await pm.aclose()


# --- PeerManager over real sockets --------------------------------------------------------


async def test_manager_over_tcp_reports_auth_errors_and_reaches_good_peers(
    make_transport: MakeTransport,
) -> None:
    good = make_transport("good")
    bad = make_transport("bad", secret=b"other")
    good_addr, bad_addr = await good.start("127.0.0.1:0"), await bad.start("127.0.0.1:0")
    me = make_transport("me")
    pm = PeerManager(me, env=Env())
    try:
        with pytest.raises(AuthenticationError):
            await pm.connection(bad_addr)
        conn: PeerConnection = await pm.connection(good_addr)
        assert (await conn.request(make_call(1), timeout_s=5)).request_id == 1
        rows = {r.address: r for r in pm.statistics()}
        assert rows[good_addr].peer_name == "good" and rows[good_addr].connected
        assert rows[bad_addr].breaker.consecutive_failures == 1
        assert "cluster-secret" in rows[bad_addr].last_error
    finally:
        await pm.aclose()


async def test_reset_with_redial_closes_the_connection_and_the_next_one_is_fresh(
    make_transport: MakeTransport,
) -> None:
    """A peer back after it was declared dead: ``reset(redial=True)`` closes the old
    connection (it may be waiting out TCP's retransmission backoff) and the next
    request dials a new one; a plain ``reset`` keeps a working connection."""
    peer = make_transport("peer")
    address = await peer.start("127.0.0.1:0")
    pm = PeerManager(make_transport("me"), env=Env())
    try:
        first = await pm.connection(address)
        pm.reset(address)
        assert await pm.connection(address) is first and first.is_open
        pm.reset(address, redial=True)
        assert not first.is_open
        second = await pm.connection(address)
        assert second is not first
        assert (await second.request(make_call(7), timeout_s=5)).request_id == 7
        assert {r.address: r for r in pm.statistics()}[address].connects == 2
    finally:
        await pm.aclose()
        await peer.aclose()
