"""Remote agents: nodes in one process talking over real loopback TCP.

These cover the routing rules (owner placement, redirects, error mapping, dedup) quickly;
``test_local_cluster.py`` repeats the essentials with separate node processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from cluster_agents import Latch, Tally

import phoenix_cluster as phx
from phoenix_cluster._agents.dispatch import Router
from phoenix_cluster._transport.peers import PeerManager
from phoenix_cluster._wire.messages import Call, Error, Redirect, Reply
from phoenix_cluster.testing import free_port, wait_until

COOKIE = "remote-calls-test-cookie"


@pytest.fixture
async def trio_nodes() -> AsyncIterator[list[phx.Node]]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = [
        phx.Node(name=f"n{i}", listen=addr, seeds=[a for a in addresses if a != addr],
                 cookie=COOKIE)
        for i, addr in enumerate(addresses)
    ]
    for node in nodes:
        await node.start()
    await converged(nodes, [n.name for n in nodes])
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.aclose()


async def converged(nodes: list[phx.Node], names: list[str]) -> None:
    """Wait until each node sees exactly ``names`` as live (alive or suspect) members,
    all of them alive."""

    def alive(node: phx.Node) -> set[str]:
        live = [m for m in node.members() if m.status in ("alive", "suspect")
                and m.role == "member"]
        return {m.name for m in live} if all(m.status == "alive" for m in live) else set()

    await wait_until(lambda: all(alive(n) == set(names) for n in nodes), timeout=20,
                     what="membership convergence")


async def client_for(nodes: list[phx.Node], **options: object) -> phx.Node:
    options.setdefault("cookie", COOKIE)
    seeds = options.pop("seeds", [n.address for n in nodes])
    client = phx.Node(role="client", seeds=seeds, **options)  # type: ignore[arg-type]
    await client.start()
    await converged([client], [n.name for n in nodes])
    return client


async def test_calls_reach_the_owner_from_any_node(trio_nodes: list[phx.Node]) -> None:
    keys = [f"k{i}" for i in range(30)]
    where = {}
    for i, key in enumerate(keys):
        caller = trio_nodes[i % 3]
        assert await caller.ref(Tally, key).add(i) == i
        where[key] = await caller.ref(Tally, key).where()
    # Every node agrees on the owner, and the keys spread over the members.
    for node in trio_nodes:
        assert {k: await node.ref(Tally, k).where() for k in keys} == where
    assert set(where.values()) == {"n0", "n1", "n2"}
    hosted = {n.name: n.statistics().agents.active_agents for n in trio_nodes}
    assert sum(hosted.values()) == len(keys)


async def test_client_node_hosts_nothing_and_routes(trio_nodes: list[phx.Node]) -> None:
    client = await client_for(trio_nodes)
    try:
        results = await asyncio.gather(*(client.ref(Tally, f"c{i}").add(1) for i in range(50)))
        assert results == [1] * 50
        await client.ref(Tally, "c0").add.cast(5)
        assert await client.ref(Tally, "c0").add(0) == 6
        assert client.statistics().agents.active_agents == 0
    finally:
        await client.aclose()


async def test_a_node_that_does_not_own_the_key_redirects(trio_nodes: list[phx.Node]) -> None:
    # A client with a stale view (it thinks n0 owns every key) sends everything to n0,
    # which redirects what it does not own.
    client = await client_for(trio_nodes, seeds=[trio_nodes[0].address])
    n0 = trio_nodes[0]
    assert isinstance(client._runtime.router, Router)
    placement = client._runtime.router.placement
    placement.home = lambda kind, key: n0.name  # type: ignore[method-assign]
    try:
        owners = [await client.ref(Tally, f"r{i}").where() for i in range(20)]
        assert set(owners) == {"n0", "n1", "n2"}
        assert isinstance(client._runtime.router, Router)
        assert client._runtime.router.redirects_followed > 0
    finally:
        await client.aclose()


async def test_remote_errors_keep_their_type_and_meaning(trio_nodes: list[phx.Node]) -> None:
    client = await client_for(trio_nodes)
    try:
        ref = client.ref(Tally, "err")
        await ref.add(1)
        with pytest.raises(phx.AgentError) as info:
            await ref.add_then_fail(10)
        err = info.value
        assert err.remote_type == "ValueError"
        assert "add_then_fail" in err.remote_traceback
        assert err.definite
        assert await ref.add(0) == 1  # rolled back on the owner
        with pytest.raises(phx.AgentNotFound, match="no method 'nope'"):
            await ref.nope()
        with pytest.raises(phx.CallTimeout) as timeout:
            await ref.options(timeout=0.2).slow(2.0)
        assert not timeout.value.definite
    finally:
        await client.aclose()


async def test_unknown_kind_on_the_owner_is_agent_not_found(
    trio_nodes: list[phx.Node],
) -> None:
    client = await client_for(trio_nodes)
    try:
        spec = Tally._phx_spec
        router = client._runtime.router
        assert isinstance(router, Router)
        address = router.remote_address(Tally._phx_spec, "x")
        assert isinstance(address, str)
        conn = await router.peers.connection(address)
        call = Call(1, "no.such.kind", "x", "m", b"\x92\x90\x80", 1000)
        answer = await conn.request(call, 2)
        if isinstance(answer, Redirect):
            # A member that lacks a kind sends its keys to their home (which directs
            # them to a member that hosts the kind): the home of this key answers.
            conn = await router.peers.connection(answer.address)
            answer = await conn.request(call, 2)
        assert isinstance(answer, Error), answer
        assert answer.code == "agent_not_found"
        assert "no member of the cluster hosts agent kind 'no.such.kind'" in answer.message
        assert spec.name == "cluster.tally"
    finally:
        await client.aclose()


async def test_a_resent_call_runs_at_most_once(trio_nodes: list[phx.Node]) -> None:
    # Two clients stand in for one caller resending over a fresh connection.
    clients = [await client_for(trio_nodes), await client_for(trio_nodes)]
    try:
        conns = []
        for client in clients:
            router = client._runtime.router
            assert isinstance(router, Router)
            address = router.remote_address(Tally._phx_spec, "dedup")
            assert isinstance(address, str)
            conns.append(await router.peers.connection(address))
        payload = b"\x92\x91\x07\x80"  # msgpack of [[7], {}]
        call = Call(424242, "cluster.tally", "dedup", "add", payload, 2000)
        first, second = await asyncio.gather(conns[0].request(call, 2), conns[1].request(call, 2))
        again = await conns[0].request(call, 2)
        assert isinstance(first, Reply)
        assert first == second == again
        assert await clients[0].ref(Tally, "dedup").read() == [7]  # applied once
    finally:
        for client in clients:
            await client.aclose()


async def test_wrong_cookie_is_refused(trio_nodes: list[phx.Node]) -> None:
    client = phx.Node(role="client", seeds=[n.address or "" for n in trio_nodes],
                      cookie="not-the-cluster-secret")
    await client.start()
    try:
        with pytest.raises(phx.AuthenticationError):
            await client.ref(Tally, "x").add(1)
    finally:
        await client.aclose()
    # The cluster still serves good clients.
    assert await trio_nodes[0].ref(Tally, "x").add(1) == 1


async def test_a_node_that_leaves_hands_its_keys_to_the_others(
    trio_nodes: list[phx.Node],
) -> None:
    n0, n1, n2 = trio_nodes
    keys = [f"d{i}" for i in range(30)]
    owners = {k: await n0.ref(Tally, k).where() for k in keys}
    assert "n2" in owners.values()
    await n2.aclose()  # a graceful leave: the others drop it from the ring at once
    await converged([n0, n1], ["n0", "n1"])
    for key in keys:
        where = await n0.ref(Tally, key).where()
        assert where == owners[key] if owners[key] != "n2" else where in ("n0", "n1")
        # (State of n2's agents starts afresh until replication lands.)


async def test_a_crashed_owner_is_unavailable_until_membership_moves_its_keys(
    trio_nodes: list[phx.Node],
) -> None:
    n0, n1, n2 = trio_nodes
    keys = [f"e{i}" for i in range(30)]
    owners = {k: await n0.ref(Tally, k).where() for k in keys}
    lost = [k for k in keys if owners[k] == "n2"]
    assert lost
    assert n2._membership is not None and n2._transport is not None
    await n2._membership.aclose(leave=False)  # no goodbye: a crash as SWIM sees it
    await n2._transport.aclose()
    with pytest.raises((phx.NodeUnavailable, phx.CallTimeout)):
        await n0.ref(Tally, lost[0]).options(timeout=0.5).add(1)
    await converged([n0, n1], ["n0", "n1"])  # suspected, then declared dead
    assert await n0.ref(Tally, lost[0]).where() in ("n0", "n1")


async def test_client_without_members_fails_definitely() -> None:
    client = phx.Node(role="client")
    async with client:
        with pytest.raises(phx.NodeUnavailable) as info:
            await client.ref(Tally, "x").add(1)
        assert info.value.definite


async def test_a_dial_that_hangs_is_bounded_by_the_call_timeout() -> None:
    held: list[asyncio.StreamWriter] = []
    mute = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
    address = f"127.0.0.1:{mute.sockets[0].getsockname()[1]}"
    try:
        async with phx.Node(role="client", seeds=[address], cookie=COOKIE) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(phx.CallTimeout) as info:
                await client.ref(Tally, "x").options(timeout=0.3).add(1)
            assert info.value.definite  # it never reached the peer
            assert loop.time() - started < 3.0  # not the 5 s handshake timeout
    finally:
        for w in held:
            w.transport.abort()
        mute.close()
        await mute.wait_closed()


async def _crash(node: phx.Node) -> None:
    """Stop ``node`` without a goodbye: a crash as SWIM and its peers see it."""
    assert node._membership is not None and node._transport is not None
    await node._membership.aclose(leave=False)
    await node._transport.aclose()


async def test_a_call_to_a_crashed_owner_is_retried_until_a_survivor_answers(
    trio_nodes: list[phx.Node],
) -> None:
    client = await client_for(trio_nodes)
    try:
        owners = {f"r{i}": await client.ref(Tally, f"r{i}").where() for i in range(30)}
        key = next(k for k, owner in owners.items() if owner == "n2")
        assert await client.ref(Tally, key).add(5) == 5
        await _crash(trio_nodes[2])
        # Nothing can be sent to n2 (refused): a short call is retried, then gives up
        # with the definite error, saying so.
        with pytest.raises(phx.NodeUnavailable, match=r"tried \d+ times") as info:
            await client.ref(Tally, key).options(timeout=0.3).add(1)
        assert info.value.definite
        assert client.statistics().calls_retried == 1
        # A call with room in its deadline outlives the detection: the key moves to a
        # survivor, which answers with the committed state. A partition whose other
        # replica had not caught up waits for the split-brain decision and its margin
        # (replication.md, "Lost members": detection + 2 x stable_after, over 20 s on a
        # loaded machine), hence the long deadline.
        assert await client.ref(Tally, key).options(timeout=45).add(1) == 6
        assert client.statistics().calls_retried == 2
        assert await client.ref(Tally, key).where() in ("n0", "n1")
    finally:
        await client.aclose()


async def test_a_restarted_member_is_not_kept_away_by_its_old_breaker(
    trio_nodes: list[phx.Node],
) -> None:
    client = await client_for(trio_nodes)
    n2 = trio_nodes[2]
    address = n2.address
    assert address is not None
    try:
        await _crash(n2)
        peers = client._peers
        assert isinstance(peers, PeerManager)
        for _ in range(10):  # dials refused until the breaker opens
            with contextlib.suppress(phx.PhoenixError):
                await peers.connection(address)
        assert peers.breaker(address).state(client.env.clock.monotonic()) == "open"
        again = phx.Node(name="n2", listen=address, cookie=COOKIE,
                         seeds=[n.address for n in trio_nodes[:2] if n.address])
        await again.start()
        try:
            await wait_until(lambda: any(m.name == "n2" and m.status == "alive"
                                         and m.incarnation != n2.incarnation
                                         for m in client.members()),
                             timeout=20, what="the client to see n2's new incarnation")
            # Closed at once, not after the breaker's cool-down.
            assert peers.breaker(address).state(client.env.clock.monotonic()) == "closed"
            await peers.connection(address)
        finally:
            await again.aclose()
    finally:
        await client.aclose()


async def test_a_cast_waiting_for_room_follows_its_agent_when_it_moves(
    trio_nodes: list[phx.Node],
) -> None:
    """A cast waits for room in a full mailbox on its own node; the agent migrates away
    meanwhile: the cast is routed to the new host, not re-activated on the old one."""
    here = trio_nodes[0]
    key = ""
    for i in range(200):  # a key whose home is this node, so the cast stays local
        key = f"latch{i}"
        if await here.where(here.ref(Latch, key)) == here.name:
            break
    ref = here.ref(Latch, key)
    await ref.take.cast(0)  # runs, waits for the gate
    await wait_until(lambda: here.statistics().agents.busy_agents == 1)
    await ref.take.cast(1)  # the mailbox (1) is full
    waiting = asyncio.ensure_future(ref.take.cast(2))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    target = trio_nodes[1].name
    moving = asyncio.ensure_future(here.migrate(ref, to=target))
    await asyncio.sleep(0.05)
    Latch.gates[key].set()
    await moving
    await waiting
    assert await here.where(ref) == target
    assert await ref.seen_list() == [0, 1, 2]
    assert not here._runtime.holds(Latch._phx_spec, key)
