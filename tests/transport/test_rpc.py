"""Node services over the transport (``_transport/rpc.py``): two real transports on
loopback, a service multiplexer on one side and the RPC client on the other."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from transport_helpers import MakeTransport, echo

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._transport.base import PeerConnection
from phoenix_cluster._transport.peers import PeerManager
from phoenix_cluster._transport.rpc import Inbound, RpcClient, Services
from phoenix_cluster._wire.messages import Call, Cast, Error, Redirect, Reply
from phoenix_cluster.errors import (
    AgentNotFound,
    CallTimeout,
    NodeUnavailable,
    NotLeader,
    PhoenixError,
    ProtocolError,
)


@dataclass
class Pair:
    server: Services
    inbound: Inbound
    client: RpcClient
    address: str
    ids: itertools.count[int]


@pytest.fixture
async def pair(make_transport: MakeTransport) -> AsyncIterator[Pair]:
    services = Services()
    inbound = Inbound(services)
    server = make_transport("server", handler=inbound)
    address = await server.start("127.0.0.1:0")
    peers = PeerManager(make_transport("client"), env=Env())
    ids = itertools.count(100)
    client = RpcClient(peers, Env().clock, lambda: next(ids))
    client.addresses = {"server": address}
    yield Pair(services, inbound, client, address, ids)
    await peers.aclose()


async def test_a_call_reaches_its_service_and_returns_the_reply(pair: Pair) -> None:
    seen: list[tuple[str, bytes]] = []

    async def upper(method: str, payload: bytes) -> bytes:
        seen.append((method, payload))
        return payload.upper()

    pair.server.register("upper", upper)
    assert await pair.client.call(pair.address, "upper", "shout", b"hi", 5.0) == b"HI"
    assert await pair.client.call_node("upper", "server", "again", b"yo", 5.0) == b"YO"
    assert seen == [("shout", b"hi"), ("again", b"yo")]
    assert next(pair.ids) == 102  # each call took one id from the node's sequence


async def test_a_service_error_comes_back_typed(pair: Pair) -> None:
    async def refuse(method: str, payload: bytes) -> bytes:
        if method == "lead":
            raise NotLeader("not the leader here")
        raise ProtocolError(f"no method {method!r}")

    pair.server.register("refuse", refuse)
    with pytest.raises(NotLeader, match="not the leader here") as lead:
        await pair.client.call(pair.address, "refuse", "lead", b"", 5.0)
    assert lead.value.definite
    with pytest.raises(ProtocolError, match="no method 'other'"):
        await pair.client.call(pair.address, "refuse", "other", b"", 5.0)


async def test_an_immediate_handler_answers_on_the_spot_or_passes_the_frame_on(
        pair: Pair) -> None:
    served: list[str] = []
    answered_now: list[str] = []

    async def slow(method: str, payload: bytes) -> bytes:
        served.append(method)
        await asyncio.sleep(0)
        return b"later:" + payload

    def now(method: str, payload: bytes) -> bytes | None:
        if method == "refuse":
            raise NotLeader("not here")
        if method == "bug":
            answered_now.append(method)
            raise KeyError("half done")
        if method != "read":
            return None
        answered_now.append(method)
        return b"now:" + payload

    pair.server.register("mixed", slow, now)
    assert await pair.client.call(pair.address, "mixed", "read", b"a", 5.0) == b"now:a"
    assert await pair.client.call(pair.address, "mixed", "write", b"b", 5.0) == b"later:b"
    with pytest.raises(NotLeader, match="not here") as refused:
        await pair.client.call(pair.address, "mixed", "refuse", b"", 5.0)
    assert refused.value.definite
    # A bug is answered as one (outcome unknown), not run again on the task path.
    with pytest.raises(PhoenixError, match="raised KeyError") as bug:
        await pair.client.call(pair.address, "mixed", "bug", b"", 5.0)
    assert not bug.value.definite
    assert (answered_now, served) == (["read", "bug"], ["write"])
    # Casts take the same path: the immediate one runs, none is answered.
    await pair.client.cast(pair.address, "mixed", "read", b"c", 5.0)
    await pair.client.cast(pair.address, "mixed", "refuse", b"", 5.0)
    assert await pair.client.call(pair.address, "mixed", "read", b"d", 5.0) == b"now:d"
    assert answered_now == ["read", "bug", "read", "read"]


async def test_a_started_call_leaves_at_once_and_is_answered_by_the_reader(
        pair: Pair) -> None:
    release = asyncio.Event()

    async def serve(method: str, payload: bytes) -> bytes:
        if method == "lead":
            raise NotLeader("not the leader here")
        if method == "stuck":
            await release.wait()
        return payload.upper()

    pair.server.register("s", serve)
    answers: list[bytes | BaseException] = []
    # No open connection yet, or an unknown member: nothing is sent, call_node's turn.
    assert not pair.client.start_node("s", "server", "m", b"x", 5.0, answers.append)
    assert not pair.client.start_node("s", "ghost", "m", b"x", 5.0, answers.append)
    assert await pair.client.call_node("s", "server", "m", b"hi", 5.0) == b"HI"
    got = asyncio.get_running_loop().create_future()

    def answered(answer: bytes | BaseException) -> None:
        answers.append(answer)
        if len(answers) == 3 and not got.done():
            got.set_result(None)

    for method, payload, timeout in [("m", b"yo", 5.0), ("lead", b"", 5.0),
                                     ("stuck", b"", 0.2)]:
        assert pair.client.start_node("s", "server", method, payload, timeout, answered)
    async with asyncio.timeout(5.0):
        await got
    assert answers[0] == b"YO"
    assert isinstance(answers[1], NotLeader) and answers[1].definite
    assert isinstance(answers[2], CallTimeout)
    release.set()


async def test_an_unknown_service_is_a_definite_agent_not_found(pair: Pair) -> None:
    with pytest.raises(AgentNotFound, match=r"no service '\$nothing'") as info:
        await pair.client.call(pair.address, "nothing", "m", b"", 5.0)
    assert info.value.definite


async def test_an_unknown_member_is_a_definite_node_unavailable(pair: Pair) -> None:
    with pytest.raises(NodeUnavailable, match="no address known for node 'ghost'") as info:
        await pair.client.call_node("placement", "ghost", "m", b"", 5.0)
    assert info.value.definite


async def test_a_call_that_outlives_its_deadline_times_out(pair: Pair) -> None:
    release = asyncio.Event()

    async def stuck(method: str, payload: bytes) -> bytes:
        await release.wait()
        return b""

    pair.server.register("stuck", stuck)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CallTimeout):
        await pair.client.call(pair.address, "stuck", "m", b"", 0.2)
    assert loop.time() - started < 2.0
    release.set()


async def test_casts_arrive_in_the_order_sent(pair: Pair) -> None:
    got: list[bytes] = []
    all_in = asyncio.Event()

    async def note(method: str, payload: bytes) -> bytes:
        got.append(payload)
        if len(got) == 50:
            all_in.set()
        return b""

    pair.server.register("note", note)
    for i in range(50):
        await pair.client.cast(pair.address, "note", "m", str(i).encode(), 5.0)
    await asyncio.wait_for(all_in.wait(), 10.0)
    assert got == [str(i).encode() for i in range(50)]


async def test_agent_messages_go_to_the_agent_handler_only(pair: Pair) -> None:
    """Frames whose kind has no ``$`` never reach a service, and without an agent layer
    they get a definite NodeUnavailable (nothing ran)."""
    calls: list[str] = []

    async def svc(method: str, payload: bytes) -> bytes:
        calls.append(method)
        return b""

    pair.server.register("counter", svc)  # same name as the agent kind below
    conn = await pair.client.peers.connection(pair.address)
    answer = await conn.request(Call(1, "counter", "k", "m", b"x", 5_000), 5.0)
    assert isinstance(answer, Error) and answer.code == NodeUnavailable.code
    assert answer.definite
    pair.inbound.serve_agents(echo)
    answer = await conn.request(Call(2, "counter", "k", "m", b"x", 5_000), 5.0)
    assert isinstance(answer, Reply) and answer.payload == b"x"
    assert calls == []


async def test_the_wire_format_is_a_call_of_the_reserved_kind(
        make_transport: MakeTransport) -> None:
    """Peers of older versions serve ``$service`` Call frames with an empty key: the
    client must send exactly that."""
    frames: list[Call | Cast] = []

    async def record(peer: PeerConnection, frame: Call | Cast) -> Reply | Error | Redirect | None:
        frames.append(frame)
        return Reply(frame.request_id, b"ok")

    old = make_transport("old", handler=record)
    address = await old.start("127.0.0.1:0")
    peers = PeerManager(make_transport("new"), env=Env())
    ids: Callable[[], int] = itertools.count(7).__next__
    try:
        client = RpcClient(peers, Env().clock, ids)
        assert await client.call(address, "membership", "sync", b"p", 5.0) == b"ok"
        (frame,) = frames
        assert isinstance(frame, Call)
        assert (frame.request_id, frame.kind, frame.key, frame.method, frame.payload) == (
            7, "$membership", "", "sync", b"p")
        assert 0 < frame.timeout_ms <= 5_000
    finally:
        await peers.aclose()


def test_a_service_name_is_registered_once() -> None:
    services = Services()

    async def handler(method: str, payload: bytes) -> bytes:
        return b""

    services.register("crdt", handler)
    with pytest.raises(ValueError, match="'crdt' is already registered"):
        services.register("crdt", handler)
    assert "crdt" in services and repr(services) == "<Services [crdt]>"

