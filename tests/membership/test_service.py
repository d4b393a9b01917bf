"""MembershipService over real UDP on 127.0.0.1, with the real clock and short timers.

Push-pull is wired service to service directly (the node routes it over TCP). Every wait
has a deadline; nothing sleeps a fixed time and hopes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import pytest

from phoenix_cluster._membership.messages import (
    GossipCodec,
    Ping,
    gossip_address,
    gossip_key,
    seal,
)
from phoenix_cluster._membership.service import MembershipService, SwimSettings
from phoenix_cluster._membership.snapshot import MembershipSnapshot
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster.errors import ConfigError, ProtocolError
from phoenix_cluster.testing import wait_until

SECRET = b"cluster-secret-for-tests"
FAST = SwimSettings(
    probe_interval_s=0.1,
    probe_timeout_s=0.05,
    sync_interval_s=1.0,
    join_retry_s=0.1,
    sync_timeout_s=1.0,
    lag_check_interval_s=0.05,
    lag_threshold_s=0.2,
    leave_timeout_s=0.5,
)

MakeService = Callable[..., Awaitable[MembershipService]]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Fabric:
    """Services by TCP address; ``sync`` calls the peer's ``handle_sync`` directly."""

    def __init__(self) -> None:
        self.services: dict[str, MembershipService] = {}
        self.down: set[str] = set()

    def sync_for(self, caller: str) -> Callable[[str, bytes], Awaitable[bytes]]:
        async def sync(address: str, payload: bytes) -> bytes:
            await asyncio.sleep(0)
            peer = self.services.get(address)
            if peer is None or address in self.down or caller in self.down:
                raise ConnectionRefusedError(f"nobody at {address}")
            return peer.handle_sync(payload)

        return sync


@pytest.fixture
async def fabric() -> AsyncIterator[Fabric]:
    fab = Fabric()
    yield fab
    await asyncio.gather(*(svc.aclose(leave=False) for svc in fab.services.values()))


@pytest.fixture
def make_service(fabric: Fabric) -> MakeService:
    async def make(name: str, *, seeds: tuple[str, ...] = (), secret: bytes = SECRET,
                   settings: SwimSettings = FAST, bus: TelemetryBus | None = None,
                   incarnation: int | None = None) -> MembershipService:
        address = f"127.0.0.1:{free_udp_port()}"
        svc = MembershipService(
            name, address, incarnation or int(time.time() * 1000), secret,
            sync=fabric.sync_for(address), seeds=seeds, settings=settings,
            bus=bus if bus is not None else TelemetryBus(),
        )
        fabric.services[address] = svc
        await svc.start()
        return svc

    return make


def sees(observer: MembershipService, name: str, status: str) -> bool:
    return any(m.name == name and m.status == status for m in observer.snapshot().members)


def full_view(services: list[MembershipService]) -> bool:
    names = {s.name for s in services}
    return all(
        {m.name for m in s.snapshot().members if m.status == "alive"} == names
        for s in services
    )


async def cluster(make_service: MakeService, n: int, **kw: object) -> list[MembershipService]:
    seed = await make_service("s0", **kw)
    rest = [await make_service(f"s{i}", seeds=(seed.address,), **kw) for i in range(1, n)]
    services = [seed, *rest]
    await wait_until(lambda: full_view(services), timeout=5, what="full view")
    return services


async def test_join_through_a_seed_converges(make_service: MakeService) -> None:
    seen: list[MembershipSnapshot] = []
    services = await cluster(make_service, 4)
    seed = services[0]
    unsubscribe = seed.subscribe(seen.append)
    late = await make_service("late", seeds=(seed.address,))
    await wait_until(lambda: full_view([*services, late]), timeout=5, what="late joiner")
    versions = [snap.version for snap in seen]
    assert versions and versions == sorted(versions)
    assert any(m.name == "late" for m in seen[-1].members)
    assert seen[-1].version <= seed.snapshot().version
    unsubscribe()
    await wait_until(lambda: late.statistics().swim.probes_acked > 0, timeout=2,
                     what="late joiner probing")
    stats = late.statistics()
    assert stats.syncs_ok >= 1 and stats.datagrams_sent > 0 and stats.datagrams_received > 0
    assert stats.dropped_unauthenticated == stats.dropped_malformed == 0
    assert "late udp 127.0.0.1:" in repr(late) and "running" in repr(late)


async def test_crashed_service_is_declared_dead_within_the_deadline(
        make_service: MakeService, fabric: Fabric) -> None:
    bus = TelemetryBus()
    seen: list[tuple[tuple[str, ...], Mapping[str, object]]] = []
    bus.attach("t", [events.CLUSTER_NODE_JOINED, events.CLUSTER_NODE_SUSPECTED,
                     events.CLUSTER_NODE_LEFT],
               lambda event, _m, meta: seen.append((event, meta)))
    services = await cluster(make_service, 4, bus=bus)
    victim = services[2]
    fabric.down.add(victim.address)
    started = time.monotonic()
    await victim.aclose(leave=False)  # no goodbye: a crash, as far as the others know
    others = [s for s in services if s is not victim]
    # Bound: a round robin of probes (n periods) plus the longest suspicion (24 periods
    # at n=4), with margin for a loaded machine; typically about 1 s.
    await wait_until(lambda: all(sees(s, victim.name, "dead") for s in others), timeout=6,
                     what="victim declared dead")
    took = time.monotonic() - started
    assert took < 6
    suspected = [meta for e, meta in seen if e == events.CLUSTER_NODE_SUSPECTED]
    assert {meta["peer"] for meta in suspected} == {victim.name}
    assert all(meta["by"] for meta in suspected)
    left = [meta for e, meta in seen if e == events.CLUSTER_NODE_LEFT]
    assert {meta["node"] for meta in left} == {s.name for s in others}
    assert {meta["reason"] for meta in left} == {"dead"}
    assert sum(1 for e, _ in seen if e == events.CLUSTER_NODE_JOINED) >= 12  # 4 x 3


