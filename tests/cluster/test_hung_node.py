"""A node that is alive but hung, on real node processes: its event loop is blocked by a
handler (the same to its peers as SIGSTOP, covered in test_split_brain.py).

Its peers suspect it and declare it dead, its keys fail over with their replicated state,
and the others stay ready and live the whole time (a suspect peer changes neither probe).
When the handler returns, the node learns it was declared dead and downs itself.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from cluster_agents import Tally

import phoenix_cluster as phx
from phoenix_cluster._splitbrain import EXIT_DOWNED
from phoenix_cluster.testing import LocalCluster, free_port

pytestmark = pytest.mark.slow

# Longer than detection (2.35 s median, 3.76 s worst measured) plus a failover election,
# so the keys move while the node is still hung; and than the others' split-brain decision
# (about 1 s to suspect it + stable_after, 7 s), so it is downed, not just declared dead.
BLOCK_S = 14.0
# Detection plus the first successful call on a survivor (recovery 2.3-3.7 s measured),
# with a margin for a loaded machine.
FAILOVER_BOUND_S = 8.0
POLL_S = 0.1


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2.0)) as response:
        return response.status, await response.read()


async def owned_by(client: phx.Node, node: str) -> str:
    for i in range(400):
        if str(await client.ref(Tally, f"k{i}").where()) == node:
            return f"k{i}"
    raise AssertionError(f"no key of {node} among 400")


async def test_a_blocked_loop_is_suspected_its_keys_fail_over_and_the_others_stay_ready(
) -> None:
    cluster = LocalCluster(nodes=3, imports=["cluster_agents"])
    http = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    for i, address in enumerate(http):
        cluster.nodes[i].extra_args = ["--http", address]
    async with cluster:
        client = await cluster.client()
        key = await owned_by(client, "node-2")
        tally = client.ref(Tally, key).options(timeout=1.0)
        assert await tally.add(100) == 100

        probes: list[tuple[str, int, int, float]] = []  # node-2's status, ready, live, lag
        stop = asyncio.Event()

        async def watch() -> None:
            async with aiohttp.ClientSession() as session:
                while not stop.is_set():
                    seen = {m.name: m.status for m in client.members()}.get("node-2", "gone")
                    for address in http:
                        ready, _ = await get(session, f"http://{address}/health/ready")
                        live, body = await get(session, f"http://{address}/health/live")
                        lag = json.loads(body)["event_loop_lag_s"]
                        probes.append((seen, ready, live, lag))
                    await asyncio.sleep(POLL_S)

        watcher = asyncio.create_task(watch())
        try:
            loop = asyncio.get_running_loop()
            blocked_at = loop.time()
            # Unacknowledged: node-2 would acknowledge the cast only after its loop
            # unblocks (the handler starts before the answer is written).
            await tally.block.cast_unacknowledged(BLOCK_S)

            async def failed_over() -> bool:
                try:
                    return (str(await tally.where()) != "node-2"
                            and await tally.read() == [100])
                except (phx.NodeUnavailable, phx.CallTimeout, phx.NoQuorum):
                    return False

            while not await failed_over():
                assert loop.time() - blocked_at < FAILOVER_BOUND_S, (
                    f"node-2's key not served elsewhere {FAILOVER_BOUND_S} s after its loop"
                    f" blocked\n{cluster.nodes[2].log()[-2000:]}")
                await asyncio.sleep(POLL_S)
            assert loop.time() - blocked_at < BLOCK_S  # moved while node-2 was still hung
            assert await tally.add(1) == 101
        finally:
            stop.set()
            await watcher

        statuses = {seen for seen, _, _, _ in probes}
        assert "suspect" in statuses, f"the poll never caught node-2 suspect: {statuses}"
        assert all(ready == 200 and live == 200 for _, ready, live, _ in probes), [
            p for p in probes if p[1:3] != (200, 200)]
        assert max(lag for _, _, _, lag in probes) < 1.0  # the survivors' loops run

        # Unblocked, node-2 hears it was declared dead and downs itself.
        assert await cluster.wait(2, timeout_s=BLOCK_S + 20) == EXIT_DOWNED
        assert "the cluster declared this node dead" in cluster.nodes[2].log()
        assert cluster.nodes[0].running and cluster.nodes[1].running
