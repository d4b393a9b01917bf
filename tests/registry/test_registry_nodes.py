"""Registry, groups and pub/sub across nodes in one process, over real loopback TCP.

These cover the protocol quickly; ``test_registry_processes.py`` repeats the essentials on
separate node processes with kills and partitions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from registry_agents import Sink
from registry_helpers import (
    converged,
    eventually,
    owners,
    start_client,
    start_member,
    stored_on,
)

import phoenix_cluster as phx
from phoenix_cluster._registry.entries import Entry
from phoenix_cluster._registry.messages import Publish, StoreRequest, encode
from phoenix_cluster._registry.settings import RegistrySettings
from phoenix_cluster.testing import wait_until

encode_value = msgspec.msgpack.encode


@pytest.fixture
async def four() -> AsyncIterator[list[phx.Node]]:
    """Four members (so a name's three owners are not every node) and a client."""
    first = await start_member("m0", [])
    assert first.address is not None
    nodes = [first]
    try:
        for i in range(1, 4):
            nodes.append(await start_member(f"m{i}", [first.address]))
        await converged(nodes, [n.name for n in nodes])
        client = await start_client([first.address])
        nodes.append(client)
        await converged([client], [n.name for n in nodes[:4]])
        await wait_until(lambda: all(
            any(m.name == client.name and m.status == "alive" for m in n.members())
            for n in nodes[:4]), what="every member to see the client")
        # Ready: every partition elected. The four members share this process's loop, and
        # their start-up elections competing with a test's first calls stalled it past
        # the tests' timeouts on a slow, loaded 2-core machine (two CI-like runs: no
        # reply in 4 s; a loser's hook not called within 5 s).
        await asyncio.wait_for(asyncio.gather(*(n.wait_caught_up() for n in nodes[:4])), 60)
        yield nodes
    finally:
        # All at once: a member leaving while every other member leaves too hands no
        # partition over, so nobody waits out a hand-over budget (one by one, each
        # member's leave waited for the next to take its partitions: 2 to 6 s a test).
        await asyncio.gather(*(node.aclose() for node in nodes))


def members_of(nodes: list[phx.Node]) -> list[phx.Node]:
    return [n for n in nodes if n.settings.role == "member"]


async def test_a_name_registered_anywhere_is_found_everywhere(four: list[phx.Node]) -> None:
    for i, node in enumerate(four):
        await node.registry.register(f"svc-{i}", {"from": node.name})
    await four[0].registry.register("inbox", four[0].ref(Sink, "box"))
    for node in four:
        for i, origin in enumerate(four):
            assert await node.registry.lookup(f"svc-{i}") == {"from": origin.name}
        ref = await node.registry.lookup("inbox")
        assert (ref.kind, ref.key) == ("registry.sink", "box")
    assert await four[4].registry.names("svc-") == [f"svc-{i}" for i in range(5)]
    # The client hosts nothing and stores no names, but holds its own.
    assert four[4].registry.statistics()["stored"] == 0
    assert four[4].registry.held() == ["svc-4"]


async def test_names_live_on_their_three_owners_only(four: list[phx.Node]) -> None:
    members = members_of(four)
    for i in range(40):
        await four[4].registry.register(f"n{i}", i)
    for i in range(40):
        want = set(owners(four[0], f"n{i}"))
        assert len(want) == 3

        def on_its_owners(name: str = f"n{i}", want: set[str] = want) -> bool:
            return stored_on(members, name) == want

        await wait_until(on_its_owners, what=f"n{i} on its owners")
    per_node = [n.registry.statistics()["stored"] for n in members]
    assert sum(per_node) == 40 * 3
    assert all(count < 40 for count in per_node)  # nobody stores everything


async def test_a_taken_name_is_refused_from_every_node(four: list[phx.Node]) -> None:
    await four[1].registry.register("leader", "m1")
    for node in four:
        with pytest.raises(phx.NameTaken, match="registered by m1"):
            await node.registry.register("leader", "someone else")
    # Concurrent claims: exactly one wins.
    results = await asyncio.gather(
        *(n.registry.register("race", n.name) for n in four), return_exceptions=True)
    winners = [r for r in results if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, phx.NameTaken) for r in results if r is not None)
    value = await four[0].registry.lookup("race", cached=False)
    assert all([await n.registry.lookup("race", cached=False) for n in four]) and value


