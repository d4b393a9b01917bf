"""Capability-aware placement: keys of a kind run only on members that host it.

Members report the kinds they host; a key whose home lacks the kind runs on a stand-in
that does, commits through the home, survives the stand-in's crash, and goes home once
the home hosts the kind. The nodes share one process here, so a member "lacks" a kind by
excluding it (a real member lacks the kinds whose modules it did not import:
``tests/cluster/test_capability_nodes.py`` runs that).
"""

from __future__ import annotations

import asyncio

import pytest

import phoenix_cluster as phx
from phoenix_cluster._node import Node
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual

GPU = "tests.capability.gpu"


class Gpu(phx.Agent, kind=GPU):
    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    async def host(self) -> str:
        return str(self.node.name)


class Nowhere(phx.Agent, kind="tests.capability.nowhere"):
    async def ping(self) -> str:
        return "pong"


def lack(node: Node, *kinds: str) -> None:
    """Make ``node`` a member that does not host ``kinds``."""
    placement = node._stack.placement
    assert placement is not None
    placement.members.excluded_kinds = frozenset(kinds)
    placement.members.expire()  # members report their kinds at the next poll


def stand_ins(node: Node) -> set[tuple[str, str]]:
    placement = node._stack.placement
    assert placement is not None
    return placement.directory.stand_in


async def homes(node: Node, kind: type[phx.Agent], keys: list[str]) -> dict[str, str]:
    placement = node._stack.placement
    assert placement is not None
    spec = kind._phx_spec
    return {key: placement.home(spec.name, key) or "" for key in keys}


KEYS = [f"g{i}" for i in range(24)]


def test_keys_whose_home_lacks_the_kind_run_on_a_member_that_hosts_it() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1, n2, n3 = cluster.nodes
            for node in (n1, n2):
                lack(node, GPU, "tests.capability.nowhere")
            lack(n3, "tests.capability.nowhere")
            home = await homes(n1, Gpu, KEYS)
            assert {"n1", "n2"} & set(home.values())  # some homes lack the kind
            for i, key in enumerate(KEYS):
                caller = cluster.nodes[i % 3]
                assert await caller.ref(Gpu, key).add(i) == i
                assert await caller.ref(Gpu, key).host() == "n3"
            # Every node reaches the same activation, and state is where it was left.
            for key in KEYS:
                assert await n2.ref(Gpu, key).add(100) == KEYS.index(key) + 100
            assert n1.statistics().agents.active_agents == 0
            assert n2.statistics().agents.active_agents == 0
            # A kind no member hosts fails at once, definite, naming the kind.
            with pytest.raises(phx.AgentNotFound, match=r"no member of the cluster hosts "
                               r"agent kind 'tests\.capability\.nowhere'") as info:
                await n1.ref(Nowhere, "x").options(timeout=2.0).ping()
            assert info.value.definite

    run_virtual(main())


def test_a_stand_in_killed_hands_its_keys_to_another_capable_member_with_their_state() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            lack(n1, GPU)
            n4 = await cluster.add("n4")
            lack(n4, GPU)
            await cluster.wait_settled()
            home = await homes(n1, Gpu, KEYS)
            lacking = [k for k in KEYS if home[k] in ("n1", "n4")]
            assert lacking
            hosts = {}
            for key in lacking:
                assert await n1.ref(Gpu, key).add(5) == 5
                hosts[key] = await n1.ref(Gpu, key).host()
            assert set(hosts.values()) <= {"n2", "n3"}
            victim = hosts[lacking[0]]
            survivor = "n3" if victim == "n2" else "n2"
            cluster.kill(victim)
            await cluster.wait_settled()
            for key in lacking:
                ref = n1.ref(Gpu, key).options(timeout=20.0)
                assert await ref.add(1) == 6  # the committed 5 survived its stand-in
                assert await ref.host() == survivor

    run_virtual(main())


def test_a_member_restarted_with_the_kind_takes_its_share() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            _, n2, n3 = cluster.nodes
            lack(n2, GPU)
            home = await homes(n3, Gpu, KEYS)
            mine = [k for k in KEYS if home[k] == "n2"]
            assert mine
            for key in mine:
                assert await n3.ref(Gpu, key).add(7) == 7
                assert await n3.ref(Gpu, key).host() in ("n1", "n3")
            # n2 restarts, now hosting the kind (a new incarnation, as a restarted
            # process with --import would be).
            await n2.aclose()
            await cluster.wait_settled()
            again = await cluster.add("n2")
            await cluster.wait_settled()
            back = await homes(again, Gpu, mine)
            assert set(back.values()) == {"n2"}

            async def all_home() -> bool:
                return all([await n3.ref(Gpu, key).host() == "n2" for key in mine])

            deadline = asyncio.get_running_loop().time() + 60
            while not await all_home():
                assert asyncio.get_running_loop().time() < deadline, "keys never went home"
                await asyncio.sleep(1.0)
            for key in mine:
                assert await n3.ref(Gpu, key).add(1) == 8  # state moved with the agent

    run_virtual(main())


def test_a_policy_kind_is_placed_only_on_members_that_host_it() -> None:
    class Placed(phx.Agent, kind="tests.capability.placed", placement="least_loaded"):
        async def host(self) -> str:
            return str(self.node.name)

    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1, n2, _ = cluster.nodes
            lack(n1, "tests.capability.placed")
            lack(n2, "tests.capability.placed")
            for i in range(12):
                assert await n1.ref(Placed, f"p{i}").host() == "n3"

    run_virtual(main())



def test_a_home_that_starts_hosting_the_kind_gets_its_keys_without_a_table_change() -> None:
    """The rebalancer's pass after a table change decides on the loads polled then; a
    member whose report of the kind came too late for it (it had only just rejoined) still
    gets its keys at the rebalancer's next periodic pass, not at the next change."""
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1, n2, n3 = cluster.nodes
            lack(n2, GPU)
            home = await homes(n3, Gpu, KEYS)
            mine = [k for k in KEYS if home[k] == "n2"]
            assert mine
            for key in mine:  # called through their home, which places them elsewhere
                assert await n2.ref(Gpu, key).add(7) == 7
                assert await n2.ref(Gpu, key).host() != "n2"
            assert {key for node in (n1, n3) for _, key in stand_ins(node)} == set(mine)
            lack(n2)  # n2 now reports the kind; the member table stays as it is
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2 * 5.0  # two of the rebalancer's 5 s periods
            while not all([await n3.ref(Gpu, key).host() == "n2" for key in mine]):
                assert loop.time() < deadline, "stand-ins kept keys whose home hosts the kind"
                await asyncio.sleep(0.5)
            for key in mine:
                assert await n3.ref(Gpu, key).add(1) == 8  # state moved with the agent
            assert stand_ins(n1) == stand_ins(n3) == set()

    run_virtual(main())
