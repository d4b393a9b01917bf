"""Registry, groups and pub/sub on real node processes (``LocalCluster``).

Members are driven through ``Probe`` agents: a probe whose key the node owns acts on
that node's ``registry``/``groups``/``pubsub``. Faults are real: SIGKILL, and iptables
partitions (root only; skipped with the reason otherwise, a failure under ``CI``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from registry_agents import Sink
from registry_helpers import eventually, probe_on

import phoenix_cluster as phx
from phoenix_cluster._registry.entries import replica_set
from phoenix_cluster._ring.ring import HashRing
from phoenix_cluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.slow

IMPORTS = ["registry_agents"]


def ring_of(node: phx.Node) -> set[str]:
    ring: HashRing | None = node._ring
    return set(ring.members) if ring is not None else set()


async def register_when_possible(node: phx.Node, name: str, value: Any) -> None:
    """Register, retrying while the owners' views still disagree (``NoQuorum``)."""

    async def attempt() -> bool:
        try:
            await node.registry.register(name, value)
        except phx.NoQuorum:
            return False
        return True

    await eventually(attempt, timeout=30, what=f"{node.name} to register {name!r}")


async def test_names_registered_anywhere_resolve_everywhere() -> None:
    async with LocalCluster(nodes=3, imports=IMPORTS) as cluster:
        client = await cluster.client()
        probes = [await probe_on(client, n.name) for n in cluster.nodes]
        assert await probes[0].register("config", {"port": 7}) == "ok"
        assert await probes[1].register_agent("inbox", "registry.sink", "box") == "ok"
        await client.registry.register("from-client", [1, 2])
        for probe in probes:
            assert await probe.lookup("config") == {"value": {"port": 7}}
            assert await probe.lookup("inbox") == {"agent": ["registry.sink", "box"]}
            assert await probe.lookup("from-client", False) == {"value": [1, 2]}
            assert await probe.register("config", "mine") == "NameTaken"
        assert await client.registry.lookup("config") == {"port": 7}
        inbox = await client.registry.lookup("inbox")
        await inbox.on_message("hello")
        assert await client.ref(Sink, "box").messages() == ["hello"]
        assert await probes[2].names() == ["config", "from-client", "inbox"]
        assert await probes[2].holder("config") == "node-0"
        with pytest.raises(phx.NameTaken):
            await client.registry.register("inbox", "other")
        # Each name is stored by its three owners: all three nodes here, nobody else.
        assert [await p.stored() for p in probes] == [3, 3, 3]
        assert client.registry.statistics()["stored"] == 0

        # Bad input to a member's $registry gets a typed error; the member keeps serving.
        rpc = client._rpc
        assert rpc is not None
        address = cluster.nodes[0].address
        with pytest.raises(phx.AgentNotFound):
            await rpc.call(address, "registry", "format_disk", b"", 2.0)
        with pytest.raises(phx.ProtocolError):
            await rpc.call(address, "registry", "register", b"\x93\x01", 2.0)
        with pytest.raises(phx.ProtocolError):
            await rpc.call(address, "registry", "store", b"\xc1", 2.0)
        assert await probes[0].lookup("config", False) == {"value": {"port": 7}}
        assert "Traceback" not in cluster.nodes[0].log()