async def test_unregister_anywhere_clears_every_cache(four: list[phx.Node]) -> None:
    await four[2].registry.register("tmp", 1)
    for node in four:
        assert await node.registry.lookup("tmp") == 1  # now cached everywhere
    assert await four[4].registry.unregister("tmp") is True
    await wait_until(lambda: all("tmp" not in n.registry._cache for n in four),
                     what="caches invalidated")
    for node in four:
        assert await node.registry.lookup("tmp") is None
    assert four[2].registry.held() == []
    await four[3].registry.register("tmp", 2)  # free again
    assert await four[0].registry.lookup("tmp") == 2


async def test_a_leaving_holder_releases_its_names(four: list[phx.Node]) -> None:
    m3 = four[3]
    await m3.registry.register("owned-by-m3", 3)
    await m3.registry.register("kept", 3, lifetime="cluster")
    assert await four[0].registry.lookup("owned-by-m3") == 3
    await m3.aclose()
    rest = [n for n in four if n is not m3]
    await converged(rest, ["m0", "m1", "m2"])
    for node in rest:
        assert await node.registry.lookup("owned-by-m3", cached=False) is None
        assert await node.registry.lookup("kept", cached=False) == 3
    await four[0].registry.register("owned-by-m3", 0)


async def test_a_joining_member_receives_its_share_without_loss(
    four: list[phx.Node],
) -> None:
    names = [f"j{i}" for i in range(120)]
    for i, name in enumerate(names):
        await four[i % 5].registry.register(name, i)
    assert four[0].address is not None
    newcomer = await start_member("m4", [four[0].address])
    try:
        members = [*members_of(four), newcomer]
        await converged([*four, newcomer], [n.name for n in members])

        def placed() -> bool:
            return all(stored_on(members, n) == set(owners(newcomer, n)) for n in names)

        await wait_until(placed, timeout=20, what="every name on its new owners only")
        assert 0 < newcomer.registry.statistics()["stored"] < len(names)
        for node in [*four, newcomer]:
            for i, name in enumerate(names):
                assert await node.registry.lookup(name, cached=False) == i
    finally:
        await newcomer.aclose()


async def test_conflicting_registrations_resolve_and_the_loser_is_told(
    four: list[phx.Node],
) -> None:
    """Both sides of a partition registered "svc"; here the other side's registration is
    written straight into the owners' stores, as a hand-off after the heal would. The
    earlier one wins everywhere, and the later holder hears it lost."""
    m1, client = four[1], four[4]
    conflicts: list[phx.NameConflict] = []
    events: list[dict[str, Any]] = []
    client.registry.on_name_conflict(conflicts.append)
    client.telemetry.attach("conflict-test", [phx.telemetry.REGISTRY_NAME_CONFLICT],
                            lambda e, m, md: events.append(dict(md)))
    sink = client.ref(Sink, "loser")
    try:
        await client.registry.register("svc", sink)
        mine = client.registry._holdings.held["svc"]
        # m1's registration made "on the other side", one second earlier.
        theirs = Entry("svc", "m1", m1.incarnation, mine.ts - 1000, 12345, value=b"\xa2m1")
        m1.registry._holdings.add(theirs)
        payload = encode(StoreRequest("handoff", [theirs]))
        for owner in owners(m1, "svc"):
            node = next(n for n in four if n.name == owner)
            await node._services.link.local["registry"]("store", payload)
        await wait_until(lambda: len(conflicts) == 1, what="the loser's hook")
    finally:
        client.telemetry.detach("conflict-test")
    [conflict] = conflicts
    assert (conflict.name, conflict.lost.holder, conflict.won.holder) == ("svc", client.name,
                                                                         "m1")
    assert events == [{"node": client.name, "name": "svc", "winner": "m1",
                       "loser": client.name}]
    assert client.registry.held() == []
    async def agent_told() -> bool:
        lost: list[str] = await sink.lost_names()
        return lost == ["svc"]

    await eventually(agent_told, what="the losing agent's on_name_conflict")
    for node in four:
        assert await node.registry.lookup("svc", cached=False) == "m1"
    # Re-asserting changes nothing now: the winner stays, nobody is told twice.
    await m1.registry._handoff.reassert()
    await client.registry._handoff.reassert()
    assert len(conflicts) == 1


async def test_groups_span_every_node_and_die_with_the_joining_node(
    four: list[phx.Node],
) -> None:
    for node in four:
        await node.groups.join("g", node.ref(Sink, f"w-{node.name}"))
    expected = sorted(f"w-{n.name}" for n in four)
    for node in four:
        assert [r.key for r in await node.groups.members("g")] == expected
    await four[2].aclose()
    rest = [n for n in four if n is not four[2]]
    await converged(rest, ["m0", "m1", "m3"])
    for node in rest:
        assert [r.key for r in await node.groups.members("g")] == [
            k for k in expected if k != "w-m2"]
    assert await four[4].groups.leave("g", four[4].ref(Sink, f"w-{four[4].name}"))
    assert len(await four[0].groups.members("g")) == 3


