"""Bad input against a real ``phx node`` process never hurts it (issue 3, point 6).

One node process per test (``LocalCluster(nodes=1)``, ``max_frame_bytes`` lowered to
4 KiB through ``PHX_MAX_FRAME_BYTES`` so an oversized frame is cheap), a client node
calling a :class:`Tally` agent before and after, and a raw socket to the node's TCP
address (or its UDP gossip port) delivering the bad input. For every case:

- the node closes that connection: the raw read sees EOF (or a reset) within a deadline;
- the node's log has a warning naming the source of the bad input (rate-limited: at
  least one line, at most the limiter's burst);
- the node keeps serving: the client's calls succeed afterwards and the agent's state
  holds every call made (nothing lost), and the log holds no error or traceback.

The transport's counters (``protocol_errors``, ``handshake_failures``) live inside the
node process and are not exposed outside it, so the log lines stand in for them. The
in-process versions of these cases, with counters, are in
``tests/transport/test_tcp_security.py``.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import pytest
from cluster_agents import Tally
from transport_helpers import close_raw, open_raw, raw_authenticated

import phoenix_cluster as phx
from phoenix_cluster._transport.cookie import resolve_secret
from phoenix_cluster._transport.tcp import parse_address
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.frames import FrameDecoder, encode_frame
from phoenix_cluster._wire.messages import Goodbye, Hello, Ping, Refused
from phoenix_cluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.slow

MAX_FRAME_BYTES = 4096
HANDSHAKE_TIMEOUT_S = 1.5  # the node's handshake_timeout_s, lowered to keep the test short
LOG_BURST = 10  # LogLimiter: warnings per category per 10 s before they are suppressed
CLOSE_DEADLINE_S = 3.0


@dataclass
class Harness:
    cluster: LocalCluster
    client: phx.Node
    secret: bytes
    calls: int = 0

    @property
    def address(self) -> str:
        return self.cluster.nodes[0].address

    def log(self) -> str:
        return self.cluster.nodes[0].log()

    async def call(self, n: int = 3) -> None:
        """``n`` calls to the same agent; each must see every earlier one."""
        ref = self.client.ref(Tally, "k")
        for _ in range(n):
            self.calls += 1
            assert await ref.options(timeout=5).add(1) == self.calls

    async def assert_intact(self) -> None:
        """The node still answers, the agent lost nothing, nothing crashed inside."""
        await self.call()
        assert await self.client.ref(Tally, "k").read() == [1] * self.calls
        # A different key activates a new agent: the node still does everything.
        assert await self.client.ref(Tally, f"fresh-{self.calls}").add(7) == 7
        assert self.cluster.nodes[0].running
        log = self.log()
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]

    async def wait_for_line(self, pattern: str, timeout: float = 5.0) -> str:
        """The first log line matching ``pattern`` (the node writes its log itself)."""
        regex = re.compile(pattern)

        def found() -> bool:
            return any(regex.search(line) for line in self.log().splitlines())

        await wait_until(found, timeout=timeout, what=f"a log line matching {pattern!r}")
        return next(line for line in self.log().splitlines() if regex.search(line))


@pytest.fixture
async def node() -> AsyncIterator[Harness]:
    async with LocalCluster(
        nodes=1, imports=["cluster_agents"],
        env={"PHX_MAX_FRAME_BYTES": str(MAX_FRAME_BYTES),
             "PHX_HANDSHAKE_TIMEOUT_S": str(HANDSHAKE_TIMEOUT_S)},
    ) as cluster:
        client = await cluster.client()
        harness = Harness(cluster, client, resolve_secret(cluster.cookie, None)[0])
        await harness.call()
        yield harness


async def closed_by_node(reader: asyncio.StreamReader,
                         timeout: float = CLOSE_DEADLINE_S) -> bytes:
    """Read until the node closes the socket (EOF or reset); fail after ``timeout``."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the node kept the connection open for {timeout}s")
    return data


def frames(data: bytes) -> list[object]:
    codec, decoder = WireCodec(), FrameDecoder()
    return [codec.decode(body) for body in decoder.feed(data)]


def local_address(writer: asyncio.StreamWriter) -> str:
    host, port = writer.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


async def send_unauthenticated(h: Harness, data: bytes, *, eof: bool = False) -> tuple[str, bytes]:
    """A stranger connects, sends ``data`` (then, with ``eof``, closes its side).

    Returns:
        Our address as the node logs it, and everything the node sent before closing.
    """
    reader, writer = await open_raw(h.address)
    try:
        me = local_address(writer)
        writer.write(data)
        if eof:
            writer.write_eof()
        received = await closed_by_node(reader)
    finally:
        await close_raw(writer)
    return me, received


async def send_authenticated(h: Harness, name: str, data: bytes, *,
                             eof: bool = False) -> tuple[str, bytes]:
    """A peer that knows the cluster secret and passed the handshake sends ``data``."""
    reader, writer = await raw_authenticated(h.address, name=name, secret=h.secret)
    try:
        me = local_address(writer)
        writer.write(data)
        if eof:
            writer.write_eof()
        received = await closed_by_node(reader)
    finally:
        await close_raw(writer)
    return me, received


