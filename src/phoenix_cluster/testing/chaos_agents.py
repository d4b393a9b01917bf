"""The agent kind the chaos checker drives (imported by the cluster's node processes)."""

from __future__ import annotations

import phoenix_cluster as phx

__all__ = ["ChaosCounter"]


class ChaosCounter(phx.Agent, kind="phoenix.chaos.counter"):
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
