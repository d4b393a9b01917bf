"""The agent kinds the chaos checkers drive (imported by the cluster's node processes)."""

from __future__ import annotations

from .._agents.agent import Agent

__all__ = ["ChaosCounter", "ChaosRegister"]


class ChaosCounter(Agent, kind="phoenix.chaos.counter"):
    """A counter and the set of items added to it (as a list, to expose duplicates)."""

    def __init__(self) -> None:
        self.total = 0
        self.items: list[str] = []

    async def add(self, n: int, item: str) -> int:
        self.total += n
        self.items.append(item)
        return self.total

    async def read(self) -> dict[str, object]:
        return {"total": self.total, "items": self.items}


class ChaosRegister(Agent, kind="phoenix.chaos.register"):
    """One register: read, write, compare-and-set (checked for linearizability)."""

    def __init__(self) -> None:
        self.value: int | None = None

    async def read(self) -> int | None:
        return self.value

    async def write(self, value: int) -> None:
        self.value = value

    async def cas(self, expected: int | None, new: int) -> bool:
        """Set ``new`` if the value is ``expected``; whether it did."""
        if self.value != expected:
            return False
        self.value = new
        return True
