"""Real node processes on loopback: the remote contract across OS processes."""

from __future__ import annotations

import asyncio

import pytest
from cluster_agents import Tally

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.slow


async def test_agents_on_node_processes_behave_as_local() -> None:
    async with LocalCluster(nodes=3, imports=["cluster_agents"]) as cluster:
        client = await cluster.client()
        keys = [f"p{i}" for i in range(30)]
        totals = await asyncio.gather(*(client.ref(Tally, k).add(2) for k in keys))
        assert totals == [2] * 30
        owners = {k: await client.ref(Tally, k).where() for k in keys}
        assert set(owners.values()) == {"node-0", "node-1", "node-2"}

        with pytest.raises(phx.AgentError) as info:
            await client.ref(Tally, "p0").add_then_fail(5)
        assert info.value.remote_type == "ValueError"
        assert "refusing 5 on node-" in info.value.remote_message
        assert await client.ref(Tally, "p0").add(0) == 2  # rolled back

        # SIGKILL one node: its keys are unavailable until membership declares it dead,
        # every other key keeps answering; then its keys move to the survivors.
        cluster.kill(1)
        await cluster.wait(1)
        lost = [k for k, owner in owners.items() if owner == "node-1"]
        with pytest.raises((phx.NodeUnavailable, phx.CallTimeout)):
            await client.ref(Tally, lost[0]).options(timeout=0.5).add(1)
        for key, owner in owners.items():
            if owner != "node-1":
                assert await client.ref(Tally, key).add(1) == 3
        await cluster.wait_converged()
        await wait_until(lambda: {m.name for m in client.members() if m.status == "alive"
                                  and m.role == "member"} == {"node-0", "node-2"},
                         timeout=20, what="the client to drop node-1")
        for key in lost:
            # A survivor whose view still holds node-1 as a suspect redirects there
            # (definite NodeUnavailable) until it too declares it dead.
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                try:
                    owner = await client.ref(Tally, key).where()
                    break
                except phx.NodeUnavailable:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
            assert owner in ("node-0", "node-2")

        # SIGTERM: a graceful stop exits 0.
        assert await cluster.stop(0) == 0
        assert "stopping: signal SIGTERM" in cluster.nodes[0].log()
