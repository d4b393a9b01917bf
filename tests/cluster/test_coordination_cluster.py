"""Leases, elections and sagas on real node processes: kill -9 of the node hosting a
lock's agent, of the node holding a lease, of a leader, and of the node coordinating
sagas.

A lock's state (holder, newest token) is committed to a quorum of its replicas, so it
survives its node's death: the holder keeps its lease and its token, and the next
holder's token is larger than every token issued before. A holder that dies loses its
lease one ttl after its last renewal, and the next holder's token is larger.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time

import pytest
from coordination_agents import LeaseWorker, SagaAccount

import phoenix_cluster as phx
from phoenix_cluster import coordination
from phoenix_cluster.testing import LocalCluster, wait_until

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


def _transfer(source: str, target: str, amount: int) -> list[coordination.SagaStep]:
    return [
        coordination.SagaStep(SagaAccount, source, "withdraw", {"amount": amount, "hold_s": 0.3},
                              compensation="deposit", compensation_args={"amount": amount}),
        # a slow deposit: the kill falls while sagas are between their two steps
        coordination.SagaStep(SagaAccount, target, "deposit", {"amount": amount, "hold_s": 0.5},
                              compensation="withdraw", compensation_args={"amount": amount}),
    ]


async def _outcome(client: phx.Node, saga_id: str, steps: list[coordination.SagaStep]) -> str:
    try:
        return (await coordination.run_saga(client, saga_id, steps, timeout=DEADLINE_S)).status
    except phx.SagaAborted:
        return "aborted"


async def test_transfer_sagas_keep_the_sum_when_their_node_is_killed_mid_transfer() -> None:
    """Concurrent transfers between six accounts (some overdraw and are compensated);
    the node coordinating some of them is killed while they are between their steps.
    Every saga ends committed or aborted, and the sum over the accounts never changes."""
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        accounts = [f"acct-{i}" for i in range(6)]
        rng = random.Random(19)
        sagas: dict[str, list[coordination.SagaStep]] = {}
        for n in range(18):
            source, target = rng.sample(accounts, 2)
            sagas[f"t-{n}"] = _transfer(source, target, rng.randint(10, 90))
        hosts = {saga_id: await client.where(client.ref(coordination.SagaAgent, saga_id))
                 for saga_id in sagas}
        victim = hosts["t-0"]
        async with asyncio.TaskGroup() as group:
            outcomes = {saga_id: group.create_task(_outcome(client, saga_id, steps))
                        for saga_id, steps in sagas.items()}
            give_up = time.monotonic() + DEADLINE_S
            mid_transfer: list[str] = []
            while not mid_transfer:   # a saga of the victim between its two steps
                assert time.monotonic() < give_up, "no saga of the victim got under way"
                # All at once: on a loaded machine, asking one saga after another
                # can miss every saga's window between its steps.
                theirs = [s for s, h in hosts.items() if h == victim]
                reports = await asyncio.gather(
                    *(coordination.saga_status(client, saga_id) for saga_id in theirs))
                mid_transfer.extend(saga_id for saga_id, report in zip(theirs, reports, strict=True)
                                    if report.status == "running" and report.done == 1)
                await asyncio.sleep(0.01)
            cluster.kill(_index(victim))
        results = {saga_id: task.result() for saga_id, task in outcomes.items()}
        assert set(results.values()) <= {"committed", "aborted"}
        assert results[mid_transfer[0]] == "committed"  # its deposit cannot fail: resumed
        assert "committed" in results.values()
        balances = [await client.ref(SagaAccount, k).read() for k in accounts]
        assert sum(balances) == 100 * len(accounts), balances
        assert min(balances) >= 0


# A candidate in a process of its own (a client node), so the test can kill -9 a leader.
_CANDIDATE = """
import asyncio, os, sys
import phoenix_cluster as phx
from phoenix_cluster import coordination

async def main() -> None:
    seeds = sys.argv[1].split(",")
    async with phx.Node(role="client", seeds=seeds, cookie=os.environ["PHX_COOKIE"]) as node:
        election = coordination.LeaderElection(
            node, "primary", "outsider", ttl=2.0,
            on_elected=lambda term: print(f"elected {term}", flush=True))
        await election.run()

asyncio.run(main())
"""


async def test_a_killed_leaders_successor_is_elected_with_a_larger_term() -> None:
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        outsider = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CANDIDATE, ",".join(cluster.addresses),
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PHX_COOKIE": cluster.cookie})
        try:
            assert outsider.stdout is not None
            line = await asyncio.wait_for(outsider.stdout.readline(), DEADLINE_S)
            assert line.startswith(b"elected "), line
            outsider_term = int(line.split()[1])
            terms: list[int] = []
            insider = coordination.LeaderElection(client, "primary", "insider", ttl=2.0,
                                                  on_elected=terms.append)
            async with asyncio.TaskGroup() as group:
                campaign = group.create_task(insider.run())
                held = await _acquire_refused(client, "primary", "someone")
                assert held.holders == ["outsider"] and not insider.is_leader
                killed_at = time.monotonic()
                outsider.kill()                 # kill -9 of the leader
                await wait_until(lambda: insider.is_leader, timeout=DEADLINE_S,
                                 what="the insider elected")
                took = time.monotonic() - killed_at
                campaign.cancel()
            assert terms == [outsider_term + 1]  # the next term, and only one
            assert took < 2.0 + 5.0
        finally:
            if outsider.returncode is None:
                outsider.kill()
            await outsider.wait()
