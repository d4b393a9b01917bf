"""Activation: one path that creates or restores an agent, and one cleanup when it fails.

An agent's state comes from, in order of precedence:

1. its replicas' newest committed record (replicated kinds: the replicas win over any
   copy, since every host replicates what it acknowledges);
2. the state handed over by its previous host (a migration, ``placement.py``), which is
   committed first when nothing is committed yet and the agent is pinned off its home;
3. its passivated state on this node, or nothing (a fresh agent).

Then the agent is constructed, restored, and ``on_activate`` runs. Whichever step
fails, the cleanup is the same (:meth:`Activator.activate`): the state read so far is
kept for the next attempt, the activation is dropped, and its queued messages fail with
the step's error (``activation_failed``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._foundation.env import Clock
from .._replication.types import Record
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from ..errors import AgentError, PhoenixError
from .agent import Agent
from .dedup import REPLICATED_REPLIES, install_handoff, install_replies
from .flow import DropReason
from .handoff import HandoffRecord
from .mailbox import Activation
from .state import StateStore
from .timers import cancel_timers

__all__ = ["Activator"]

_log = logging.getLogger("phoenix_cluster.agents")


class _Failed(Exception):
    """An activation step failed: ``error`` for the queued messages, ``keep`` the state
    read so far (kept passivated so that the next attempt does not lose it)."""

    def __init__(self, error: Exception, keep: bytes | None) -> None:
        super().__init__(error)
        self.error = error
        self.keep = keep


class Activator:
    """Creates and restores this node's agents (``activate``) and counts them."""

    __slots__ = ("_bus", "_clock", "_encode", "_fail_queued", "_node_name", "_state", "count")

    def __init__(
        self, state: StateStore, clock: Clock, bus: TelemetryBus, node_name: str,
        encode: Callable[[Any], bytes],
        fail_queued: Callable[[Activation, Exception, DropReason], None],
    ) -> None:
        self._state = state
        self._clock = clock
        self._bus = bus
        self._node_name = node_name
        self._encode = encode
        self._fail_queued = fail_queued
        self.count = 0
        """Activations that succeeded on this node."""

    async def activate(self, act: Activation) -> bool:
        """Create or restore the agent of ``act``; ``False``: it failed, its queued
        messages failed with the error, and the activation is gone."""
        kr = act.kind
        spec = kr.spec
        started = self._clock.monotonic()
        state = kr.passive.pop(act.key, None)
        record: HandoffRecord | None = None
        replies: tuple[tuple[int, bytes], ...] = ()
        try:
            if ((self._state.placement is not None or self._state.replicator is not None
                    or spec.consistency == "crdt" or spec.store is not None)
                    and not spec.stateless):
                # (on an embedded node there is nothing to load: no coroutine for it,
                # since each one per activation shows in the memory of idle agents)
                state, record, replies = await self._load(act, state)
            agent: Agent = spec.cls.__new__(spec.cls)
            agent._phx_act = act
            try:
                agent.__init__()  # type: ignore[misc]
                if state is not None:
                    self._state.restore(agent, state)
                if spec.consistency == "crdt":
                    # every field a CRDT, or ConfigError
                    self._state.active_active.fields(spec, agent)
                if spec.has_on_activate:
                    await agent.on_activate()
                act.committed = self._encode(agent.snapshot())
            except Exception as exc:
                _log.warning("activation of %s/%s failed: %r", spec.name, act.key, exc)
                where = f"activation of {spec.name}/{act.key}"
                raise _Failed(AgentError.from_exception(exc, where), state) from exc
        except _Failed as failed:
            if failed.keep is not None:
                kr.passive[act.key] = failed.keep  # a failed activation must not lose state
            if kr.activations.get(act.key) is act:
                del kr.activations[act.key]
            self._fail_queued(act, failed.error, "activation_failed")
            cancel_timers(act)
            return False
        act.agent = agent
        if replies:
            install_replies(act, replies)
        if record is not None:
            install_handoff(act, record, self._clock.monotonic())
        self.count += 1
        if self._bus.has_handlers(events.AGENT_STARTED):
            self._bus.execute(
                events.AGENT_STARTED,
                {"duration": self._clock.monotonic() - started},
                {"node": self._node_name, "kind": spec.name, "key": act.key,
                 "restored": state is not None},
            )
        return True

    async def _load(
        self, act: Activation, state: bytes | None,
    ) -> tuple[bytes | None, HandoffRecord | None, tuple[tuple[int, bytes], ...]]:
        """The state to start from (see the module), the handed-over record if any,
        and the replicated reply window.

        Raises:
            _Failed: the previous holder did not release the agent, or the replicas
                could not be read or written.
        """
        spec = act.kind.spec
        record: HandoffRecord | None = None
        placement = self._state.placement
        if state is None and placement is not None:
            try:
                record = await placement.before_activate(spec, act.key)
            except PhoenixError as exc:
                if spec.consistency != "crdt":
                    raise _Failed(exc, None) from exc
                # Merged, not fenced: a holder that did not answer may keep running its
                # copy; anti-entropy joins the two.
                _log.info("%s/%s activates without its last holder: %s",
                          spec.name, act.key, exc.message)
            if record is not None:
                state = record.state
        replies: tuple[tuple[int, bytes], ...] = ()
        route = self._state.route(spec, act.key)
        if spec.consistency == "crdt":
            state = await self._state.active_active.load(spec, act.key, state)
        elif route is not None:
            try:
                stored = await self._state.load(spec, act.key, route)
            except PhoenixError as exc:
                raise _Failed(exc, state) from exc  # keep the handed-over state
            if stored is not None:
                # The replicas' newest committed state wins over any handed-over copy:
                # every host replicates what it acknowledges, so a copy is never newer,
                # and it is older when its host was fenced.
                state, replies = stored.state, stored.replies
            elif record is not None and record.pinned and record.state is not None:
                # Nothing committed yet, but the host off its home held a state: keep it
                # (committed first, so the replicas have it before this host serves).
                try:
                    window = tuple(record.recent[-REPLICATED_REPLIES:])
                    await self._state.commit(spec, act.key, Record(record.state, window),
                                             route)
                except PhoenixError as exc:
                    raise _Failed(exc, record.state) from exc
            elif record is not None and not record.pinned:
                state = None  # nothing committed: what the old host held never was
        return state, record, replies
