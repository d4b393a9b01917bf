"""Saga throughput on a 3-node cluster: transfers between accounts, each a 2-step saga.

Starts a ``LocalCluster`` of 3 node processes on loopback and a client, then runs
``--sagas`` transfer sagas with ``--concurrency`` of them in flight at once. Each saga
is a withdrawal and a deposit on two of ``--accounts`` accounts (agents hashed over the
nodes), with their compensations; the saga's agent commits its progress to a quorum
after each step. Prints sagas/s (committed or compensated) and the latency p50/p95 of
one ``run_saga`` call, and checks that the sum over the accounts did not change.

Run: ``PYTHONPATH=src python benchmarks/saga_throughput.py [--sagas 400]``
(the figures in ``docs/benchmarks.md`` come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import phoenix_cluster as phx
from phoenix_cluster import coordination
from phoenix_cluster.testing import LocalCluster


class BenchAccount(phx.Agent, kind="bench.saga_account", idle_timeout=600):
    steps: coordination.StepLog

    def __init__(self) -> None:
        self.balance = 1_000
        self.steps = coordination.StepLog()

    async def withdraw(self, amount: int, step_id: str) -> None:
        if not self.steps.first_time(step_id):
            return
        if amount > self.balance:
            raise ValueError(f"insufficient funds: {self.balance} < {amount}")
        self.balance -= amount

    async def deposit(self, amount: int, step_id: str) -> None:
        if self.steps.first_time(step_id):
            self.balance += amount

    async def read(self) -> int:
        return self.balance


def transfer(source: str, target: str, amount: int) -> list[coordination.SagaStep]:
    return [
        coordination.SagaStep(BenchAccount, source, "withdraw", {"amount": amount},
                              compensation="deposit", compensation_args={"amount": amount}),
        coordination.SagaStep(BenchAccount, target, "deposit", {"amount": amount},
                              compensation="withdraw", compensation_args={"amount": amount}),
    ]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(sagas: int, concurrency: int, accounts: int) -> None:
    names = [f"acct-{i}" for i in range(accounts)]
    rng = random.Random(1)
    plans: list[tuple[str, list[coordination.SagaStep]]] = []
    for n in range(sagas):
        source, target = rng.sample(names, 2)
        plans.append((f"saga-{n}", transfer(source, target, rng.randint(1, 100))))
    latencies: list[float] = []
    outcomes = {"committed": 0, "aborted": 0}
    async with LocalCluster(3, ["saga_throughput"]) as cluster:
        client = await cluster.client()
        for name in names:   # activate the accounts first: the run times sagas only
            await client.ref(BenchAccount, name).read()
        gate = asyncio.Semaphore(concurrency)

        async def one(saga_id: str, steps: list[coordination.SagaStep]) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    await coordination.run_saga(client, saga_id, steps, timeout=60.0)
                    outcomes["committed"] += 1
                except phx.SagaAborted:
                    outcomes["aborted"] += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for saga_id, steps in plans:
                group.create_task(one(saga_id, steps))
        took = time.perf_counter() - began
        total = sum([await client.ref(BenchAccount, n).read() for n in names])
    if total != 1_000 * accounts:
        raise AssertionError(f"the sum changed: {total}")
    print(f"{sagas} transfer sagas (2 steps), {concurrency} in flight, 3 nodes: "
          f"{sagas / took:.0f} sagas/s; run_saga p50 {_pct(latencies, 0.5) * 1000:.0f} ms, "
          f"p95 {_pct(latencies, 0.95) * 1000:.0f} ms; {outcomes['committed']} committed, "
          f"{outcomes['aborted']} compensated; sum unchanged")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.sagas, args.concurrency, args.accounts))
