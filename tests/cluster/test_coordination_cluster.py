"""Leases and sagas on real node processes: kill -9 of the node hosting a lock's agent,
of the node holding a lease, and of the node coordinating a saga.

A lock's state (holder, newest token) is committed to a quorum of its replicas, so it
survives its node's death: the holder keeps its lease and its token, and the next
holder's token is larger than every token issued before. A holder that dies loses its
lease one ttl after its last renewal, and the next holder's token is larger.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from coordination_agents import LeaseWorker, SagaAccount

import phoenix_cluster as phx
from phoenix_cluster import coordination
from phoenix_cluster.testing import LocalCluster

pytestmark = pytest.mark.slow

IMPORTS = ["coordination_agents"]
DEADLINE_S = 20.0


def _index(node_name: str) -> int:
    return int(node_name.rsplit("-", 1)[1])


async def _acquire_refused(client: phx.Node, name: str, holder: str) -> phx.LeaseHeld:
    """Ask for ``name`` until its agent answers (it may be failing over) and refuses."""
    give_up = time.monotonic() + DEADLINE_S
    while True:
        try:
            await coordination.acquire(client, name, holder, ttl=5.0)
        except phx.LeaseHeld as held:
            return held
        except (phx.IndefiniteError, phx.NotLeader, phx.NoQuorum):
            if time.monotonic() > give_up:
                raise
            continue
        raise AssertionError(f"{holder} got {name!r} while it was held")


async def _name_hosted_off(client: phx.Node, node_name: str) -> str:
    for i in range(100):
        name = f"job-{i}"
        if await client.where(client.ref(coordination.LeaseAgent, name)) != node_name:
            return name
    raise AssertionError(f"every lease name hashes to {node_name}")


async def test_a_lock_keeps_its_holder_and_tokens_when_its_node_is_killed() -> None:
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        name = "orders"
        for i in range(3):  # tokens 1..3, given and given back
            await (await coordination.acquire(client, name, f"warm-up-{i}", ttl=5.0)).release()
        ref = client.ref(coordination.LeaseAgent, name)
        host = await client.where(ref)
        async with coordination.lock(client, name, "A", ttl=8.0) as lease:
            assert lease.token == 4
            cluster.kill(_index(host))
            held = await _acquire_refused(client, name, "B")  # the agent knows A holds it
            assert held.holders == ["A"]
            assert await client.where(ref) != host
            await lease.renew()                 # A's lease and token came through
            assert lease.valid and lease.token == 4
        after = await coordination.acquire(client, name, "B", ttl=5.0)
        assert after.token == 5                 # never reused, never reset


async def test_a_dead_holders_lease_expires_and_the_next_token_is_larger() -> None:
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        worker = client.ref(LeaseWorker, "w")
        worker_node = await client.where(worker)
        # a lease whose agent lives on another node than its holder
        name = await _name_hosted_off(client, worker_node)
        ttl = 2.0
        token = await worker.hold(name, ttl)
        # renewed by the worker's timer: still held after more than a ttl
        with pytest.raises(phx.LeaseHeld, match=worker_node):
            await coordination.acquire(client, name, "B", ttl=5.0, wait=ttl * 1.5)
        killed_at = time.monotonic()
        cluster.kill(_index(worker_node))
        lease = await coordination.acquire(client, name, "B", ttl=5.0, wait=DEADLINE_S)
        waited = time.monotonic() - killed_at
        assert lease.token == token + 1
        # one ttl after the last renewal (at most ttl / 4 before the kill): not before
        assert ttl / 2 < waited < ttl + 5.0


async def test_a_transfer_saga_finishes_on_a_survivor_when_its_node_is_killed() -> None:
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        steps = [
            coordination.SagaStep(SagaAccount, "x", "withdraw", {"amount": 30},
                                  compensation="deposit", compensation_args={"amount": 30}),
            coordination.SagaStep(SagaAccount, "y", "deposit", {"amount": 30, "hold_s": 1.5},
                                  compensation="withdraw", compensation_args={"amount": 30}),
        ]
        saga = client.ref(coordination.SagaAgent, "transfer-1")
        host = await client.where(saga)
        first = await saga.start([step.plan(client) for step in steps])
        assert first.status == "running"
        give_up = time.monotonic() + DEADLINE_S
        while (await coordination.saga_status(client, "transfer-1")).done < 1:
            assert time.monotonic() < give_up, "the first step never ran"
            await asyncio.sleep(0.02)
        cluster.kill(_index(host))              # mid-transfer: the deposit is under way
        report = await coordination.run_saga(client, "transfer-1", steps, timeout=DEADLINE_S)
        assert report.status == "committed"
        assert await client.where(saga) != host
        balances = [await client.ref(SagaAccount, k).read() for k in ("x", "y")]
        assert balances == [70, 130]            # moved once: nothing lost, nothing doubled
