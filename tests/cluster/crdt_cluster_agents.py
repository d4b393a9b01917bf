"""Active-active (``consistency="crdt"``) agent kinds for the cluster tests (--import)."""

from __future__ import annotations

import phoenix_cluster as phx
from phoenix_cluster import crdt


class Cart(phx.Agent, kind="cluster.crdt_cart", consistency="crdt"):
    """An add-wins set of items and a counter of adds: every update is visible in both."""

    items: crdt.ORSet[str]
    adds: crdt.PNCounter

    def __init__(self) -> None:
        self.items = crdt.ORSet()
        self.adds = crdt.PNCounter()

    async def add(self, item: str) -> int:
        self.items.add(item, replica=self.replica)
        self.adds.increment(1, replica=self.replica)
        return int(self.adds.value)

    async def read(self) -> tuple[list[str], int]:
        return sorted(self.items), int(self.adds.value)

    async def where(self) -> str:
        return str(self.node.name)


class NotCrdt(phx.Agent, kind="cluster.not_crdt", consistency="crdt"):
    """Declared active-active with a plain int field: every call fails with ConfigError."""

    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total
