"""Kinds that node processes of the store cluster test import (``--import``)."""

from __future__ import annotations

import phoenix_cluster as phx


class StoredCounter(phx.Agent, kind="test-stores-cluster.counter", store="main"):
    def __init__(self) -> None:
        self.count = 0

    async def add(self, by: int) -> int:
        self.count += by
        return self.count

    async def get(self) -> int:
        return self.count
