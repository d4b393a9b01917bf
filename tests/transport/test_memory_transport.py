"""The in-memory transport (``_transport/memory.py``): the same seam as TCP, on one
shared network that a test cuts, kills and slows, in virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._transport.base import ConnectionBroken, PeerConnection
from phoenix_cluster._transport.memory import MemoryNetwork, MemoryTransport
from phoenix_cluster._wire.messages import Call, Cast, Error, Redirect, Reply
from phoenix_cluster.errors import AuthenticationError, CallTimeout, ConfigError, ProtocolError
from phoenix_cluster.testing.memory import LoopClock, run_virtual

Handler = Callable[[PeerConnection, Call | Cast], Awaitable[Reply | Error | Redirect | None]]


async def echo(peer: PeerConnection, msg: Call | Cast) -> Reply | None:
    """Answers a Call with its payload; records every Cast."""
    if isinstance(msg, Cast):
        CASTS.append(msg.payload)
        return Reply(request_id=msg.request_id, payload=b"")
    return Reply(request_id=msg.request_id, payload=msg.payload + b"@" + peer.peer_name.encode())


CASTS: list[bytes] = []


def transport(net: MemoryNetwork, name: str, handler: Handler = echo, *,
              secret: bytes = b"s3cret", max_frame_bytes: int = 1 << 20) -> MemoryTransport:
    return net.transport(name, 1, secret, env=Env(clock=LoopClock()), bus=TelemetryBus(),
                         max_frame_bytes=max_frame_bytes, handler=handler)


def call(rid: int, payload: bytes = b"hi") -> Call:
    return Call(request_id=rid, kind="k", key="x", method="m", payload=payload, timeout_ms=0)


def test_a_call_round_trips_through_the_codec_and_names_the_caller() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        a, b = transport(net, "a"), transport(net, "b")
        await a.start(net.address())
        address_b = await b.start(net.address())
        conn = await a.connect(address_b)
        answer = await conn.request(call(1, b"ping"), 1.0)
        assert answer == Reply(request_id=1, payload=b"ping@a")
        assert conn.peer_name == "b" and conn.peer_incarnation == 1
        assert await a.connect(address_b) is conn  # one connection per peer pair
        assert b.statistics().accepted == 1
        CASTS.clear()
        for n in range(5):
            await conn.send(Cast(request_id=10 + n, kind="k", key="x", method="m",
                                 payload=bytes([n]), timeout_ms=0))
        await conn.request(call(2), 1.0)  # after the casts on the same connection
        assert [bytes([n]) for n in range(5)] == CASTS  # in order
        await a.aclose()
        await b.aclose()

    run_virtual(main())


def test_a_frame_too_large_or_unencodable_fails_as_on_the_wire() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        a, b = transport(net, "a", max_frame_bytes=1000), transport(net, "b")
        await a.start(net.address())
        conn = await a.connect(await b.start(net.address()))
        with pytest.raises(ProtocolError, match="exceeds max_frame_bytes"):
            await conn.request(call(1, b"x" * 2000), 1.0)
        assert conn.statistics().pending_requests == 0
        assert (await conn.request(call(2), 1.0)).request_id == 2  # still usable

    run_virtual(main())


def test_a_wrong_secret_is_refused_and_an_unknown_address_is_definite() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        a, b = transport(net, "a"), transport(net, "b", secret=b"other")
        await a.start(net.address())
        address_b = await b.start(net.address())
        with pytest.raises(AuthenticationError):
            await a.connect(address_b)
        with pytest.raises(ConnectionBroken) as info:
            await a.connect("10.99.0.1:7946")
        assert info.value.definite is True

    run_virtual(main())


def test_a_cut_times_calls_out_and_a_heal_restores_them() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        a, b = transport(net, "a"), transport(net, "b")
        await a.start(net.address())
        conn = await a.connect(await b.start(net.address()))
        net.cut({"a"})  # from everyone else
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(CallTimeout) as info:
            await conn.request(call(1), 2.0)
        assert info.value.definite is False  # it may have run there
        assert loop.time() - started == pytest.approx(2.0)  # virtual seconds
        with pytest.raises(ConnectionBroken):
            await transport(net, "c").connect(a.address or "")
        net.heal()
        assert (await conn.request(call(2), 1.0)).request_id == 2

    run_virtual(main())


def test_a_kill_breaks_pending_requests_with_an_unknown_outcome() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        never = asyncio.Event()

        async def stuck(peer: PeerConnection, msg: Call | Cast) -> Reply:
            await never.wait()
            raise AssertionError("unreachable")

        a, b = transport(net, "a"), transport(net, "b", stuck)
        await a.start(net.address())
        address_b = await b.start(net.address())
        conn = await a.connect(address_b)
        pending = asyncio.ensure_future(conn.request(call(1), 30.0))
        await asyncio.sleep(0.1)
        net.kill("b")
        with pytest.raises(ConnectionBroken) as info:
            await pending
        assert info.value.definite is False
        assert not conn.is_open
        with pytest.raises(ConnectionBroken) as dial:
            await a.connect(address_b)
        assert dial.value.definite is True  # nobody answers there any more

    run_virtual(main())


def test_loss_and_delay_per_link() -> None:
    async def main() -> None:
        net = MemoryNetwork(seed=7)
        a, b = transport(net, "a"), transport(net, "b")
        await a.start(net.address())
        conn = await a.connect(await b.start(net.address()))
        net.set_link("a", "b", delay_s=0.25)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await conn.request(call(1), 5.0)
        assert loop.time() - started == pytest.approx(0.5)  # there and back
        net.set_link("a", "b", loss=1.0)
        with pytest.raises(CallTimeout):
            await conn.request(call(2), 1.0)

    run_virtual(main())


def test_a_reset_breaks_one_connection_and_the_next_dial_makes_a_new_one() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        a, b = transport(net, "a"), transport(net, "b")
        await a.start(net.address())
        address_b = await b.start(net.address())
        conn = await a.connect(address_b)
        assert net.disconnect("a", "b") is True
        assert not conn.is_open
        with pytest.raises(ConnectionBroken):
            await conn.request(call(1), 1.0)
        again = await a.connect(address_b)
        assert again is not conn
        assert (await again.request(call(2), 1.0)).request_id == 2
        assert b.statistics().accepted == 2
        assert net.disconnect("a", "nobody") is False

    run_virtual(main())


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, object]] = []

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.got.append((data, addr))


def test_datagrams_reach_the_endpoint_at_a_node_s_address_unless_cut_or_killed() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        a, b = transport(net, "a"), transport(net, "b")
        host_a, port_a = (await a.start(net.address())).split(":")
        host_b, port_b = (await b.start(net.address())).split(":")
        inbox_a, inbox_b = _Inbox(), _Inbox()
        end_a = await net.open_datagram_endpoint((host_a, int(port_a)), lambda: inbox_a)
        await net.open_datagram_endpoint((host_b, int(port_b)), lambda: inbox_b)
        with pytest.raises(ConfigError):  # one endpoint per address, as with UDP
            await net.open_datagram_endpoint((host_b, int(port_b)), _Inbox)
        end_a.sendto(b"ping", (host_b, int(port_b)))
        await asyncio.sleep(0.01)
        assert inbox_b.got == [(b"ping", (host_a, int(port_a)))]  # with its source
        net.cut({"a"})
        end_a.sendto(b"lost", (host_b, int(port_b)))
        net.heal()
        net.kill("b")
        end_a.sendto(b"lost too", (host_b, int(port_b)))
        end_a.sendto(b"nobody there", ("10.99.0.1", 7946))
        await asyncio.sleep(0.01)
        assert len(inbox_b.got) == 1
        assert net.datagrams_lost == 3
        end_a.close()
        assert end_a.is_closing()

    run_virtual(main())
