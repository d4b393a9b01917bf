"""Agent kinds the tracing tests run in-process and on node processes (``--import``)."""

from __future__ import annotations

import phoenix_cluster as phx
from phoenix_cluster._telemetry.tracing import current_trace_id


class Echo(phx.Agent, kind="tracing.echo"):
    """Answers with where it runs and the trace its handler sees."""

    async def where(self) -> str:
        return str(self.node.name)

    async def seen(self) -> list[str | None]:
        return [str(self.node.name), current_trace_id.get()]

    async def fail(self) -> None:
        raise ValueError(f"echo {self.key} refuses")


class Relay(phx.Agent, kind="tracing.relay"):
    """Calls an Echo from inside its handler: the nested call must join the trace."""

    async def where(self) -> str:
        return str(self.node.name)

    async def forward(self, key: str) -> list[str | None]:
        there = await self.node.ref(Echo, key).seen()
        return [str(self.node.name), current_trace_id.get(), *there]

    async def poke(self, key: str) -> None:
        await self.node.ref(Echo, key).where.cast()
