"""FallbackTransport: address convention, chains, switching forward and back, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

pytest.importorskip("h2")
pytest.importorskip("aioquic")

from transport_helpers import SECRET, echo, make_call

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._resilience.backoff import Backoff
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._transport.base import ConnectionBroken, ConnectionClosed
from phoenix_cluster._transport.fallback import (
    PROTOCOLS,
    FallbackTransport,
    parse_chain,
    protocol_address,
)
from phoenix_cluster._transport.tcp import parse_address
from phoenix_cluster._wire.messages import Reply
from phoenix_cluster.errors import (
    AuthenticationError,
    ConfigError,
    NodeUnavailable,
)
from phoenix_cluster.testing import wait_until

LOGGER = "phoenix_cluster.transport"
MakeFallback = Callable[..., FallbackTransport]
Switch = tuple[str, str, str, str]  # peer, from, to, reason

FAST = {"failure_threshold": 1, "cooldown_s": 0.1,
        "probe_backoff": Backoff(base_s=0.05, max_s=0.2)}


@pytest.fixture
async def make() -> AsyncIterator[MakeFallback]:
    made: list[FallbackTransport] = []

    def make(name: str, *, secret: bytes = SECRET, bus: TelemetryBus | None = None,
             **kw: Any) -> FallbackTransport:
        t = FallbackTransport(name, 1, secret, env=Env(), bus=bus or TelemetryBus(),
                              max_frame_bytes=1 << 20, handler=echo, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        await t.aclose()


def record_switches(bus: TelemetryBus) -> list[dict[str, object]]:
    seen: list[dict[str, object]] = []

    def handler(event: tuple[str, ...], measurements: Mapping[str, float],
                metadata: Mapping[str, object]) -> None:
        assert event == events.TRANSPORT_PROTOCOL_SWITCHED
        seen.append(dict(metadata))

    bus.attach("test-switches", [events.TRANSPORT_PROTOCOL_SWITCHED], handler)
    return seen


class Gate:
    """A TCP forwarder on a fixed port that can refuse (``shut``) and come back (``open``)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def open(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.address

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._spawn(self._connect(reader, writer))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*parse_address(self.target))
        except OSError:
            writer.transport.abort()
            return
        self._writers.append(up_writer)
        self._spawn(self._pump(reader, up_writer))
        self._spawn(self._pump(up_reader, writer))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.transport.abort()

    async def shut(self) -> None:
        """Stop listening and cut every forwarded connection: the protocol is down."""
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


@pytest.fixture
async def make_gate() -> AsyncIterator[Callable[[str], Gate]]:
    made: list[Gate] = []

    def make(target: str) -> Gate:
        made.append(Gate(target))
        return made[-1]

    yield make
    for g in made:
        await g.shut()


async def call(t: FallbackTransport, address: str, rid: int) -> Reply:
    """One request the way the router sends it: resend once if the connection broke."""
    for _ in range(3):
        conn = await t.connection(address)
        try:
            reply = await conn.request(make_call(rid, b"x"), timeout_s=5)
        except (ConnectionBroken, ConnectionClosed):
            continue
        assert isinstance(reply, Reply)
        return reply
    raise AssertionError(f"request {rid} failed three times")


# --- the address convention and chains ------------------------------------------------------


def test_protocol_addresses_follow_the_convention_with_overrides() -> None:
    assert protocol_address("10.0.0.7:7100", "tcp") == "10.0.0.7:7100"
    assert protocol_address("10.0.0.7:7100", "http2") == "10.0.0.7:7101"
    # UDP on the TCP port itself is membership gossip's, so QUIC takes UDP port + 1.
    assert protocol_address("10.0.0.7:7100", "quic") == "10.0.0.7:7101"
    assert protocol_address("[::1]:7100", "http2") == "[::1]:7101"
    overrides = {"10.0.0.7:7100": {"http2": "proxy.example:443"}}
    assert protocol_address("10.0.0.7:7100", "http2", overrides=overrides) == "proxy.example:443"
    assert protocol_address("10.0.0.7:7100", "quic", overrides=overrides) == "10.0.0.7:7101"
    with pytest.raises(ConfigError, match="http2 port would be 65536"):
        protocol_address("h:65535", "http2")
    with pytest.raises(ConfigError):
        protocol_address("h:1", "sctp")


def test_chains_parse_from_text_and_reject_nonsense() -> None:
    assert parse_chain("tcp, HTTP2,quic") == ("tcp", "http2", "quic")
    assert parse_chain(["quic"]) == ("quic",)
    for bad in ("", "tcp,tcp", "tcp,smtp"):
        with pytest.raises(ConfigError):
            parse_chain(bad)


