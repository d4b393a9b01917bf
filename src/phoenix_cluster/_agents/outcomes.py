"""Messages that will not run here, or did not succeed: how each one ends.

Nothing is lost silently: every message either ran, or its caller gets a typed error
saying whether anything ran, or (a cast, with nobody to tell) it is routed again or
reported as dropped (``flow.report_drop``).

- a handler that raised: the caller gets an ``AgentError`` (the state was rolled back);
  one whose arguments or result cannot cross the API boundary: the
  ``SerializationError`` itself;
- an agent that stops here (its commit failed, its partition moved): queued calls fail
  with a definite ``NotLeader`` (their callers route them again), queued casts are
  routed again, in order;
- an activation that failed, or a node that stops: queued calls get the error, queued
  casts are routed again when their partition is changing hands, else dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from ..errors import (
    AgentError,
    CallCycle,
    CallRejected,
    NotLeader,
    PhoenixError,
    SerializationError,
)
from .flow import DropReason, report_drop
from .mailbox import Activation, KindRuntime, Message
from .reroute import turned_away
from .state import StateStore
from .timers import cancel_timers

__all__ = ["FailedMessages"]

_log = logging.getLogger("phoenix_cluster.agents")


class FailedMessages:
    """Ends the messages of this node's agents that will not run here or failed."""

    __slots__ = ("_bus", "_closing", "_enqueue", "_node_name", "_state")

    def __init__(self, state: StateStore, bus: TelemetryBus, node_name: str,
                 enqueue: Callable[[KindRuntime, str, Message], Activation],
                 closing: Callable[[], bool]) -> None:
        self._state = state
        self._bus = bus
        self._node_name = node_name
        self._enqueue = enqueue
        self._closing = closing

    def report_failure(self, act: Activation, msg: Message, exc: Exception) -> None:
        """A handler (or timer tick) raised ``exc``; its state was rolled back. The caller
        gets an ``AgentError``; a cast or a tick has nobody to tell but the log.

        A ``CallCycle`` the handler let through reaches the caller as itself (its state
        rolled back, so definite like the original), and so on up the chain: every
        caller of the cycle learns its type, not an ``AgentError`` wrapping it."""
        error: PhoenixError
        if isinstance(exc, CallCycle):
            error = CallCycle(exc.message, chain=exc.chain)
        else:
            error = AgentError.from_exception(exc, f"{act.kind.spec.name}/{act.key}."
                                                   f"{msg.method}")
        error.request_id = msg.request_id
        future = msg.future
        if future is not None:
            if not future.done():
                future.set_exception(error)
        else:
            # A cast or a timer tick has nobody to tell: say it in the log.
            _log.warning("%s; state rolled back (no caller to tell)", error.message)
        if self._bus.has_handlers(events.AGENT_CALL_EXCEPTION):
            self._bus.execute(
                events.AGENT_CALL_EXCEPTION,
                {},
                {"node": self._node_name, "kind": act.kind.spec.name, "key": act.key,
                 "method": msg.method,
                 "error": error.remote_type if isinstance(error, AgentError) else "CallCycle"},
            )

    def refuse(self, act: Activation, msg: Message,
               error: SerializationError | CallRejected) -> None:
        """A message whose arguments or result could not cross the API boundary, or that
        an interceptor refused: the caller gets the typed error (the state was rolled
        back)."""
        error.request_id = msg.request_id
        if msg.future is not None:
            if not msg.future.done():
                msg.future.set_exception(error)
        else:
            _log.warning("cast %s/%s.%s refused: %s", act.kind.spec.name, act.key,
                         msg.method, error.message)

    def fail_queued(self, act: Activation, error: Exception,
                     reason: DropReason = "node_stopped") -> None:
        """Fail every queued message with ``error``. Casts have nobody to tell: when the
        agent's partition is changing hands (``turned_away``: nothing ran) they are
        routed again, in order, as :meth:`stop_here` does; otherwise they are reported
        as dropped."""
        queue = act.queue
        casts: list[Message] = []
        while queue:
            msg = queue.popleft()
            if msg.future is not None:
                if not msg.future.done():
                    msg.future.set_exception(error)
            elif msg.fn is None:
                casts.append(msg)
        if casts and turned_away(error) and not self._closing():
            self.route_again(act.kind, act.key, casts)
        elif casts:
            report_drop(self._bus, self._node_name, reason, act.kind.spec.name, act.key,
                        casts[0].method, str(error), len(casts))

    def stop_here(self, act: Activation, why: str, again: list[Message] | None = None) -> None:
        """Stop an agent here without keeping its state (the replicas have it). Calls
        waiting in its mailbox fail with a definite ``NotLeader`` (nothing of them ran;
        their callers route them again); casts, which have nobody to tell, are routed
        again here, in order, after ``again``."""
        kr = act.kind
        queue = act.queue
        pending = [*(again or ()), *(queue or ())]
        if queue:
            queue.clear()
        cancel_timers(act)
        if kr.activations.get(act.key) is act:
            del kr.activations[act.key]
        kr.passive.pop(act.key, None)
        if kr.spec.store is not None:
            self._state.stored.forget(kr.spec, act.key)
        act.agent = None
        casts: list[Message] = []
        for m in pending:
            if m.fn is not None:
                # A freeze for a move, or an ensure_active, queued behind the stop: the
                # agent is not held here any more, so there is nothing to hand over (the
                # puller activates it from the replicas). Left waiting, a release would
                # hang its puller's activation until its timeout.
                if m.future is not None and not m.future.done():
                    m.future.set_result(cast(bytes, []))
                continue
            if m.future is None:
                casts.append(m)
            elif not m.future.done():
                m.future.set_exception(NotLeader(
                    f"{kr.spec.name}/{act.key} stopped on {self._node_name} before this "
                    f"message ran ({why}); send it again", definite=True))
        if casts:
            self.route_again(kr, act.key, casts)

    def route_again(self, kr: KindRuntime, key: str, casts: list[Message]) -> None:
        """Send ``casts`` (which did not run here) to the agent's host now, in order: a
        peer, or this node again; one that cannot be queued is reported as dropped."""
        placement = self._state.placement
        address = placement.route(kr.spec, key) if placement is not None else None
        if isinstance(address, str) and placement is not None:
            for m in casts:
                placement.forward_cast(kr.spec, key, m.request_id, m.method, m.payload,
                                       address)
            return
        for m in casts:
            try:
                self._enqueue(kr, key, m)
            except PhoenixError as exc:
                report_drop(self._bus, self._node_name, "reroute_failed", kr.spec.name, key,
                            m.method, str(exc))