async def test_groups_and_pubsub_everywhere_then_a_killed_node_takes_its_share() -> None:
    async with LocalCluster(nodes=3, imports=IMPORTS) as cluster:
        client = await cluster.client()
        probes = [await probe_on(client, n.name) for n in cluster.nodes]
        for i, probe in enumerate(probes):
            await probe.join("workers", "registry.sink", f"w{i}")
            await probe.subscribe("news")
            await probe.register(f"svc-{i}", i)
        await client.groups.join("workers", client.ref(Sink, "wc"))
        await probes[2].register("forever-2", 2, "cluster")
        got: list[Any] = []
        await client.pubsub.subscribe("news", got.append)

        everyone = [["registry.sink", k] for k in ("w0", "w1", "w2", "wc")]
        for probe in probes:
            assert await probe.members("workers") == everyone
        assert [[r.kind, r.key] for r in await client.groups.members("workers")] == everyone

        # Every node publishes 30 numbered messages; everyone sees each publisher's in order.
        async def from_client() -> None:
            for k in range(30):
                await client.pubsub.publish("news", ["client", k])

        await asyncio.gather(*(p.publish("news", [[f"p{i}", k] for k in range(30)])
                               for i, p in enumerate(probes)), from_client())
        want = {f"p{i}": list(range(30)) for i in range(3)} | {"client": list(range(30))}

        def by_publisher(seen: list[Any]) -> dict[str, list[int]]:
            out: dict[str, list[int]] = {}
            for publisher, k in seen:
                out.setdefault(publisher, []).append(k)
            return out

        async def all_received() -> bool:
            views = [await p.received("news") for p in probes] + [got]
            return all(by_publisher(v) == want for v in views)

        await eventually(all_received, timeout=20, what="every message on every node")

        # Node 2 dies: its names and group joins go with it; the others keep working.
        cluster.kill(2)
        await wait_until(lambda: "node-2" not in ring_of(client), timeout=20,
                         what="node-2 declared dead")

        async def released() -> bool:
            return await client.registry.lookup("svc-2", cached=False) is None

        await eventually(released, timeout=20, what="node-2's name released")
        assert await client.registry.lookup("forever-2", cached=False) == 2
        assert await client.registry.lookup("svc-0", cached=False) == 0
        members = [[r.kind, r.key] for r in await client.groups.members("workers")]
        assert members == [m for m in everyone if m[1] != "w2"]
        delivery = await client.pubsub.publish("news", ["client", "after"], confirm=True)
        assert delivery.delivered == 3  # the client's callback and nodes 0 and 1
        assert delivery.unreachable == ()


async def test_registration_needs_a_majority_of_the_owners() -> None:
    # Deaths take several seconds to be declared, so the owners of every name are still
    # the three nodes when two of them are killed.
    env = {"PHX_SUSPICION_MULT": "8"}
    async with LocalCluster(nodes=3, imports=IMPORTS, env=env) as cluster:
        client = await cluster.client()
        await client.registry.register("before", "b")
        cluster.kill(1)
        cluster.kill(2)
        assert ring_of(client) == {"node-0", "node-1", "node-2"}
        # (Whether NoQuorum is definite depends on whether a request was already in
        # flight on a connection the kill broke: then it may have been stored.)
        with pytest.raises(phx.NoQuorum, match=r"coordinate it|stored on 1 of 3"):
            await client.registry.register("during", "d")
        assert ring_of(client) == {"node-0", "node-1", "node-2"}, "deaths came too soon"
        # Reads need one owner: node 0 still answers.
        assert await client.registry.lookup("before", cached=False) == "b"
        assert await client.registry.lookup("during", cached=False) is None


async def test_a_joining_member_takes_its_share_of_the_names_without_loss() -> None:
    async with LocalCluster(nodes=3, imports=IMPORTS) as cluster:
        client = await cluster.client()
        names = [f"name-{i}" for i in range(150)]
        for i, name in enumerate(names):
            await client.registry.register(name, i)
        host = cluster.nodes[0].host.rsplit(".", 1)[0] + ".60"
        late = phx.Node(name="node-late", listen=f"{host}:0", seeds=cluster.addresses,
                        cookie=cluster.cookie)
        await late.start()
        try:
            # Both views: the client can see the new member before it sees everyone.
            everyone = {*(n.name for n in cluster.nodes), "node-late"}
            await wait_until(lambda: ring_of(client) == ring_of(late) == everyone,
                             timeout=20, what="the client and the new member see all four")
            ring = late._ring
            assert ring is not None
            share = {n for n in names if "node-late" in replica_set(ring, n)}
            assert 0 < len(share) < len(names)

            def received() -> bool:
                store = late.registry._owner.store
                return all(store.get(n) is not None for n in share)

            await wait_until(received, timeout=20, what="the new member's share handed over")
            probes = [await probe_on(client, n.name) for n in cluster.nodes]

            async def settled() -> bool:
                counts: list[int] = [await p.stored() for p in probes]
                return sum(counts) + late.registry.statistics()["stored"] == 3 * len(names)

            # Old owners drop what they no longer own: every name on exactly 3 nodes.
            await eventually(settled, timeout=20, what="old owners to drop handed names")
            for node in (client, late):
                for i, name in enumerate(names):
                    assert await node.registry.lookup(name, cached=False) == i
            for probe in probes:
                for name in names[::10]:
                    assert (await probe.lookup(name, False))["value"] == int(name[5:])
        finally:
            await late.aclose()