def test_missing_package_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "phoenix_cluster._transport.quic", None)
    with pytest.raises(ConfigError, match=r"pip install 'phoenix-cluster\[quic\]'"):
        FallbackTransport("n", 1, SECRET, env=Env(), bus=TelemetryBus(), max_frame_bytes=1024,
                          handler=echo, chain="tcp,quic")
    with pytest.raises(ConfigError, match="does not run"):
        FallbackTransport("n", 1, SECRET, env=Env(), bus=TelemetryBus(), max_frame_bytes=1024,
                          handler=echo, chain="tcp", peer_chains={"h:1": "http2"})


async def test_a_node_listens_on_every_protocol_and_each_one_reaches_it(
    make: MakeFallback,
) -> None:
    server = make("server")
    addr = await server.start("127.0.0.1:0")
    host, port = parse_address(addr)
    assert server.addresses == {"tcp": addr, "http2": f"{host}:{port + 1}",
                                "quic": f"{host}:{port + 1}"}
    for chain in ("tcp", "http2", "quic"):
        client = make(f"client-{chain}", chain=chain)
        conn = await client.connection(addr)
        assert await conn.request(make_call(1, chain.encode()), timeout_s=5) == Reply(
            1, chain.encode())
        assert client.protocol_of(addr) == chain
    stats = server.statistics()
    assert {k: v.connections for k, v in stats.transports.items()} == {
        "tcp": 1, "http2": 1, "quic": 1}


# --- falling forward and coming back ---------------------------------------------------------


async def test_traffic_moves_tcp_to_http2_to_quic_and_back_when_tcp_recovers(
    make: MakeFallback, make_gate: Callable[[str], Gate], caplog: pytest.LogCaptureFixture
) -> None:
    server = make("server")
    await server.start("127.0.0.1:0")
    # The client reaches the server's TCP and HTTP/2 through gates we can shut.
    tcp_gate, h2_gate = make_gate(server.addresses["tcp"]), make_gate(server.addresses["http2"])
    addr = await tcp_gate.open()
    overrides = {addr: {"http2": await h2_gate.open(), "quic": server.addresses["quic"]}}
    bus = TelemetryBus()
    switches = record_switches(bus)
    client = make("client", bus=bus, addresses=overrides, **FAST)
    rid = 0

    async def traffic(n: int) -> None:
        nonlocal rid
        for _ in range(n):
            rid += 1
            assert (await call(client, addr, rid)).request_id == rid

    with caplog.at_level(logging.INFO, logger=LOGGER):
        await traffic(20)
        assert client.protocol_of(addr) == "tcp" and switches == []

        await tcp_gate.shut()  # TCP refused: traffic continues over HTTP/2
        await traffic(20)
        assert client.protocol_of(addr) == "http2"

        await h2_gate.shut()  # HTTP/2 refused too: QUIC
        await traffic(20)
        assert client.protocol_of(addr) == "quic"

        await tcp_gate.open()  # TCP is back: the probe moves traffic home
        await wait_until(lambda: client.protocol_of(addr) == "tcp", timeout=10,
                         what="switch back to tcp")
        await traffic(20)

    assert [(s["from"], s["to"]) for s in switches] == [
        ("tcp", "http2"), ("http2", "quic"), ("quic", "tcp")]
    assert all(s["node"] == "client" and s["peer"] == "server" and s["address"] == addr
               for s in switches)
    assert "tcp: cannot connect" in str(switches[0]["reason"])
    assert "http2: cannot connect" in str(switches[1]["reason"])
    assert switches[2]["reason"] == "tcp recovered"
    lines = [r.getMessage() for r in caplog.records if "switched from" in r.getMessage()]
    assert len(lines) == 3 and all(r.levelno == logging.INFO for r in caplog.records
                                   if "switched from" in r.getMessage())
    assert "peer server (" in lines[0] and "from tcp to http2" in lines[0]
    (peer,) = client.statistics().peers
    assert (peer.protocol, peer.switches, peer.connected, peer.probing) == ("tcp", 3, True,
                                                                             False)
    assert client.statistics().protocols() == {addr: "tcp"}
    assert client.transports["tcp"].statistics().peers == 1


async def test_unreachable_primary_from_the_start_uses_the_fallback_and_probes(
    make: MakeFallback,
) -> None:
    server = make("server", chain="http2,quic")  # this node runs no TCP at all
    addr = await server.start("127.0.0.1:0")
    bus = TelemetryBus()
    switches = record_switches(bus)
    client = make("client", bus=bus, **FAST)
    assert (await call(client, addr, 1)).request_id == 1
    assert client.protocol_of(addr) == "http2"
    assert [(s["from"], s["to"]) for s in switches] == [("tcp", "http2")]
    (peer,) = client.statistics().peers
    assert peer.probing and "tcp" in peer.last_error
    # The probe keeps failing on TCP without disturbing traffic or switching again.
    await wait_until(lambda: client.statistics().peers[0].breakers["tcp"].times_opened >= 3,
                     timeout=5, what="three probes of tcp")
    assert (await call(client, addr, 2)).request_id == 2
    assert len(switches) == 1 and client.protocol_of(addr) == "http2"


