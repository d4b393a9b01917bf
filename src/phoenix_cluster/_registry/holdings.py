"""The names this node registered (it is their *holder*), and telling the user when one
is lost.

A holder keeps every registration it made until it is unregistered or lost. It re-sends
them to their owners (``handoff.NameHandoff.reassert``), which is how a conflict left by
a partition is found; an owner that keeps another registration answers with the winner,
or sends a :class:`~.messages.ConflictNotice`. Several owners may report the same loss:
only the first, for the registration still held, counts.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .._agents.kinds import lookup_kind
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from ..errors import AgentNotFound, PhoenixError
from .entries import Entry, NameConflict, registration

__all__ = ["ConflictHook", "Holdings", "RefFactory", "Spawn"]

_log = logging.getLogger("phoenix_cluster.registry")

ConflictHook = Callable[[NameConflict], Awaitable[None] | None]
RefFactory = Callable[[str, str], Any]
"""``refs(kind, key)``: an :class:`~phoenix_cluster.AgentRef` on this node."""
Spawn = Callable[[Awaitable[Any], str], None]
"""Run an awaitable in a task the registry owns (dropped once it is closed)."""


class Holdings:
    """Registrations held by this node, and the ``on_name_conflict`` hooks.

    Args:
        me: this node's name.
        refs: builds agent references (to tell a losing agent).
        bus: where ``name_conflict`` and ``released`` events go.
        spawn: runs async hooks and casts.
        forget: drops a name from the lookup cache.
    """

    def __init__(self, me: str, *, refs: RefFactory, bus: TelemetryBus, spawn: Spawn,
                 forget: Callable[[str], None]) -> None:
        self._me = me
        self._refs = refs
        self._bus = bus
        self._spawn = spawn
        self._forget = forget
        self.held: dict[str, Entry] = {}
        self._hooks: list[ConflictHook] = []

    def add(self, entry: Entry) -> None:
        self.held[entry.name] = entry

    def discard(self, name: str, rid: int) -> None:
        """Forget registration ``rid`` of ``name`` if it is the one held."""
        held = self.held.get(name)
        if held is not None and held.rid == rid:
            del self.held[name]

    def on_name_conflict(self, hook: ConflictHook) -> Callable[[], None]:
        self._hooks.append(hook)

        def remove() -> None:
            if hook in self._hooks:
                self._hooks.remove(hook)

        return remove

    def lost(self, name: str, rid: int, winner: Entry | None) -> None:
        """Registration ``rid`` of ``name`` is gone: replaced by ``winner`` (a conflict)
        or by nothing (someone unregistered it). Forget it and tell the user."""
        held = self.held.get(name)
        if held is None or held.rid != rid:
            return  # not ours, or already handled (several owners tell us)
        del self.held[name]
        self._forget(name)
        if winner is None:
            if self._bus.has_handlers(events.REGISTRY_RELEASED):
                self._bus.execute(events.REGISTRY_RELEASED, {"names": 1.0},
                                  {"node": self._me, "name": name, "reason": "unregistered"})
            return
        conflict = NameConflict(name, registration(held), registration(winner))
        _log.warning("name %r registered by %s lost a conflict to %s's registration "
                     "(the earliest registration wins)", name, self._me, winner.holder)
        self._bus.execute(events.REGISTRY_NAME_CONFLICT, {},
                          {"node": self._me, "name": name, "winner": winner.holder,
                           "loser": held.holder})
        for hook in list(self._hooks):
            try:
                result = hook(conflict)
                if inspect.isawaitable(result):
                    self._spawn(result, "registry-conflict-hook")
            except Exception:
                _log.exception("on_name_conflict hook %r raised", hook)
        if held.kind:
            self._spawn(self._tell_agent(held, conflict), "registry-conflict-agent")

    async def _tell_agent(self, held: Entry, conflict: NameConflict) -> None:
        """Cast ``on_name_conflict(conflict)`` to the losing agent if its kind has it."""
        try:
            if "on_name_conflict" not in lookup_kind(held.kind).methods:
                return
            await self._refs(held.kind, held.key).on_name_conflict.cast(conflict)
        except AgentNotFound:
            return
        except PhoenixError as exc:
            _log.warning("could not tell %s/%s it lost %r: %s", held.kind, held.key,
                         conflict.name, exc.message)
