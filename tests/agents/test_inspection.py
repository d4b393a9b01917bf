"""Inspection (``$inspect``, ``ClusterInspector``): the agents on every member and one
agent's state, owner, replicas and version, merged from every member's answer.

In one process on the in-memory network, in virtual time."""

from __future__ import annotations

import phoenix_cluster as phx
from phoenix_cluster._agents.inspection import (
    ListRequest,
    ShowRequest,
    agent_json,
    listing_json,
)
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual


class Cart(phx.Agent, kind="tests.inspection.cart"):
    def __init__(self) -> None:
        self.items: list[str] = []

    async def add(self, item: str) -> int:
        self.items.append(item)
        return len(self.items)


class Lookup(phx.Agent, kind="tests.inspection.lookup", placement="stateless",
             max_workers=2):
    async def get(self, n: int) -> int:
        return n + 1


def test_list_and_show_across_members() -> None:
    async def scenario() -> None:
        async with MemoryCluster(3) as cluster:
            a, b, c = cluster.nodes
            for key in ("alice", "bob", "carol", "dave"):
                await a.ref(Cart, key).add("apple")
            await a.ref(Cart, "alice").add("pear")
            await b.ref(Lookup, "hot").get(1)
            client = await cluster.add("client", role="client")
            for asker in (a, client):  # a member answers for itself locally; a client asks
                listing = await asker.inspection.list_agents(ListRequest())
                assert not listing.unreachable and not listing.unknown_kind
                carts = [(x.key, x.status) for x in listing.agents
                         if x.kind == "tests.inspection.cart"]
                assert carts == [("alice", "active"), ("bob", "active"),
                                 ("carol", "active"), ("dave", "active")]
                workers = [x for x in listing.agents if x.kind == "tests.inspection.lookup"]
                assert [(w.key, w.node, w.workers) for w in workers] == [("hot", b.name, 1)]
            owner = await a.where(a.ref(Cart, "alice"))
            only = await client.inspection.list_agents(
                ListRequest(kind="tests.inspection.cart", node=owner))
            assert "alice" in {x.key for x in only.agents}
            assert {x.node for x in only.agents} == {owner}

            shown = agent_json(await c.inspection.show_agent(
                ShowRequest("tests.inspection.cart", "alice")))
            assert shown is not None
            assert shown["state"] == {"items": ["apple", "pear"]}
            assert shown["status"] == "active" and shown["owner"] == owner
            assert shown["hosts"] == [owner] and len(shown["replicas"]) == 3
            assert shown["replicas"][0] == owner
            assert shown["version"] is not None and shown["mailbox_depth"] == 0
            assert shown["last_active"] is not None

            # Passivated: still found, with its committed state.
            kr = cluster.node(owner).kinds()["tests.inspection.cart"]
            kr.activations["alice"].last_used -= 10_000
            cluster.node(owner)._runtime.sweep_idle()
            passive = agent_json(await a.inspection.show_agent(
                ShowRequest("tests.inspection.cart", "alice")))
            assert passive is not None and passive["status"] == "passive"
            assert passive["owner"] is None and passive["state"] == {"items": ["apple",
                                                                               "pear"]}

            missing = await a.inspection.show_agent(ShowRequest("tests.inspection.cart",
                                                                "nobody"))
            assert not missing.unknown_kind and agent_json(missing) is None
            unknown = await a.inspection.show_agent(ShowRequest("no.such.kind", "x"))
            assert unknown.unknown_kind
            unknown_list = await a.inspection.list_agents(ListRequest(kind="no.such.kind"))
            assert unknown_list.unknown_kind and listing_json(unknown_list)["agents"] == []

            stateless = agent_json(await a.inspection.show_agent(
                ShowRequest("tests.inspection.lookup", "hot")))
            assert stateless is not None
            assert stateless["hosts"] == [b.name] and stateless["replicas"] == []
            assert stateless["workers"] == 1

            cluster.kill(c.name)
            partial = await a.inspection.list_agents(ListRequest())
            assert partial.unreachable == [c.name]

    run_virtual(scenario())
