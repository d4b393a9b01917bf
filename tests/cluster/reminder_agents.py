"""An agent kind with a durable reminder, for the reminder cluster test (imported with
--import)."""

from __future__ import annotations

import time

import phoenix_cluster as phx


class Beeper(phx.Agent, kind="cluster.reminder_beeper"):
    """Records each tick that arrives: ``[tick, wall-clock time, node]``."""

    arrivals: list[tuple[int, float, str]]

    def __init__(self) -> None:
        self.arrivals = []

    async def start(self, every: float, first: float) -> None:
        await self.remind("beep", every=every, first=first)

    async def stop(self) -> bool:
        return await self.cancel_reminder("beep")

    async def read(self) -> list[tuple[int, float, str]]:
        return self.arrivals

    async def on_reminder(self, name: str, tick: int) -> None:
        self.arrivals.append((tick, time.time(), str(self.node.name)))
