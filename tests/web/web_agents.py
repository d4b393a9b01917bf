"""Agent kinds the web tests drive, in-process and in node processes (``--import``)."""

from __future__ import annotations

import phoenix_cluster as phx


class Meter(phx.Agent, kind="web.meter"):
    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    async def fail(self) -> None:
        raise ValueError("meter refuses")
