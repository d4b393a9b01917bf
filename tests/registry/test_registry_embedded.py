"""Registry, groups and pub/sub on an embedded node: a cluster of one, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from registry_agents import Sink

import phoenix_cluster as phx
from phoenix_cluster._registry.messages import LookupRequest, Publish, encode
from phoenix_cluster.testing import wait_until


@pytest.fixture
async def node() -> AsyncIterator[phx.Node]:
    async with phx.Node(name="solo") as n:
        yield n


async def test_register_lookup_unregister_a_value(node: phx.Node) -> None:
    reg = node.registry
    await reg.register("config", {"port": 8080})
    assert await reg.lookup("config") == {"port": 8080}
    assert await reg.lookup("config", cached=False) == {"port": 8080}
    info = await reg.info("config")
    assert info is not None
    assert (info.holder, info.lifetime, info.value) == ("solo", "node", {"port": 8080})
    assert reg.held() == ["config"]
    assert await reg.unregister("config") is True
    assert await reg.lookup("config") is None
    assert await reg.unregister("config") is False
    assert reg.held() == []


async def test_agent_names_resolve_to_working_refs(node: phx.Node) -> None:
    await node.registry.register("inbox", node.ref(Sink, "s1"))
    ref = await node.registry.lookup("inbox")
    assert isinstance(ref, phx.AgentRef)
    assert (ref.kind, ref.key) == ("registry.sink", "s1")
    await ref.on_message("hi")
    assert await node.ref(Sink, "s1").messages() == ["hi"]


async def test_a_taken_name_is_refused_with_a_typed_error(node: phx.Node) -> None:
    await node.registry.register("svc", "a")
    await node.registry.register("svc", "a")  # the same claim again: no-op
    with pytest.raises(phx.NameTaken, match="already registered by solo") as info:
        await node.registry.register("svc", "b")
    assert info.value.definite
    assert isinstance(info.value, phx.DefiniteError)
    assert await node.registry.lookup("svc") == "a"


async def test_names_by_prefix(node: phx.Node) -> None:
    for name in ("svc/a", "svc/b", "db/main"):
        await node.registry.register(name, name)
    assert await node.registry.names() == ["db/main", "svc/a", "svc/b"]
    assert await node.registry.names("svc/") == ["svc/a", "svc/b"]


@pytest.mark.parametrize(("name", "value", "error"), [
    ("", 1, ValueError),
    (7, 1, TypeError),
    ("ok", object(), TypeError),
])
async def test_bad_registrations(node: phx.Node, name: Any, value: Any,
                                 error: type[Exception]) -> None:
    with pytest.raises(error):
        await node.registry.register(name, value)
    with pytest.raises(ValueError, match="lifetime"):
        await node.registry.register("x", 1, lifetime="forever")  # type: ignore[arg-type]


async def test_registered_telemetry(node: phx.Node) -> None:
    seen: list[tuple[Any, ...]] = []
    node.telemetry.attach("reg-test", [phx.telemetry.REGISTRY_REGISTERED],
                          lambda e, m, md: seen.append((e, dict(m), dict(md))))
    try:
        await node.registry.register("t", 1)
    finally:
        node.telemetry.detach("reg-test")
    [(_, measurements, metadata)] = seen
    assert metadata == {"node": "solo", "name": "t"}
    assert 0 <= measurements["duration"] < 1.0  # seconds: a local register is quick


async def test_groups_join_leave_members(node: phx.Node) -> None:
    a, b = node.ref(Sink, "a"), node.ref(Sink, "b")
    await node.groups.join("workers", b)
    await node.groups.join("workers", a)
    await node.groups.join("workers", a)
    assert await node.groups.members("workers") == [a, b]
    assert node.groups.local_groups() == ["workers"]
    assert await node.groups.leave("workers", a) is True
    assert await node.groups.leave("workers", a) is False
    assert await node.groups.members("workers") == [b]
    assert await node.groups.members("nobody") == []
    with pytest.raises(TypeError):
        await node.groups.join("workers", "not a ref")  # type: ignore[arg-type]


async def test_pubsub_reaches_callbacks_and_agents_in_order(node: phx.Node) -> None:
    got_sync: list[int] = []
    got_async: list[int] = []

    async def slow(message: int) -> None:
        await asyncio.sleep(0)
        got_async.append(message)

    await node.pubsub.subscribe("t", got_sync.append)
    await node.pubsub.subscribe("t", slow)
    await node.pubsub.subscribe("t", node.ref(Sink, "s"), "on_message")
    await node.pubsub.subscribe("t", node.ref(Sink, "s"), "on_message")  # idempotent
    assert node.pubsub.subscribers("t") == 3
    for i in range(99):
        await node.pubsub.publish("t", i)
    # A confirmed publish returns once every subscriber took it: the sink's mailbox then
    # holds all 100 casts ahead of the call below.
    delivery = await node.pubsub.publish("t", 99, confirm=True)
    assert (delivery.delivered, delivery.dropped) == (3, 0)
    assert got_sync == got_async == list(range(100))
    assert await node.ref(Sink, "s").messages() == list(range(100))


async def test_confirmed_publish_counts_deliveries_and_drops(node: phx.Node) -> None:
    def broken(message: Any) -> None:
        raise RuntimeError("subscriber bug")

    await node.pubsub.subscribe("c", node.ref(Sink, "c"), "on_message")
    await node.pubsub.subscribe("c", broken)
    delivery = await node.pubsub.publish("c", "m", confirm=True)
    assert (delivery.delivered, delivery.dropped, delivery.unreachable) == (1, 1, ())
    assert await node.ref(Sink, "c").messages() == ["m"]
    empty = await node.pubsub.publish("nobody-listens", "m", confirm=True)
    assert (empty.delivered, empty.dropped) == (0, 0)


async def test_unsubscribe_stops_delivery(node: phx.Node) -> None:
    got: list[int] = []
    await node.pubsub.subscribe("u", got.append)
    await node.pubsub.publish("u", 1)
    assert await node.pubsub.unsubscribe("u", got.append) is True
    assert await node.pubsub.unsubscribe("u", got.append) is False
    await node.pubsub.publish("u", 2)
    assert got == [1]
    assert node.pubsub.topics() == []


async def test_a_full_subscriber_queue_drops_and_reports(node: phx.Node) -> None:
    gate = asyncio.Event()
    got: list[int] = []
    drops: list[str] = []

    async def blocked(message: int) -> None:
        await gate.wait()
        got.append(message)

    node.pubsub.settings = type(node.pubsub.settings)(subscriber_queue_limit=3)
    node.telemetry.attach("drop-test", [phx.telemetry.PUBSUB_DROPPED],
                          lambda e, m, md: drops.append(str(md["reason"])))
    try:
        await node.pubsub.subscribe("q", blocked)
        for i in range(5):
            await node.pubsub.publish("q", i)
        gate.set()
        await wait_until(lambda: len(got) == 3, what="the queued messages")
    finally:
        node.telemetry.detach("drop-test")
    assert got == [0, 1, 2]
    assert drops == ["queue_full", "queue_full"]


async def test_bad_subscriptions(node: phx.Node) -> None:
    with pytest.raises(phx.AgentNotFound, match="no method 'nope'"):
        await node.pubsub.subscribe("t", node.ref(Sink, "s"), "nope")
    with pytest.raises(TypeError):
        await node.pubsub.subscribe("t", node.ref(Sink, "s"))  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        await node.pubsub.subscribe("t", 42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="msgpack"):
        await node.pubsub.publish("t", object())


@pytest.mark.parametrize(("service", "method", "payload", "error"), [
    ("registry", "nope", b"", phx.AgentNotFound),
    ("registry", "register", b"\xc1garbage", phx.ProtocolError),
    ("registry", "lookup", b"\x91\xc4\x01\x00", phx.ProtocolError),
    ("registry", "lookup", encode(LookupRequest("x" * 2000)), phx.ProtocolError),
    ("registry", "store", encode(Publish("t", "x", msgspec.Raw(msgspec.msgpack.encode(b"\x01")))),
     phx.ProtocolError),
    ("registry", "names", b"\x91\x07", phx.ProtocolError),
    ("groups", "members", b"\x91\xa0", phx.ProtocolError),
    ("groups", "what", b"", phx.AgentNotFound),
    ("pubsub", "publish", b"\x93", phx.ProtocolError),
    ("pubsub", "subscribe", b"", phx.AgentNotFound),
])
async def test_service_handlers_refuse_bad_input_with_typed_errors(
    node: phx.Node, service: str, method: str, payload: bytes, error: type[Exception]
) -> None:
    handler = node._services.link.local[service]
    with pytest.raises(error):
        await handler(method, payload)
    # The node still works.
    await node.registry.register(f"after-{service}-{method}", 1)
