"""Rolling upgrades with app versions: new activations prefer the members of the newest
application version, and members of an older one hand their agents to them, state
included; a member that catches up takes its keys back (``docs/operations.md``)."""

from __future__ import annotations

import asyncio

import phoenix_cluster as phx
from phoenix_cluster._node import Node
from phoenix_cluster._placement.app_version import version_key
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual


class Meter(phx.Agent, kind="tests.versions.meter"):
    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    async def host(self) -> str:
        return str(self.node.name)


KEYS = [f"m{i}" for i in range(24)]


def test_versions_compare_part_by_part() -> None:
    assert version_key("1.10") > version_key("1.9")
    assert version_key("2.0") > version_key("1.99.7")
    assert version_key("1.0") > version_key("")
    assert version_key("1.0.1") > version_key("1.0")
    assert version_key("2026.12.1") == version_key("2026.12.1")


async def upgrade(cluster: MemoryCluster, name: str, version: str) -> Node:
    """Stop ``name`` gracefully and start it again at ``version`` (a rolling step)."""
    await cluster.node(name).aclose()
    await cluster.wait_settled()
    node = await cluster.add(name, app_version=version)
    await cluster.wait_settled()
    return node


async def hosts(node: Node, keys: list[str]) -> dict[str, str]:
    return {key: await node.ref(Meter, key).options(timeout=20.0).host() for key in keys}


def test_a_rolling_upgrade_moves_agents_to_the_newest_version_with_their_state() -> None:
    async def main() -> None:
        async with MemoryCluster(3, app_version="1.0") as cluster:
            n1 = cluster.nodes[0]
            for i, key in enumerate(KEYS):
                assert await n1.ref(Meter, key).add(i) == i
            before = await hosts(n1, KEYS)
            assert set(before.values()) == {"n1", "n2", "n3"}

            # n2 runs 2.0: agents move to it, and new ones start there.
            await upgrade(cluster, "n2", "2.0")
            deadline = asyncio.get_running_loop().time() + 60
            while set((await hosts(n1, KEYS)).values()) != {"n2"}:
                assert asyncio.get_running_loop().time() < deadline, "agents never moved"
                await asyncio.sleep(1.0)
            for i, key in enumerate(KEYS):
                assert await n1.ref(Meter, key).add(1) == i + 1  # state moved with them
            assert await n1.ref(Meter, "new-one").host() == "n2"

            # n3 catches up: the keys whose home is n3 go back to it.
            n3 = await upgrade(cluster, "n3", "2.0")
            placement = n3._stack.placement
            assert placement is not None
            spec = Meter._phx_spec
            homed_n3 = [k for k in KEYS if placement.home(spec.name, k) == "n3"]
            assert homed_n3
            deadline = asyncio.get_running_loop().time() + 60
            while set((await hosts(n1, homed_n3)).values()) != {"n3"}:
                assert asyncio.get_running_loop().time() < deadline, "keys never went home"
                await asyncio.sleep(1.0)
            after = await hosts(n1, KEYS)
            assert set(after.values()) <= {"n2", "n3"}  # nothing runs on the 1.0 member
            for i, key in enumerate(KEYS):
                assert await n1.ref(Meter, key).add(1) == i + 2

    run_virtual(main())
