"""Agents on several whole nodes in one process: routing, replication, rollback and
failover on the in-memory network, in virtual time (``phoenix_cluster.testing.memory``).

Each test starts its own cluster; a test takes well under a second of wall time although
the cluster lives through tens of virtual seconds (probes, elections, timeouts).
"""

from __future__ import annotations

import asyncio

import pytest

import phoenix_cluster as phx
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual, wait_for


class Tally(phx.Agent, kind="tests.memory.tally"):
    def __init__(self) -> None:
        self.total = 0
        self.runs = 0

    async def add(self, n: int) -> int:
        self.total += n
        self.runs += 1
        return self.total

    async def add_then_fail(self, n: int) -> int:
        self.total += n
        self.runs += 1
        raise ValueError(f"refusing {n}")

    async def read(self) -> list[int]:
        return [self.total, self.runs]

    async def host(self) -> str:
        return str(self.node.name)


async def key_hosted_by(node: phx.Node, owner: str, prefix: str = "k") -> str:
    """A key of ``Tally`` whose home is the node named ``owner``."""
    for i in range(1000):
        key = f"{prefix}{i}"
        if await node.where(node.ref(Tally, key)) == owner:
            return key
    raise AssertionError(f"no key of 1000 lives on {owner}")


def test_a_call_runs_on_the_owner_another_node() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1, n2, _ = cluster.nodes
            key = await key_hosted_by(n1, "n2")
            tally = n1.ref(Tally, key)
            assert await tally.add(2) == 2
            assert await tally.add(3) == 5
            assert await tally.host() == "n2"
            assert n1.statistics().agents.active_agents == 0  # nothing ran on the caller
            assert n2.statistics().agents.active_agents == 1
            # Any node reaches the same activation.
            assert await cluster.nodes[2].ref(Tally, key).read() == [5, 2]

    run_virtual(main())


def test_a_killed_node_s_keys_fail_over_with_their_state() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            keys = [await key_hosted_by(n1, "n3", prefix=f"f{i}-") for i in range(3)]
            for i, key in enumerate(keys):
                assert await n1.ref(Tally, key).add(10 + i) == 10 + i
            cluster.kill("n3")
            await cluster.wait_settled()
            for i, key in enumerate(keys):
                tally = n1.ref(Tally, key)
                assert await n1.where(tally) in ("n1", "n2")
                # The committed state survived; the handler did not run again.
                assert await tally.read() == [10 + i, 1]
                assert await tally.host() in ("n1", "n2")

    run_virtual(main())


def test_a_handler_that_raises_leaves_no_trace_here_or_on_the_replicas() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            key = await key_hosted_by(n1, "n2")
            tally = n1.ref(Tally, key)
            assert await tally.add(1) == 1
            with pytest.raises(phx.AgentError) as info:
                await tally.add_then_fail(100)
            assert info.value.remote_type.endswith("ValueError")
            assert info.value.definite is True
            assert await tally.read() == [1, 1]  # rolled back on the owner
            cluster.kill("n2")
            await cluster.wait_settled()
            assert await tally.read() == [1, 1]  # and never committed to the replicas

    run_virtual(main())


def test_wait_for_names_what_did_not_hold() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError, match="the moon"):
            await wait_for(lambda: False, 5.0, what="the moon")
        assert asyncio.get_running_loop().time() == pytest.approx(5.0, abs=0.1)

    run_virtual(main())
