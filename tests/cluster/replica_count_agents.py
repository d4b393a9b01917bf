"""Agent kinds with other replica counts than 3 (imported by the node processes)."""

from __future__ import annotations

import phoenix_cluster as phx


class Pair(phx.Agent, kind="replicas.pair", replicas=2):
    """Two copies: a write needs both; one survives the loss of the other."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def add(self, n: int) -> int:
        self.seen.append(n)
        return len(self.seen)

    async def read(self) -> list[int]:
        return self.seen


class Quint(phx.Agent, kind="replicas.quint", replicas=5):
    """Five copies (fewer in a smaller cluster): a write needs three of five."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def add(self, n: int) -> int:
        self.seen.append(n)
        return len(self.seen)

    async def read(self) -> list[int]:
        return self.seen
