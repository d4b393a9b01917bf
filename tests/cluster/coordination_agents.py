"""An agent kind that holds a lease from inside a node process, for the coordination
cluster tests and the lease failover benchmark (imported with --import)."""

from __future__ import annotations

import asyncio

import phoenix_cluster as phx
from phoenix_cluster import coordination


class LeaseWorker(phx.Agent, kind="cluster.lease_worker", idle_timeout=600):
    """Acquires a lease as ``<node>/<key>`` and keeps it alive with a timer, the way a
    worker process holds a lock for as long as it lives."""

    def __init__(self) -> None:
        self.token = 0

    async def hold(self, name: str, ttl: float) -> int:
        lease = await coordination.acquire(self.node, name, self._holder(), ttl=ttl)
        self.token = lease.token
        self.set_timer(ttl / 4, self._renew, name, ttl, repeat=True)
        return lease.token

    async def _renew(self, name: str, ttl: float) -> None:
        # asking again as the same holder renews and keeps the token
        await coordination.acquire(self.node, name, self._holder(), ttl=ttl)

    def _holder(self) -> str:
        return f"{self.node.name}/{self.key}"

    async def where(self) -> str:
        return str(self.node.name)


class SagaAccount(phx.Agent, kind="cluster.saga_account", idle_timeout=600):
    """A balance that saga steps move money in and out of, once per step id."""

    steps: coordination.StepLog

    def __init__(self) -> None:
        self.balance = 100
        self.steps = coordination.StepLog()

    async def withdraw(self, amount: int, step_id: str, hold_s: float = 0.0) -> None:
        if hold_s:
            # A slow first step: the saga's agent runs its steps as messages, so a
            # status asked during this one is answered right after it (done == 1).
            await asyncio.sleep(hold_s)
        if not self.steps.first_time(step_id):
            return
        if amount > self.balance:
            raise ValueError(f"insufficient funds: {self.balance} < {amount}")
        self.balance -= amount

    async def deposit(self, amount: int, step_id: str, hold_s: float = 0.0) -> None:
        if hold_s:
            await asyncio.sleep(hold_s)  # a slow step: the saga's node dies during it
        if self.steps.first_time(step_id):
            self.balance += amount

    async def read(self) -> int:
        return self.balance
