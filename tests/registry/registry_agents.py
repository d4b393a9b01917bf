"""Agent kinds for the registry tests; node processes import this module (--import).

``Probe`` acts on the node that hosts it (``self.node.registry`` and friends), so a test
drives a member process by choosing a probe key that node owns. ``Sink`` is an agent
subscriber that records what it receives.
"""

from __future__ import annotations

from typing import Any

import phoenix_cluster as phx

# Per process: what local callback subscribers received, and the conflicts this node's
# registry reported (a probe installs one hook per node).
RECEIVED: dict[str, list[Any]] = {}
CONFLICTS: list[dict[str, Any]] = []
_HOOKED: set[str] = set()


def _record_conflict(conflict: phx.NameConflict) -> None:
    CONFLICTS.append({"name": conflict.name, "lost": conflict.lost.holder,
                      "won": conflict.won.holder})


class Probe(phx.Agent, kind="registry.probe"):
    def __init__(self) -> None:
        self.calls = 0

    async def on_activate(self) -> None:
        if self.node.name not in _HOOKED:
            _HOOKED.add(self.node.name)
            self.node.registry.on_name_conflict(_record_conflict)

    async def where(self) -> str:
        return str(self.node.name)

    async def register(self, name: str, value: Any, lifetime: str = "node") -> str:
        try:
            await self.node.registry.register(name, value, lifetime=lifetime)
        except phx.PhoenixError as exc:
            return type(exc).__name__
        return "ok"

    async def register_agent(self, name: str, kind: str, key: str) -> str:
        try:
            await self.node.registry.register(name, self.node.ref(kind, key))
        except phx.PhoenixError as exc:
            return type(exc).__name__
        return "ok"

    async def lookup(self, name: str, cached: bool = True) -> Any:
        found = await self.node.registry.lookup(name, cached=cached)
        if isinstance(found, phx.AgentRef):
            return {"agent": [found.kind, found.key]}
        return {"value": found}

    async def holder(self, name: str) -> str | None:
        info = await self.node.registry.info(name, cached=False)
        return None if info is None else info.holder

    async def unregister(self, name: str) -> bool:
        return bool(await self.node.registry.unregister(name))

    async def names(self, prefix: str = "") -> list[str]:
        return list(await self.node.registry.names(prefix))

    async def stored(self) -> int:
        return int(self.node.registry.statistics()["stored"])

    async def conflicts(self) -> list[dict[str, Any]]:
        return CONFLICTS

    async def join(self, group: str, kind: str, key: str) -> None:
        await self.node.groups.join(group, self.node.ref(kind, key))

    async def leave(self, group: str, kind: str, key: str) -> bool:
        return bool(await self.node.groups.leave(group, self.node.ref(kind, key)))

    async def members(self, group: str) -> list[list[str]]:
        return [[r.kind, r.key] for r in await self.node.groups.members(group)]

    async def subscribe(self, topic: str) -> None:
        """Subscribe a local callback of this node that records into RECEIVED."""
        await self.node.pubsub.subscribe(topic, _recorder(self.node.name, topic))

    async def subscribe_agent(self, topic: str, kind: str, key: str, method: str) -> None:
        await self.node.pubsub.subscribe(topic, self.node.ref(kind, key), method)

    async def received(self, topic: str) -> list[Any]:
        return RECEIVED.get(f"{self.node.name}/{topic}", [])

    async def publish(self, topic: str, messages: list[Any]) -> None:
        for message in messages:
            await self.node.pubsub.publish(topic, message)


_RECORDERS: dict[str, Any] = {}


def _recorder(node: str, topic: str) -> Any:
    # One callback object per (node, topic), so subscribing twice is idempotent.
    key = f"{node}/{topic}"
    fn = _RECORDERS.get(key)
    if fn is None:
        def fn(message: Any) -> None:
            RECEIVED.setdefault(key, []).append(message)
        _RECORDERS[key] = fn
    return fn


class Sink(phx.Agent, kind="registry.sink"):
    def __init__(self) -> None:
        self.got: list[Any] = []
        self.lost: list[str] = []

    async def on_message(self, message: Any) -> None:
        self.got.append(message)

    async def messages(self) -> list[Any]:
        return self.got

    async def on_name_conflict(self, conflict: phx.NameConflict) -> None:
        self.lost.append(conflict.name)

    async def lost_names(self) -> list[str]:
        return self.lost

    async def where(self) -> str:
        return str(self.node.name)
