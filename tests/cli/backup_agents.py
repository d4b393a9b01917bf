"""Agent kinds of the backup and restore tests (``phx node --import backup_agents``)."""

from __future__ import annotations

import phoenix_cluster as phx


class Account(phx.Agent, kind="backup_tests.account"):
    def __init__(self) -> None:
        self.balance = 0
        self.history: list[int] = []

    async def deposit(self, amount: int) -> int:
        self.balance += amount
        self.history.append(amount)
        return self.balance

    async def read(self) -> tuple[int, list[int]]:
        return self.balance, self.history


class Profile(phx.Agent, kind="backup_tests.profile"):
    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    async def set(self, name: str, value: str) -> None:
        self.fields[name] = value

    async def read(self) -> dict[str, str]:
        return self.fields