@pytest.mark.timeout(240)  # typically 25-35 s; the deadlines below allow a loaded machine
async def test_both_sides_of_a_partition_register_a_name_and_after_heal_one_wins() -> None:
    """Nodes 0 and 1 and client A on one side, nodes 2, 3, 4 and client B on the other.
    Each side declares the other dead and registers "svc" (A first). The minority downs
    itself; after the heal client A re-asserts its name: the earlier registration (A's)
    wins on every node, and B is told it lost.

    Two members on the minority side are needed: a node cut off alone only suspects
    the others (it gets no confirmations), so its ring keeps them and its writes fail
    with ``NoQuorum``, which is the safe outcome. Client A does not gossip (no
    ``listen``: it pulls the member table) and dials from 127.0.0.1, which the partition
    puts on the minority side. A gossiping client that comes back from a partition
    spreads its stale view that the others are dead, and today members that hear it
    down themselves (reported as a membership issue); this test would then end with no
    cluster at all.
    """
    reason = LocalCluster.network_faults_unavailable()
    if reason is not None:
        pytest.skip(reason)
    # Each side must see the other dead (2-8 s, longer on a loaded machine) and register
    # before the minority downs itself, stable_after later.
    env = {"PHX_SPLIT_BRAIN_STABLE_AFTER_S": "20"}
    async with LocalCluster(nodes=5, imports=IMPORTS, env=env) as cluster:
        a = await cluster.client(name="client-a", listen=None)
        b = await cluster.client(name="client-b")
        lost_a: list[phx.NameConflict] = []
        lost_b: list[phx.NameConflict] = []
        a.registry.on_name_conflict(lost_a.append)
        b.registry.on_name_conflict(lost_b.append)
        events: list[dict[str, object]] = []
        b.telemetry.attach("partition-conflict", [phx.telemetry.REGISTRY_NAME_CONFLICT],
                           lambda e, m, md: events.append(dict(md)))
        try:
            cluster.partition(["127.0.0.1", 0, 1], [2, 3, 4, b])
            await wait_until(lambda: ring_of(a) == {"node-0", "node-1"}
                             and ring_of(b) == {"node-2", "node-3", "node-4"},
                             timeout=45, what="each side to see the other dead")
            await register_when_possible(a, "svc", "A")
            await register_when_possible(b, "svc", "B")
            assert await a.registry.lookup("svc", cached=False) == "A"
            assert await b.registry.lookup("svc", cached=False) == "B"
            # The minority side downs itself, then the network heals.
            assert [await cluster.wait(i, timeout_s=60) for i in (0, 1)] == [3, 3]
            cluster.heal()
            await wait_until(lambda: len(lost_b) == 1, timeout=60,
                             what="client B to hear its registration lost")
        finally:
            b.telemetry.detach("partition-conflict")
        [conflict] = lost_b
        assert (conflict.name, conflict.lost.holder, conflict.won.holder) == (
            "svc", "client-b", "client-a")
        assert (conflict.lost.value, conflict.won.value) == ("B", "A")
        assert conflict.won.registered_at < conflict.lost.registered_at
        assert lost_a == []
        assert [e for e in events if e["node"] == "client-b"] == [
            {"node": "client-b", "name": "svc", "winner": "client-a", "loser": "client-b"}]
        assert b.registry.held() == []
        assert a.registry.held() == ["svc"]

        async def one_winner() -> bool:
            answers = [await a.registry.lookup("svc", cached=False),
                       await b.registry.lookup("svc", cached=False)]
            return answers == ["A", "A"]

        await eventually(one_winner, timeout=20, what="both clients to see A's name")
