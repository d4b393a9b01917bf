"""Departures: agents leaving this node, for a move or because their partition moved.

- :meth:`Departures.freeze`: a migration (``placement.py``) stops the agent here at a
  message boundary and hands its state, dedup window and queued messages to the new
  host in a :class:`HandoffRecord`; the callers waiting here are answered from there.
- :meth:`Departures.partition_lost`: this node no longer leads a partition (the
  replicator's ``on_lost``). Its agents stop after the message they are running, their
  state stays with the replicas, and their queued messages are routed again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from .._foundation.env import Clock
from .._ring.hashing import key_hash
from .._ring.partitions import partition_of
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from .dedup import answered
from .handoff import HandoffRecord, QueuedMessage
from .kinds import KindSpec
from .mailbox import HANDOFF, Activation, KindRuntime, Message
from .state import StateStore
from .timers import cancel_timers

__all__ = ["Departures"]


class Departures:
    """Freezes agents for a move, and stops those whose partition this node lost."""

    __slots__ = ("_bus", "_clock", "_kinds", "_lost_partitions", "_node_name", "_start_drain",
                 "_state", "_stop_here")

    def __init__(self, kinds: dict[str, KindRuntime], state: StateStore, clock: Clock,
                 bus: TelemetryBus, node_name: str, start_drain: Callable[[Activation], None],
                 stop_here: Callable[[Activation, str], None]) -> None:
        self._kinds = kinds
        self._state = state
        self._clock = clock
        self._bus = bus
        self._node_name = node_name
        self._start_drain = start_drain
        self._stop_here = stop_here
        self._lost_partitions: dict[int, str] = {}

    async def freeze(self, spec: KindSpec, key: str, to: str) -> list[Message]:
        """Stop the agent here at a message boundary for a move to node ``to``.

        The placement service's ``frozen`` hook gets the :class:`HandoffRecord` the
        moment the agent stops (it leaves the tombstone). Returns the queued calls whose
        callers wait here: the placement service relays their answers from ``to``.
        """
        placement = self._state.placement
        assert placement is not None
        kr = self._kinds.get(spec.name)
        act = kr.activations.get(key) if kr is not None else None
        if kr is None or act is None:
            state = kr.passive.pop(key, None) if kr is not None else None
            placement.frozen(spec, key, to, None if state is None else
                             HandoffRecord(spec.name, key, state))
            return []
        done: asyncio.Future[list[Message]] = asyncio.get_running_loop().create_future()

        async def step() -> None:
            waiters = self._freeze_now(act, to)
            if not done.done():
                done.set_result(waiters)

        msg = Message(HANDOFF, b"", cast("asyncio.Future[bytes]", done), 0.0, 0, step)
        if act.put_nowait(msg, 1 << 62):
            self._start_drain(act)
        return await done

    def _freeze_now(self, act: Activation, to: str) -> list[Message]:
        kr = act.kind
        queue = act.queue
        pending = list(queue) if queue else []
        if queue:
            queue.clear()
        now = self._clock.monotonic()
        recent = answered(act)
        queued: list[QueuedMessage] = []
        waiters: list[Message] = []
        for m in pending:
            if m.fn is not None or (m.future is not None and m.future.done()):
                continue  # timer ticks and passivation die with the activation here
            wants = m.future is not None
            timeout_ms = max(1, int((m.deadline - now) * 1000)) if wants else 0
            queued.append(QueuedMessage(m.method, m.payload, m.request_id, timeout_ms, wants))
            if wants:
                waiters.append(m)
        record = HandoffRecord(kr.spec.name, act.key, act.committed or None, recent, queued)
        cancel_timers(act)
        if kr.activations.get(act.key) is act:
            del kr.activations[act.key]
        if kr.spec.store is not None:
            self._state.stored.forget(kr.spec, act.key)
        act.agent = None
        assert self._state.placement is not None
        self._state.placement.frozen(kr.spec, act.key, to, record)
        for m in pending:
            if m.fn is not None and m.future is not None and not m.future.done():
                # A second release, or an ensure_active: nothing is left here for them.
                m.future.set_result(cast(bytes, []))
        if self._bus.has_handlers(events.AGENT_DEACTIVATED):
            self._bus.execute(
                events.AGENT_DEACTIVATED, {},
                {"node": self._node_name, "kind": kr.spec.name, "key": act.key,
                 "reason": f"migrated to {to}"},
            )
        return waiters

    def partition_lost(self, partition: int, reason: str) -> None:
        """The replicator's ``on_lost``: this node no longer leads ``partition``.

        Its agents stop here after the message they are running: those whose home moved
        are left to the rebalancer, which hands them to the new home (a migration); the
        others are dropped and activate from the replicas on their next message.
        Batched, because a join loses many partitions at once and one pass over the
        agents serves them all.
        """
        if not self._lost_partitions:
            asyncio.get_running_loop().call_soon(self._release_lost)
        self._lost_partitions[partition] = reason

    def _release_lost(self) -> None:
        lost, self._lost_partitions = self._lost_partitions, {}
        placement = self._state.placement
        for kr in list(self._kinds.values()):
            spec = kr.spec
            if spec.durability == "none" or not spec.hashed:
                continue
            for key in [*kr.activations, *kr.passive]:
                reason = lost.get(partition_of(key_hash(spec.name, key)))
                if reason is None or not self._state.replicated_here(spec, key):
                    continue
                if reason == "moved" and placement is not None and not placement.leaving:
                    # The rebalancer hands it to its new home (a migration, which keeps
                    # its queued messages); until then a commit here fails cleanly.
                    continue
                act = kr.activations.get(key)
                if act is None:
                    kr.passive.pop(key, None)
                    continue
                msg = Message(HANDOFF, b"", None, 0.0, 0, self._stopper(act, reason))
                if act.put_nowait(msg, 1 << 62):
                    self._start_drain(act)

    def _stopper(self, act: Activation, reason: str) -> Callable[[], Any]:
        async def step() -> None:
            self._stop_here(act, f"this node stopped leading its partition: {reason}")

        return step