async def test_a_peer_chain_limits_what_is_tried(make: MakeFallback) -> None:
    server = make("server")
    addr = await server.start("127.0.0.1:0")
    client = make("client", peer_chains={addr: "quic"})
    await call(client, addr, 1)
    assert client.protocol_of(addr) == "quic"
    assert client.transports["tcp"].statistics().dial_attempts == 0


async def test_nothing_reachable_is_a_definite_node_unavailable_naming_each_protocol(
    make: MakeFallback,
) -> None:
    ghost = make("ghost")
    addr = await ghost.start("127.0.0.1:0")
    await ghost.aclose()
    client = make("client", **FAST)
    with pytest.raises(NodeUnavailable) as info:
        await client.connection(addr)
    assert info.value.definite is True
    for proto in ("tcp:", "http2:", "quic:"):
        assert proto in info.value.message
    # Now every breaker is open: the next call fails at once, still naming each.
    with pytest.raises(NodeUnavailable, match="circuit open"):
        await client.connection(addr)


async def test_wrong_secret_is_not_a_reason_to_fall_back(make: MakeFallback) -> None:
    server = make("server")
    addr = await server.start("127.0.0.1:0")
    bus = TelemetryBus()
    switches = record_switches(bus)
    intruder = make("intruder", secret=b"wrong", bus=bus)
    with pytest.raises(AuthenticationError):
        await intruder.connection(addr)
    assert switches == []
    assert intruder.transports["http2"].statistics().dial_attempts == 0


async def test_statistics_repr_and_close(make: MakeFallback) -> None:
    server = make("server", chain="tcp,quic")
    addr = await server.start("127.0.0.1:0")
    assert set(server.addresses) == {"tcp", "quic"}
    client = make("client", chain=["tcp", "quic"])
    await call(client, addr, 1)
    stats = client.statistics()
    assert stats.chain == ("tcp", "quic") and stats.switches == 0 and stats.state == "new"
    (peer,) = stats.peers
    assert (peer.address, peer.peer_name, peer.protocol, peer.connected) == (
        addr, "server", "tcp", True)
    assert "chain tcp,quic, 1 peers on tcp" in repr(client)
    client.forget(addr)
    assert client.protocol_of(addr) is None
    await client.aclose()
    with pytest.raises(Exception, match="closed"):
        await client.connection(addr)
    with pytest.raises(RuntimeError):
        await server.start("127.0.0.1:0")


def test_every_protocol_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        def make(name: str, chain: str) -> FallbackTransport:
            return FallbackTransport(name, 1, SECRET, env=Env(), bus=TelemetryBus(),
                                     max_frame_bytes=1 << 20, handler=echo, chain=chain)

        server = make("server", "tcp,http2,quic")
        clients = [make(f"client-{p}", p) for p in ("tcp", "http2", "quic")]
        try:
            addr = await server.start("127.0.0.1:0")
            for client in clients:
                conn = await client.connection(addr)
                replies = await asyncio.gather(*(conn.request(make_call(i, b"u"), timeout_s=10)
                                                 for i in range(200)))
                assert [r.request_id for r in replies] == list(range(200))
        finally:
            for t in (*clients, server):
                await t.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def test_a_taken_conventional_port_is_a_config_error_that_says_why(
    make: MakeFallback,
) -> None:
    first = make("first")
    addr = await first.start("127.0.0.1:0")
    host, port = parse_address(addr)
    # A node at the port just below: its HTTP/2 port (+1) is the first node's TCP port.
    second = make("second", chain="http2")
    with pytest.raises(ConfigError, match=r"HTTP/2 takes TCP port \+ 1"):
        await second.start(f"{host}:{port - 1}")
    third = make("third", chain="tcp,http2")
    await third.start(f"{host}:0", listen_at={"http2": f"{host}:0"})
    assert set(third.addresses) == {"tcp", "http2"}


async def test_dials_leave_from_the_listen_address_on_every_protocol(
    make: MakeFallback,
) -> None:
    server = make("server")
    addr = await server.start("127.0.0.2:0")
    for i, proto in enumerate(PROTOCOLS):  # tcp, http2, quic
        client = make(f"client-{proto}", chain=proto)
        await client.start(f"127.0.0.{3 + i}:0")
        await call(client, addr, 1)
        (inbound,) = server.transports[proto].connections()
        assert inbound.peer_address.startswith(f"127.0.0.{3 + i}:"), (proto, inbound)
