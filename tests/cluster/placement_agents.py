"""Agent kinds for the distributed-agent tests (imported by the node processes)."""

from __future__ import annotations

import phoenix_cluster as phx


class Ledger(phx.Agent, kind="placement.ledger"):
    """Records numbered calls and casts, to check exactly-once and order across moves."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.casts: list[int] = []

    async def record(self, n: int) -> int:
        self.calls.append(n)
        return len(self.calls)

    async def note(self, n: int) -> None:
        self.casts.append(n)

    async def read(self) -> dict[str, list[int]]:
        return {"calls": self.calls, "casts": self.casts}

    async def where(self) -> str:
        return str(self.node.name)


class Local(phx.Agent, kind="placement.local", placement="local"):
    def __init__(self) -> None:
        self.hits = 0

    async def where(self) -> str:
        self.hits += 1
        return str(self.node.name)


class Least(phx.Agent, kind="placement.least", placement="least_loaded"):
    def __init__(self) -> None:
        self.hits = 0

    async def where(self) -> str:
        self.hits += 1
        return str(self.node.name)

    async def count(self) -> int:
        return self.hits


def _prefer_named_node(key: str, node: str) -> float:
    # Keys name the node they want: "on:node-2/anything".
    return 1.0 if key.startswith(f"on:{node}/") else 0.0


class Affine(phx.Agent, kind="placement.affine",
             placement=phx.Scored(affinity=1.0, load=0.1, resources=0.0, latency=0.0,
                                  affinity_fn=_prefer_named_node)):
    def __init__(self) -> None:
        self.hits = 0

    async def where(self) -> str:
        self.hits += 1
        return str(self.node.name)


class Spawner(phx.Agent, kind="placement.spawner"):
    """Calls a ``local``-placed agent from inside a node."""

    def __init__(self) -> None:
        self.spawned = 0

    async def spawn_local(self, key: str) -> str:
        self.spawned += 1
        return str(await self.node.ref(Local, key).where())

    async def where(self) -> str:
        return str(self.node.name)

