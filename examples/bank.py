"""Accounts that refuse overdrafts: failed handlers leave no trace.

Run it: ``python examples/bank.py``. It moves money between accounts from many
concurrent clients; transfers that would overdraw fail with ``phx.AgentError`` and the
account's state is rolled back, so the total is conserved.
"""

from __future__ import annotations

import asyncio
import random

import phoenix_cluster as phx


class InsufficientFunds(Exception):
    pass


class Account(phx.Agent, kind="example.account", idle_timeout=60):
    def __init__(self) -> None:
        self.balance = 100
        self.history: list[int] = []

    async def deposit(self, amount: int) -> int:
        self.balance += amount
        self.history.append(amount)
        return self.balance

    async def withdraw(self, amount: int) -> int:
        self.history.append(-amount)  # recorded first...
        self.balance -= amount
        if self.balance < 0:  # ...and rolled back with the balance if this raises
            raise InsufficientFunds(f"{self.key} has {self.balance + amount}, needs {amount}")
        return self.balance

    async def balance_of(self) -> int:
        return self.balance


async def main(accounts: int = 50, transfers: int = 2_000, seed: int = 7) -> None:
    rng = random.Random(seed)
    async with phx.Node() as node:
        refs = [node.ref(Account, f"acct-{i}") for i in range(accounts)]
        refused = 0

        async def transfer() -> None:
            nonlocal refused
            src, dst = rng.sample(refs, 2)
            amount = rng.randint(1, 25)
            try:
                await src.withdraw(amount)
            except phx.AgentError:
                refused += 1
                return
            await dst.deposit(amount)

        await asyncio.gather(*(transfer() for _ in range(transfers)))
        total = sum(await asyncio.gather(*(r.balance_of() for r in refs)))
        print(f"{transfers} transfers, {refused} refused, total {total}")
        assert total == 100 * accounts, "money was created or destroyed"


if __name__ == "__main__":
    asyncio.run(main())
