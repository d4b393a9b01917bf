"""An agent kind only some member processes import (``--import capability_agents``)."""

from __future__ import annotations

import phoenix_cluster as phx


class Render(phx.Agent, kind="capability.render"):
    def __init__(self) -> None:
        self.frames = 0

    async def render(self, n: int) -> int:
        self.frames += n
        return self.frames

    async def where(self) -> str:
        return str(self.node.name)