async def test_pubsub_fans_out_to_every_node_in_publisher_order(four: list[phx.Node]) -> None:
    got: dict[str, list[Any]] = {n.name: [] for n in four}
    for node in four:
        await node.pubsub.subscribe("news", got[node.name].append)
        await node.pubsub.subscribe("news", node.ref(Sink, f"s-{node.name}"), "on_message")

    async def publisher(node: phx.Node) -> None:
        for i in range(50):
            await node.pubsub.publish("news", [node.name, i])

    await asyncio.gather(*(publisher(n) for n in four))
    for node in four:  # one confirmed message each: everything before it was handed over
        delivery = await node.pubsub.publish("news", [node.name, "end"], confirm=True)
        assert (delivery.delivered, delivery.dropped, delivery.unreachable) == (10, 0, ())

    def per_publisher(seen: list[Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for publisher, i in seen:
            out.setdefault(publisher, []).append(i)
        return out

    want = {n.name: [*range(50), "end"] for n in four}
    for node in four:
        assert per_publisher(got[node.name]) == want
        sink = four[0].ref(Sink, f"s-{node.name}")
        assert per_publisher(await sink.messages()) == want


async def test_the_registry_service_refuses_bad_input_over_the_wire(
    four: list[phx.Node],
) -> None:
    client, m0 = four[4], four[0]
    rpc = client._rpc
    assert rpc is not None and m0.address is not None
    with pytest.raises(phx.AgentNotFound, match="no registry method 'drop_all'"):
        await rpc.call(m0.address, "registry", "drop_all", b"", 2.0)
    with pytest.raises(phx.ProtocolError, match="malformed"):
        await rpc.call(m0.address, "registry", "register", b"\xff\x00", 2.0)
    bad = msgspec.msgpack.encode(["handoff", [["x", "h", "not-an-int", 0, 1]], []])
    with pytest.raises(phx.ProtocolError):
        await rpc.call(m0.address, "registry", "store", bad, 2.0)
    with pytest.raises(phx.ProtocolError):
        await rpc.call(m0.address, "pubsub", "publish_confirm", b"\x01", 2.0)
    with pytest.raises(phx.AgentNotFound):
        await rpc.call(m0.address, "groups", "join", b"", 2.0)
    # Nothing broke: the node still serves names.
    await client.registry.register("still-fine", 1)
    assert await m0.registry.lookup("still-fine") == 1


async def test_frames_that_overtake_each_other_are_put_back_in_order(
    four: list[phx.Node],
) -> None:
    """Two overlapping connections (a simultaneous dial) can let a publisher's frames
    overtake each other; the receiver delivers them in the publisher's order, and gives
    a lost one up after ``reorder_timeout_s``."""
    client, m0 = four[4], four[0]
    got: list[Any] = []
    await m0.pubsub.subscribe("ordered", got.append)
    # Long enough that a loaded machine delivers 5 and 6 (below) well within it.
    m0.pubsub.settings = RegistrySettings(reorder_timeout_s=2.0)
    drops: list[str] = []
    m0.telemetry.attach("gap-test", [phx.telemetry.PUBSUB_DROPPED],
                        lambda e, m, md: drops.append(f"{md['node']}:{md['reason']}"))

    async def send(seq: int) -> None:
        frame = Publish("ordered", "a-publisher", msgspec.Raw(encode_value(seq)), 77, seq)
        assert await client._services.link.cast(m0.name, "pubsub", "publish",
                                                 encode(frame), 2.0)

    try:
        for seq in (2, 3, 1):
            await send(seq)
        await wait_until(lambda: got == [1, 2, 3], what="1, 2, 3 in order")
        for seq in (5, 6):  # 4 never comes
            await send(seq)
        await asyncio.sleep(0.3)
        assert got == [1, 2, 3]  # held back while 4 may still arrive
        await wait_until(lambda: got == [1, 2, 3, 5, 6], what="5 and 6 after the wait")
        await send(4)  # too late now: dropped rather than delivered out of order
        await send(7)
        await wait_until(lambda: got == [1, 2, 3, 5, 6, 7], what="7")
    finally:
        m0.telemetry.detach("gap-test")
    assert f"{m0.name}:gap" in drops and f"{m0.name}:late" in drops