async def test_graceful_close_is_seen_as_left_at_once(make_service: MakeService) -> None:
    services = await cluster(make_service, 3)
    leaver = services[1]
    started = time.monotonic()
    await leaver.aclose()
    assert time.monotonic() - started < FAST.leave_timeout_s  # every ack came back
    others = [services[0], services[2]]
    await wait_until(lambda: all(sees(s, leaver.name, "left") for s in others), timeout=2,
                     what="leaver marked left")
    assert leaver.statistics().swim.left == 1
    assert "closed" in repr(leaver)
    await leaver.aclose()  # idempotent


async def test_wrong_secret_and_garbage_are_dropped_and_counted(
        make_service: MakeService, caplog: pytest.LogCaptureFixture) -> None:
    services = await cluster(make_service, 3)
    target = services[0]
    host, port = gossip_address(target.address).rsplit(":", 1)
    codec = GossipCodec()
    forged = seal(gossip_key(b"another-cluster"), codec.encode(Ping(1, target.name, "evil")))
    authentic_garbage = seal(gossip_key(SECRET), b"\xc1\xff\x00not msgpack")
    before = target.statistics()
    with caplog.at_level(logging.WARNING, logger="phoenix_cluster.membership"), \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for _ in range(20):
            sock.sendto(forged, (host, int(port)))
        for junk in (b"", b"\x01", b"\x00" * 40, bytes(range(256)) * 200):
            sock.sendto(junk, (host, int(port)))
        sock.sendto(authentic_garbage, (host, int(port)))
        await wait_until(
            lambda: target.statistics().dropped_malformed > before.dropped_malformed
            and target.statistics().dropped_unauthenticated
            >= before.dropped_unauthenticated + 24,
            timeout=3, what="datagrams counted")
        # No answer went back to the forger.
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(2048)
    warnings = [r for r in caplog.records if "authentication" in r.getMessage()]
    assert len(warnings) == 1  # one line per source per 10 s, however much it sends
    # The cluster carries on: probes still succeed and nobody is suspected.
    acked = target.statistics().swim.probes_acked
    await wait_until(lambda: target.statistics().swim.probes_acked >= acked + 3, timeout=3,
                     what="probes continue")
    assert full_view(services)
    assert target.statistics().swim.suspicions == 0


async def test_a_node_with_the_wrong_secret_never_joins_by_gossip(
        make_service: MakeService, fabric: Fabric) -> None:
    services = await cluster(make_service, 3)
    # Push-pull is authenticated by the TCP handshake, so an intruder can only speak UDP:
    # here it learns the members through a (mis)wired sync, but its datagrams are refused.
    intruder = await make_service("intruder", seeds=(services[0].address,),
                                  secret=b"not-the-secret")
    await wait_until(lambda: intruder.statistics().datagrams_sent > 10, timeout=3,
                     what="intruder probing")
    await wait_until(
        lambda: sum(s.statistics().dropped_unauthenticated for s in services) > 5,
        timeout=3, what="intruder datagrams dropped")
    assert intruder.statistics().swim.probes_acked == 0


async def test_handle_sync_rejects_garbage(make_service: MakeService) -> None:
    svc = await make_service("solo")
    with pytest.raises(ProtocolError, match="invalid membership sync"):
        svc.handle_sync(b"\xff\x00garbage")
    snap = svc.snapshot()
    assert [m.name for m in snap.members] == ["solo"]
    assert snap.alive()[0].status == "alive"


async def test_start_twice_and_port_in_use(make_service: MakeService, fabric: Fabric) -> None:
    svc = await make_service("a")
    with pytest.raises(RuntimeError, match="start it once"):
        await svc.start()
    clash = MembershipService("b", svc.address, 1, SECRET, sync=fabric.sync_for("x"),
                              settings=FAST, bus=TelemetryBus())
    with pytest.raises(ConfigError, match="cannot bind the gossip UDP socket"):
        await clash.start()
    await clash.aclose()


async def test_event_loop_lag_counts_against_local_health(make_service: MakeService) -> None:
    services = await cluster(make_service, 2)
    svc = services[0]
    time.sleep(0.35)  # noqa: ASYNC251  (blocking the loop on purpose: the lag to measure)
    await wait_until(lambda: svc.statistics().health.lag_events >= 1, timeout=2,
                     what="lag noticed")
    stats = svc.statistics()
    assert stats.loop_lag_max_s >= 0.3
    assert stats.health.max_score_seen >= 1
    # Answered probes bring it back; nobody was accused meanwhile.
    await wait_until(lambda: svc.statistics().health.score == 0, timeout=5,
                     what="health recovers")
    assert full_view(services)


async def test_seeds_found_later_are_joined(make_service: MakeService) -> None:
    a = await make_service("a")
    b = await make_service("b")
    c = await make_service("c")
    assert not full_view([a, b, c])
    b.join([a.address])  # e.g. a discovery provider's on_seeds callback
    c.join(["127.0.0.1:9", a.address])  # a dead seed among them does no harm
    await wait_until(lambda: full_view([a, b, c]), timeout=5, what="late seeds joined")