def refusal(received: bytes) -> Refused:
    """The node spoke first (its Hello), then explained why it closes (a Refused)."""
    msgs = frames(received)
    assert isinstance(msgs[0], Hello)
    refused = [m for m in msgs if isinstance(m, Refused)]
    assert refused, msgs
    assert refused[0].code == "protocol_error"
    return refused[0]


def goodbye(received: bytes) -> Goodbye:
    byes = [m for m in frames(received) if isinstance(m, Goodbye)]
    assert byes, frames(received)
    return byes[0]


def unknown_tag_frame() -> bytes:
    """A well-formed frame whose msgpack is a message with a tag no node knows."""

    class Zap(msgspec.Struct, tag="zap", array_like=True):
        seq: int
        text: str

    return encode_frame(msgspec.msgpack.encode(Zap(1, "from the future")))


# --- a stranger: bad input before the handshake ------------------------------------------


async def test_garbage_bytes(node: Harness) -> None:
    garbage = random.Random(3).randbytes(300)
    me, received = await send_unauthenticated(node, garbage)
    assert "exceeds max_frame_bytes" in refusal(received).message
    line = await node.wait_for_line(rf"WARNING .*closing connection from {re.escape(me)} during"
                                    " the handshake: frame of [0-9,]+ bytes exceeds")
    assert node.cluster.cookie not in line
    await node.assert_intact()


async def test_http_request_on_the_cluster_port(node: Harness) -> None:
    me, received = await send_unauthenticated(
        node, b"GET / HTTP/1.1\r\nHost: phoenix\r\nUser-Agent: curl/8\r\n\r\n")
    assert "frame of 1,195,725,856 bytes" in refusal(received).message  # b"GET "
    await node.wait_for_line(rf"WARNING .*from {re.escape(me)} during the handshake: frame of"
                             " 1,195,725,856 bytes exceeds max_frame_bytes 4,096")
    await node.assert_intact()


async def test_absurd_length_header(node: Harness) -> None:
    me, received = await send_unauthenticated(node, b"\xff\xff\xff\xff")
    assert "4,294,967,295" in refusal(received).message
    await node.wait_for_line(rf"WARNING .*from {re.escape(me)} during the handshake: frame of"
                             " 4,294,967,295 bytes exceeds")
    await node.assert_intact()


async def test_malformed_msgpack_in_a_well_sized_frame(node: Harness) -> None:
    me, received = await send_unauthenticated(node, encode_frame(b"\xc1\xc1\xc1\xc1"))
    assert "invalid frame body of 4 bytes" in refusal(received).message
    await node.wait_for_line(rf"WARNING .*from {re.escape(me)} during the handshake: invalid"
                             " frame body of 4 bytes: MessagePack data is malformed")
    await node.assert_intact()


async def test_valid_frame_of_an_unknown_type(node: Harness) -> None:
    me, received = await send_unauthenticated(node, unknown_tag_frame())
    assert "'zap'" in refusal(received).message
    await node.wait_for_line(rf"WARNING .*from {re.escape(me)} during the handshake: invalid"
                             " frame body of \\d+ bytes: Invalid value 'zap'")
    await node.assert_intact()


async def test_valid_message_out_of_turn(node: Harness) -> None:
    me, received = await send_unauthenticated(node, encode_frame(WireCodec().encode(Ping(1))))
    assert "unexpected Ping during handshake" in refusal(received).message
    await node.wait_for_line(rf"WARNING .*from {re.escape(me)} during the handshake:"
                             " unexpected Ping")
    await node.assert_intact()


async def test_oversized_frame(node: Harness) -> None:
    # Before the handshake the limit is min(64 KiB, max_frame_bytes): 4 KiB here.
    size = MAX_FRAME_BYTES + 1
    me, received = await send_unauthenticated(node, size.to_bytes(4, "big") + b"x" * size)
    assert "exceeds max_frame_bytes 4,096" in refusal(received).message
    await node.wait_for_line(rf"WARNING .*from {re.escape(me)} during the handshake: frame of"
                             " 4,097 bytes exceeds max_frame_bytes 4,096")
    await node.assert_intact()


async def test_truncated_frame_then_close(node: Harness) -> None:
    # Announces 100 bytes, sends 10, closes its side: the node closes too.
    await send_unauthenticated(node, (100).to_bytes(4, "big") + b"x" * 10, eof=True)
    await node.assert_intact()


@pytest.mark.parametrize("authenticated", [False, True], ids=["stranger", "peer"])
async def test_truncated_frame_is_logged(node: Harness, authenticated: bool) -> None:
    cut = (100).to_bytes(4, "big") + b"x" * 10
    if authenticated:
        me, _ = await send_authenticated(node, "buggy-cut", cut, eof=True)
    else:
        me, _ = await send_unauthenticated(node, cut, eof=True)
    await node.wait_for_line(rf"WARNING .*{re.escape(me)}.*(truncated|incomplete|ended)",
                             timeout=2.0)


