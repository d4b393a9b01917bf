"""The agent kinds that ``phx demo`` runs: tallies (three-node demo), bank accounts and
counters (``phx demo --single``).

A tally answers every write with its new count *and the name of the node that hosts it*,
so the demo's client can record each acknowledged write with the node that acknowledged
it, and tell at the end which writes a killed node took with it.

Accounts move money between each other; the total never changes, which the demo checks
at the end. Some transfers fail on purpose *after* debiting the sender: the runtime rolls
the sender's state back, and the unchanged total shows that it did. Counters take casts
(fire-and-forget increments) and passivate quickly, so the demo shows agents being
passivated and reactivated with their state intact.

Kind names are explicit (``demo.account``, ``demo.counter``) so they stay stable wherever
the classes move.
"""

from __future__ import annotations

from .._agents.agent import Agent

__all__ = [
    "INITIAL_BALANCE",
    "Account",
    "Counter",
    "InjectedFailure",
    "InsufficientFunds",
    "Tally",
]

INITIAL_BALANCE = 1_000
"""Every account opens with this balance, so the total is ``accounts * INITIAL_BALANCE``."""


class InsufficientFunds(Exception):
    """A transfer asked for more than the balance (nothing was debited)."""


class InjectedFailure(Exception):
    """A transfer failed on purpose after debiting; the runtime must roll it back."""


class Account(Agent, kind="demo.account"):
    """A bank account. Its state is one integer: the balance in cents."""

    def __init__(self) -> None:
        self.balance = INITIAL_BALANCE

    async def get_balance(self) -> int:
        return self.balance

    async def deposit(self, amount: int) -> int:
        if amount <= 0:
            raise ValueError(f"deposit must be positive, got {amount}")
        self.balance += amount
        return self.balance

    async def transfer(self, to: str, amount: int, fail_after_debit: bool = False) -> int:
        """Move ``amount`` to account ``to``; returns the new balance.

        The credit is a cast to the other account, sent last: if anything before it
        raises, this account's debit is rolled back and no credit was sent, so money is
        neither created nor destroyed. (Calling the other account instead could deadlock
        when two accounts pay each other at once: each would wait for the other's mailbox.)

        Raises:
            InsufficientFunds: ``amount`` exceeds the balance.
            InjectedFailure: ``fail_after_debit`` was set (the demo's rollback check).
        """
        if to == self.key:
            raise ValueError("cannot transfer to the same account")
        if amount > self.balance:
            raise InsufficientFunds(f"{self.key} has {self.balance}, asked for {amount}")
        self.balance -= amount
        if fail_after_debit:
            raise InjectedFailure(f"failure injected after debiting {amount} from {self.key}")
        await self.node.ref(Account, to).deposit.cast(amount)
        return self.balance


class Counter(Agent, kind="demo.counter", idle_timeout=3.0):
    """A counter that passivates after 3 idle seconds and comes back with its count."""

    def __init__(self) -> None:
        self.count = 0

    async def increment(self, by: int = 1) -> int:
        self.count += by
        return self.count

    async def get(self) -> int:
        return self.count


class Tally(Agent, kind="demo.tally"):
    """A count of writes that reports where it lives: replies are ``(count, host name)``."""

    def __init__(self) -> None:
        self.count = 0

    async def add(self, by: int = 1) -> tuple[int, str]:
        """Add ``by``; the new count and the name of the node that committed it."""
        self.count += by
        return self.count, self.node.name

    async def read(self) -> tuple[int, str]:
        """The count and the name of the hosting node (changes nothing)."""
        return self.count, self.node.name
