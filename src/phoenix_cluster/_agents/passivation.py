"""Passivation: an idle agent leaves memory, keeping its committed state on this node.

One sweep per node (``sweep_idle``, driven by the node's housekeeping loop) instead of a
timer per agent keeps idle agents free of timers. An agent with ``on_deactivate`` is
passivated in mailbox order (an internal message runs the hook after the messages
queued before it); messages that arrive behind it go to a fresh activation, in order,
which restores the state just stored. When the node stops, every agent is passivated
once the busy ones finished (:meth:`Passivation.close_all`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .._foundation.env import Clock
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from ..errors import NodeClosed, PhoenixError
from .mailbox import PASSIVATE, Activation, KindRuntime, Message
from .state import StateStore
from .timers import cancel_timers

__all__ = ["Passivation"]

_log = logging.getLogger("phoenix_cluster.agents")


class Passivation:
    """Deactivates this node's agents keeping their state, and counts them."""

    __slots__ = ("_bus", "_clock", "_encode", "_kinds", "_node_name", "_start_drain",
                 "_state", "count")

    def __init__(self, kinds: dict[str, KindRuntime], state: StateStore, clock: Clock,
                 bus: TelemetryBus, node_name: str, encode: Callable[[Any], bytes],
                 start_drain: Callable[[Activation], None]) -> None:
        self._kinds = kinds
        self._state = state
        self._clock = clock
        self._bus = bus
        self._node_name = node_name
        self._encode = encode
        self._start_drain = start_drain
        self.count = 0
        """Passivations on this node (idle, asked for, or at shutdown)."""

    def sweep_idle(self) -> int:
        """Passivate every activation idle past its kind's ``idle_timeout``. Returns how many."""
        now = self._clock.monotonic()
        count = 0
        for kr in list(self._kinds.values()):
            cutoff = now - kr.idle_timeout_s
            idle = [
                act
                for act in kr.activations.values()
                if act.task is None and act.agent is not None and act.last_used <= cutoff
                and not act.interleaved
            ]
            for act in idle:
                self.passivate(act, reason="idle")
                count += 1
        return count

    def passivate(self, act: Activation, *, reason: str) -> None:
        """Deactivate ``act`` keeping its state; in mailbox order if it has ``on_deactivate``."""
        kr = act.kind
        if not kr.spec.has_on_deactivate and act.task is None:
            self.finish(act, reason)
            return

        async def step() -> None:
            assert act.agent is not None
            try:
                await act.agent.on_deactivate()
                act.committed = self._encode(act.agent.snapshot())
            except Exception as exc:
                self._state.rollback(act)
                _log.warning("on_deactivate of %s/%s failed: %r", kr.spec.name, act.key, exc)
            self.finish(act, reason)

        msg = Message(PASSIVATE, b"", None, 0.0, 0, step)
        if act.put_nowait(msg, 1 << 62):
            self._start_drain(act)

    async def close_all(self, timeout_s: float,
                        fail_queued: Callable[[Activation, PhoenixError], None]) -> None:
        """The node stops: let busy agents finish their messages (up to ``timeout_s``,
        then cancel them), then deactivate every agent keeping its state. Messages still
        queued fail with ``NodeClosed`` (``fail_queued``)."""
        acts = [act for kr in self._kinds.values() for act in kr.activations.values()]
        busy = [a.task for a in acts if a.task is not None]
        busy += [t for a in acts for t in a.interleaved or ()]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                _log.warning("%d agents still busy after %.1fs; cancelled", len(pending), timeout_s)
                await asyncio.wait(pending, timeout=1.0)
        for kr in list(self._kinds.values()):
            for act in list(kr.activations.values()):
                if act.agent is None:
                    continue
                if kr.spec.has_on_deactivate:
                    try:
                        async with asyncio.timeout(timeout_s):
                            await act.agent.on_deactivate()
                        act.committed = self._encode(act.agent.snapshot())
                    except Exception as exc:
                        _log.warning("on_deactivate of %s/%s failed: %r",
                                     kr.spec.name, act.key, exc)
                fail_queued(act, NodeClosed(f"node {self._node_name} stopped"))
                act.queue = None
                self.finish(act, "shutdown")

    def finish(self, act: Activation, reason: str) -> None:
        """Store ``act``'s committed state as passive and drop the activation (its
        ``on_deactivate``, if any, has run)."""
        kr = act.kind
        cancel_timers(act)
        if not kr.workers:  # a stateless worker's state is volatile
            kr.passive[act.key] = act.committed
        if kr.activations.get(act.key) is act:
            del kr.activations[act.key]
        if kr.spec.store is not None:  # the next activation reads the store again
            self._state.stored.forget(kr.spec, act.key)
        act.agent = None
        self.count += 1
        left = act.queue
        if left:
            # Messages that arrived behind the passivation go to a fresh activation, in
            # order, which restores the state just stored.
            act.queue = None
            fresh = kr.activations[act.key] = Activation(kr, act.key, self._clock.monotonic())
            fresh.queue = left
            self._start_drain(fresh)
        if self._bus.has_handlers(events.AGENT_DEACTIVATED):
            self._bus.execute(
                events.AGENT_DEACTIVATED,
                {},
                {"node": self._node_name, "kind": kr.spec.name, "key": act.key,
                 "reason": reason},
            )