async def test_slowloris_is_dropped_after_the_handshake_timeout(node: Harness) -> None:
    # Several strangers connect and send half a header, then nothing. The node keeps
    # serving meanwhile and drops each after the node's handshake_timeout_s.
    loop = asyncio.get_running_loop()
    socks = [await open_raw(node.address) for _ in range(20)]
    started = loop.time()
    try:
        mes = [local_address(w) for _, w in socks]
        for _, writer in socks:
            writer.write(b"\x00\x00")
        await node.call(5)  # served while twenty sockets hang in the handshake
        for reader, _ in socks:
            await closed_by_node(reader, timeout=HANDSHAKE_TIMEOUT_S + 5.0)
        held = loop.time() - started
    finally:
        for _, writer in socks:
            await close_raw(writer)
    assert HANDSHAKE_TIMEOUT_S - 0.5 <= held <= HANDSHAKE_TIMEOUT_S + 5.0
    line = await node.wait_for_line(
        r"WARNING .*dropping connection from 127\.0\.0\.1:\d+: handshake with .* not"
        rf" completed within {HANDSHAKE_TIMEOUT_S}s")
    assert any(me in line for me in mes)
    # Twenty at once: the rate limiter lets a burst through, then stays quiet.
    dropped = [ln for ln in node.log().splitlines() if "dropping connection from" in ln]
    assert 1 <= len(dropped) <= LOG_BURST
    await node.assert_intact()


async def test_a_flood_of_strangers_is_logged_rate_limited(node: Harness) -> None:
    rng = random.Random(7)
    for i in range(40):
        if i % 2:
            data = rng.randbytes(rng.randint(1, 200))
        else:
            data = encode_frame(rng.randbytes(rng.randint(1, 64)))
        await send_unauthenticated(node, data, eof=bool(i % 3 == 0))
    await node.wait_for_line(r"WARNING .*closing connection from 127\.0\.0\.1:\d+ during the"
                             " handshake")
    lines = [ln for ln in node.log().splitlines()
             if "closing connection from" in ln and "during the handshake" in ln]
    assert 1 <= len(lines) <= LOG_BURST
    await node.assert_intact()


# --- an authenticated but buggy peer: bad input after the handshake -----------------------


async def test_malformed_msgpack_after_the_handshake(node: Harness) -> None:
    me, received = await send_authenticated(node, "buggy-msgpack",
                                            encode_frame(b"\x92\xa3\x80\x80\x80\x01"))
    assert "protocol error" in goodbye(received).reason
    await node.wait_for_line(rf"WARNING .*closing connection to buggy-msgpack: invalid frame"
                             rf" body of 6 bytes.* from {re.escape(me)}")
    await node.assert_intact()


async def test_unknown_type_after_the_handshake(node: Harness) -> None:
    me, received = await send_authenticated(node, "buggy-tag", unknown_tag_frame())
    assert "'zap'" in goodbye(received).reason
    await node.wait_for_line(rf"WARNING .*closing connection to buggy-tag: invalid frame body"
                             rf" of \d+ bytes: Invalid value 'zap'.* from {re.escape(me)}")
    await node.assert_intact()


async def test_oversized_frame_after_the_handshake(node: Harness) -> None:
    size = MAX_FRAME_BYTES + 1
    me, received = await send_authenticated(node, "buggy-size",
                                            size.to_bytes(4, "big") + b"y" * size)
    assert "exceeds max_frame_bytes 4,096" in goodbye(received).reason
    await node.wait_for_line(rf"WARNING .*closing connection to buggy-size: frame of 4,097"
                             rf" bytes exceeds max_frame_bytes 4,096 from {re.escape(me)}")
    await node.assert_intact()


async def test_truncated_frame_after_the_handshake(node: Harness) -> None:
    await send_authenticated(node, "buggy-cut", (100).to_bytes(4, "big") + b"z" * 10, eof=True)
    await node.assert_intact()


# --- the gossip port ------------------------------------------------------------------------


async def test_garbage_datagrams_to_the_gossip_port(node: Harness) -> None:
    host, port = parse_address(node.address)  # gossip: the same port number, over UDP
    rng = random.Random(11)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        me = f"127.0.0.1:{udp.getsockname()[1]}"
        for size in [0, 1, 16, 40, 41, 100, 1200, 9000, 65_000] + [rng.randint(1, 1500)] * 50:
            udp.sendto(rng.randbytes(size), (host, port))
    line = await node.wait_for_line(rf"WARNING .*dropped a \d+-byte gossip datagram from"
                                    rf" {re.escape(me)}: bad authentication tag")
    assert node.cluster.cookie not in line
    # Rate-limited per source: one line for the whole burst.
    assert sum(me in ln for ln in node.log().splitlines()) == 1
    await node.assert_intact()
    # Membership still works: the node still sees the client alive and vice versa.
    assert any(m.name == "node-0" and m.status == "alive" for m in node.client.members())
