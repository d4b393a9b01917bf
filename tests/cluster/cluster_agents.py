"""Agent kinds the cluster tests run on real node processes (imported with --import)."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

import phoenix_cluster as phx


class Tally(phx.Agent, kind="cluster.tally"):
    def __init__(self) -> None:
        self.total = 0
        self.seen: list[int] = []

    async def add(self, n: int) -> int:
        self.total += n
        self.seen.append(n)
        return self.total

    async def where(self) -> str:
        return str(self.node.name)

    async def read(self) -> list[int]:
        return self.seen

    async def add_then_fail(self, n: int) -> None:
        self.total += n
        raise ValueError(f"refusing {n} on {self.node.name}")

    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    async def block(self, seconds: float) -> None:
        """Hold the node's event loop (a CPU-bound or blocking handler): hung, not dead."""
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point

class Sink(phx.Agent, kind="cluster.sink", mailbox_limit=20):
    """A small mailbox, to see casts from another process paced rather than dropped."""

    def __init__(self) -> None:
        self.count = 0

    async def put(self, hold_s: float = 0.0) -> None:
        self.count += 1
        if hold_s:
            await asyncio.sleep(hold_s)  # keep the agent busy: its mailbox fills

    async def total(self) -> int:
        return self.count


class Latch(phx.Agent, kind="cluster.latch", mailbox_limit=1):
    """A one-message mailbox whose handler waits for a gate (in-process tests only)."""

    gates: ClassVar[dict[str, asyncio.Event]] = {}

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def take(self, n: int) -> None:
        await Latch.gates.setdefault(self.key, asyncio.Event()).wait()
        self.seen.append(n)

    async def seen_list(self) -> list[int]:
        return self.seen
