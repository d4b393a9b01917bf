"""Authentication, bad input and TLS: each bad connection is closed; the node keeps serving."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from pathlib import Path

import msgspec
import pytest
from transport_helpers import (
    MakeTransport,
    close_raw,
    make_call,
    open_raw,
    raw_authenticated,
    read_until_closed,
)

from phoenix_cluster._transport.base import ConnectionBroken
from phoenix_cluster._transport.tcp import TcpTransport
from phoenix_cluster._transport.tls import tls_contexts
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.frames import FrameDecoder, encode_frame
from phoenix_cluster._wire.messages import (
    ChallengeResponse,
    Goodbye,
    Hello,
    Ping,
    Refused,
    Reply,
    Welcome,
)
from phoenix_cluster.errors import AuthenticationError, ConfigError, ProtocolError
from phoenix_cluster.testing import wait_until

LOGGER = "phoenix_cluster.transport"


async def assert_serves(server_addr: str, make_transport: MakeTransport, name: str) -> None:
    """A well-behaved client still gets answers."""
    good = make_transport(name)
    conn = await good.connect(server_addr)
    assert await conn.request(make_call(99, b"still here"), timeout_s=5) == Reply(
        99, b"still here"
    )


def frames_in(data: bytes) -> list[object]:
    codec, decoder = WireCodec(), FrameDecoder()
    return [codec.decode(body) for body in decoder.feed(data)]


async def test_wrong_secret_refused_on_both_sides(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_transport("server")
    addr = await server.start("127.0.0.1:0")
    intruder = make_transport("intruder", secret=b"not-the-secret")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(AuthenticationError) as info:
            await intruder.connect(addr)
        await wait_until(lambda: server.statistics().auth_failures == 1)
    assert info.value.definite is True
    assert addr in info.value.message and "cookie" in info.value.message
    assert intruder.statistics().auth_failures == 1 and intruder.statistics().connections == 0
    # The server names the peer's address, never the secret.
    (record,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert "refused connection from 127.0.0.1:" in record.getMessage()
    assert "not-the-secret" not in caplog.text and "transport-test-secret" not in caplog.text
    assert server.statistics().connections == 0
    await assert_serves(addr, make_transport, "friend")


async def test_forged_proof_is_refused_by_the_server(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_transport("server")
    addr = await server.start("127.0.0.1:0")
    reader, writer = await open_raw(addr)
    codec = WireCodec()
    hello = Hello(versions=(1,), node="forger", incarnation=1, nonce=b"n" * 32)
    writer.write(encode_frame(codec.encode(hello)))
    # Skip checking the server's proof and answer with a made-up one.
    writer.write(encode_frame(codec.encode(ChallengeResponse(proof=b"\x00" * 32))))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        received = await read_until_closed(reader)
        await wait_until(lambda: server.statistics().auth_failures == 1)
    await close_raw(writer)
    (refused,) = [m for m in frames_in(received) if isinstance(m, Refused)]
    assert refused.code == "authentication_error"
    assert not any(isinstance(m, Welcome) for m in frames_in(received))
    assert "refused connection from 127.0.0.1:" in caplog.text and "forger" in caplog.text
    await assert_serves(addr, make_transport, "friend")


@pytest.mark.parametrize(
    ("garbage", "expect"),
    [
        (b"GET / HTTP/1.1\r\nHost: node\r\n\r\n", "frame of 1,195,725,856 bytes exceeds"),
        (b"\x00\x00\x00\x05hello", "invalid frame body of 5 bytes"),
        (b"\x00\x00\x00\x00", "zero-length frame"),
        (encode_frame(WireCodec().encode(Ping(seq=1))), "unexpected Ping during handshake"),
        (b"\x00\x00\x00\x06\x92\xa3\x80\x80\x80\x01", "invalid frame body of 6 bytes"),
    ],
    ids=["http-request", "bad-msgpack", "zero-length", "ping-before-hello", "bad-utf8"],
)
async def test_bad_input_before_the_handshake_closes_that_connection(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture, garbage: bytes, expect: str
) -> None:
    server = make_transport("server")
    addr = await server.start("127.0.0.1:0")
    reader, writer = await open_raw(addr)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        writer.write(garbage)
        received = await read_until_closed(reader)
        await wait_until(lambda: server.statistics().handshake_failures == 1)
    await close_raw(writer)
    msgs = frames_in(received)
    assert isinstance(msgs[0], Hello)  # the server spoke first, as both sides do
    refusals = [m for m in msgs if isinstance(m, Refused)]
    assert refusals and refusals[0].code == "protocol_error" and expect in refusals[0].message
    line = next(r.getMessage() for r in caplog.records if expect in r.getMessage())
    assert "from 127.0.0.1:" in line
    assert server.statistics().protocol_errors == 1
    await assert_serves(addr, make_transport, "friend")


async def test_oversized_frame_after_handshake_closes_connection(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_transport("server", max_frame_bytes=8 * 1024 * 1024)
    addr = await server.start("127.0.0.1:0")
    reader, writer = await raw_authenticated(addr, name="buggy")
    await wait_until(lambda: server.statistics().connections == 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        writer.write((9 * 1024 * 1024).to_bytes(4, "big"))  # announces 9 MiB, sends nothing
        await read_until_closed(reader)
        await wait_until(lambda: server.statistics().connections == 0)
    await close_raw(writer)
    line = next(r.getMessage() for r in caplog.records if "exceeds" in r.getMessage())
    assert "frame of 9,437,184 bytes exceeds max_frame_bytes 8,388,608" in line
    assert "buggy" in line and "127.0.0.1:" in line
    assert server.statistics().protocol_errors == 1
    await assert_serves(addr, make_transport, "friend")


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x00\x00\x03\xc1\xc1\xc1", b"\x00\x00\x00\x06\x92\xa3\x80\x80\x80\x01"],
    ids=["never-valid-msgpack", "bad-utf8-tag"],
)
async def test_garbage_after_handshake_closes_connection(
    make_transport: MakeTransport, garbage: bytes
) -> None:
    server = make_transport("server")
    addr = await server.start("127.0.0.1:0")
    reader, writer = await raw_authenticated(addr, name="buggy")
    writer.write(garbage)
    received = await read_until_closed(reader)
    await close_raw(writer)
    await wait_until(lambda: server.statistics().protocol_errors == 1)
    goodbyes = [m for m in frames_in(received) if isinstance(m, Goodbye)]
    assert goodbyes and "protocol error" in goodbyes[0].reason
    await assert_serves(addr, make_transport, "friend")


async def test_fuzzed_frames_after_handshake_never_hurt_the_server(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(20240601)
    server = make_transport("server")
    addr = await server.start("127.0.0.1:0")
    codec = WireCodec()
    valid = codec.encode(Ping(seq=1))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(40):
            kind = i % 3
            if kind == 0:  # random bytes, framed
                body = rng.randbytes(rng.randint(1, 64))
            elif kind == 1:  # a valid message with bytes flipped
                raw = bytearray(valid)
                raw[rng.randrange(len(raw))] = rng.randrange(256)
                body = bytes(raw)
            else:  # msgpack arrays with random tags and fields
                body = msgspec.msgpack.encode([rng.choice(["rep", "call", "hello", "x", ""]),
                                               *rng.choices([1, -1, "s", b"b", None], k=3)])
            reader, writer = await raw_authenticated(addr, name=f"fuzz{i}")
            writer.write(encode_frame(body) + encode_frame(valid))
            writer.write_eof()
            await read_until_closed(reader)
            await close_raw(writer)
    await wait_until(lambda: server.statistics().connections == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    await assert_serves(addr, make_transport, "friend")


async def test_silent_client_is_dropped_after_the_handshake_timeout(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_transport("server", handshake_timeout_s=0.2)
    addr = await server.start("127.0.0.1:0")
    slow_reader, slow_writer = await open_raw(addr)
    slow_writer.write(b"\x00\x00")  # half a header, then nothing (slowloris)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await read_until_closed(slow_reader, timeout=5)
        await wait_until(lambda: server.statistics().handshake_failures == 1)
    await close_raw(slow_writer)
    assert "handshake with 127.0.0.1:" in caplog.text and "within 0.2s" in caplog.text
    assert server.statistics().handshaking == 0
    await assert_serves(addr, make_transport, "friend")


async def test_server_that_never_answers_times_out_the_dial(make_transport: MakeTransport) -> None:
    held: list[asyncio.StreamWriter] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, then say nothing

    mute = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = mute.sockets[0].getsockname()[1]
    try:
        client = make_transport("client", handshake_timeout_s=0.2)
        with pytest.raises(ConnectionBroken, match=r"not completed within 0\.2s") as info:
            await client.connect(f"127.0.0.1:{port}")
        assert info.value.definite is True
    finally:
        for w in held:
            w.transport.abort()
        mute.close()
        await mute.wait_closed()


async def test_unreachable_address_is_a_definite_connection_broken(
    make_transport: MakeTransport,
) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = make_transport("client")
    with pytest.raises(ConnectionBroken, match=f"cannot connect to 127.0.0.1:{port}") as info:
        await client.connect(f"127.0.0.1:{port}")
    assert info.value.definite is True


# --- TLS ------------------------------------------------------------------------------------


def server_context(files: dict[str, Path], *, mutual: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files["ca.pem"]))
    ctx.load_cert_chain(files["server.pem"], files["server.key"])
    ctx.verify_mode = ssl.CERT_REQUIRED if mutual else ssl.CERT_NONE
    return ctx


def client_context(files: dict[str, Path], *, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files["ca.pem"]))
    if with_cert:
        ctx.load_cert_chain(files["client.pem"], files["client.key"])
    return ctx


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
async def test_tls_round_trip(
    make_transport: MakeTransport, tls_files: dict[str, Path], mutual: bool
) -> None:
    server = make_transport("server", ssl_server=server_context(tls_files, mutual=mutual))
    addr = await server.start("127.0.0.1:0")
    client = make_transport("client", ssl_client=client_context(tls_files, with_cert=mutual))
    conn = await client.connect(addr)
    replies = await asyncio.gather(*(conn.request(make_call(i, b"tls"), timeout_s=5)
                                     for i in range(100)))
    assert [r.request_id for r in replies] == list(range(100))
    (inbound,) = server.connections()
    assert inbound.peer_name == "client"


async def test_mutual_tls_refuses_a_client_without_certificate(
    make_transport: MakeTransport, tls_files: dict[str, Path]
) -> None:
    server = make_transport("server", ssl_server=server_context(tls_files, mutual=True))
    addr = await server.start("127.0.0.1:0")
    anonymous = make_transport("anonymous",
                               ssl_client=client_context(tls_files, with_cert=False))
    with pytest.raises((ConnectionBroken, AuthenticationError, ProtocolError)):
        await anonymous.connect(addr)
    assert server.statistics().connections == 0
    friend = make_transport("friend", ssl_client=client_context(tls_files, with_cert=True))
    conn = await friend.connect(addr)
    assert await conn.request(make_call(1, b"ok"), timeout_s=5) == Reply(1, b"ok")


async def test_tls_client_rejects_an_untrusted_server(
    make_transport: MakeTransport, tls_files: dict[str, Path]
) -> None:
    server = make_transport("server", ssl_server=server_context(tls_files, mutual=False))
    addr = await server.start("127.0.0.1:0")
    strict = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # system CAs only
    client = make_transport("client", ssl_client=strict)
    with pytest.raises(AuthenticationError, match="TLS certificate"):
        await client.connect(addr)


async def test_plain_client_cannot_talk_to_a_tls_server(
    make_transport: MakeTransport, tls_files: dict[str, Path]
) -> None:
    server = make_transport("server", ssl_server=server_context(tls_files, mutual=False),
                            handshake_timeout_s=1.0)
    addr = await server.start("127.0.0.1:0")
    plain: TcpTransport = make_transport("plain", handshake_timeout_s=1.0)
    with pytest.raises((ConnectionBroken, ProtocolError)):
        await plain.connect(addr)
    await assert_serves_tls(addr, make_transport, tls_files)


async def assert_serves_tls(addr: str, make_transport: MakeTransport,
                            files: dict[str, Path]) -> None:
    friend = make_transport("friend", ssl_client=client_context(files, with_cert=False))
    conn = await friend.connect(addr)
    assert await conn.request(make_call(1, b"ok"), timeout_s=5) == Reply(1, b"ok")


async def test_hostname_check_can_be_turned_off_for_a_cluster_ca(
    make_transport: MakeTransport, tls_files: dict[str, Path]
) -> None:
    # The certificates name 127.0.0.1 only; 127.0.0.2 stands for a pod IP they cannot name.
    f = {k: str(v) for k, v in tls_files.items()}
    server_ctx, _ = tls_contexts(f["server.pem"], f["server.key"], f["ca.pem"])
    server = make_transport("server", ssl_server=server_ctx)
    addr = await server.start("127.0.0.2:0")
    _, checking = tls_contexts(f["client.pem"], f["client.key"], f["ca.pem"])
    with pytest.raises((ConnectionBroken, AuthenticationError, ProtocolError)):
        await make_transport("checking", ssl_client=checking).connect(addr)
    _, lenient = tls_contexts(f["client.pem"], f["client.key"], f["ca.pem"],
                              verify_hostname=False)
    conn = await make_transport("lenient", ssl_client=lenient).connect(addr)
    assert await conn.request(make_call(1, b"ok"), timeout_s=5) == Reply(1, b"ok")
    # The chain is still checked: a server certificate from another CA is refused.
    strict_ca = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # system CAs only
    strict_ca.check_hostname = False
    strict_ca.load_cert_chain(f["client.pem"], f["client.key"])
    with pytest.raises((ConnectionBroken, AuthenticationError, ProtocolError)):
        await make_transport("other-ca", ssl_client=strict_ca).connect(addr)


def test_hostname_check_off_needs_a_ca(tls_files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="tls_ca") as info:
        tls_contexts(str(tls_files["server.pem"]), str(tls_files["server.key"]), None,
                     verify_hostname=False)
    assert info.value.key == "tls_verify_hostname"
