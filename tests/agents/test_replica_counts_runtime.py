"""``replicas=`` through the agent runtime, on the in-memory network in virtual time: a
kind's records go to its count's group, on its home or through the home for an agent
hosted elsewhere (``$placement.rload`` / ``rcommit`` carry the count), and inspection
shows the count's replicas."""

from __future__ import annotations

import phoenix_cluster as phx
from phoenix_cluster._agents.inspection import ShowRequest, agent_json
from phoenix_cluster._replication.groups import group_of
from phoenix_cluster._replication.service import group_for, partition_for
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual


class Pair(phx.Agent, kind="tests.replica_counts.pair", replicas=2):
    def __init__(self) -> None:
        self.items: list[str] = []

    async def add(self, item: str) -> int:
        self.items.append(item)
        return len(self.items)


class Solo(phx.Agent, kind="tests.replica_counts.solo", replicas=1, placement="local"):
    """Runs on its first caller's node; commits through its home (one replica)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    async def add(self, item: str) -> int:
        self.items.append(item)
        return len(self.items)

    async def where(self) -> str:
        return str(self.node.name)


def test_each_kind_commits_to_its_own_count() -> None:
    async def scenario() -> None:
        async with MemoryCluster(3) as cluster:
            a = cluster.nodes[0]
            replicator, placement = a._stack.replicator, a._stack.placement
            assert replicator is not None and placement is not None

            def holders(kind: str, key: str, replicas: int) -> set[str]:
                g = group_for(kind, key, replicas)
                return {n.name for n in cluster.nodes
                        if n._stack.replicator is not None
                        and n._stack.replicator.store.get(g, kind, key) is not None}

            keys = [f"k{i}" for i in range(8)]
            for key in keys:
                assert await a.ref(Pair, key).add("x") == 1
            for key in keys:
                members = replicator.replica_set(group_for(Pair._phx_spec.name, key, 2))
                assert len(members) == 2
                assert holders("tests.replica_counts.pair", key, 2) == set(members)
                assert holders("tests.replica_counts.pair", key, 3) == set()
            shown = agent_json(await a.inspection.show_agent(
                ShowRequest("tests.replica_counts.pair", keys[0])))
            assert shown is not None and len(shown["replicas"]) == 2

            # Hosted on a, committed through each key's home with one replica there.
            away = []
            for key in (f"s{i}" for i in range(12)):
                assert await a.ref(Solo, key).add("y") == 1
                assert await a.ref(Solo, key).where() == a.name
                home = placement.home("tests.replica_counts.solo", key)
                assert holders("tests.replica_counts.solo", key, 1) == {home}
                if home != a.name:
                    away.append(key)
            assert away  # the remote path (rload / rcommit) was taken
            p = partition_for("tests.replica_counts.solo", away[0])
            assert group_for("tests.replica_counts.solo", away[0], 1) == group_of(p, 1)

    run_virtual(scenario())
