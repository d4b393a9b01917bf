"""Agent timers: ticks that run as messages of their agent, in mailbox order.

``Agent.start_timer`` arms a timer on the node's clock. Each tick queues an internal
message in the agent's mailbox (so it never runs concurrently with a handler, and its
state change is committed or rolled back like a handler's); a tick that finds the
mailbox full is reported as dropped (``timer_overloaded``). Ticks do not keep an idle
agent alive, and passivation, a move or a stop cancels the agent's timers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._foundation.env import Clock
from .._telemetry.bus import TelemetryBus
from .agent_timer import AgentTimer
from .flow import report_drop
from .mailbox import Activation, Message

__all__ = ["AgentTimers", "cancel_timers"]


class AgentTimers:
    """Arms the timers of this node's agents and queues their ticks."""

    __slots__ = ("_bus", "_clock", "_node_name", "_start_drain", "stopped")

    def __init__(self, clock: Clock, bus: TelemetryBus, node_name: str,
                 start_drain: Callable[[Activation], None]) -> None:
        self._clock = clock
        self._bus = bus
        self._node_name = node_name
        self._start_drain = start_drain
        self.stopped = False
        """Set when the node stops: ticks due from then on are dropped silently."""

    def start(
        self,
        act: Activation,
        delay_s: float,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
        repeat: bool,
    ) -> AgentTimer:
        """Run ``callback(*args)`` as a message of ``act`` after ``delay_s`` (and every
        ``delay_s`` with ``repeat``).

        Raises:
            ValueError: ``delay_s`` is not above 0.
        """
        if not delay_s > 0:
            raise ValueError(f"timer delay must be > 0 seconds, got {delay_s!r}")
        timer = AgentTimer(act, delay_s, callback, args, repeat)
        if act.timers is None:
            act.timers = []
        act.timers.append(timer)
        timer.handle = self._clock.call_later(delay_s, lambda: self._fired(act, timer))
        return timer

    def _fired(self, act: Activation, timer: AgentTimer) -> None:
        if timer.cancelled or self.stopped:
            return
        if timer.repeat:
            timer.handle = self._clock.call_later(timer.interval,
                                                  lambda: self._fired(act, timer))
        else:
            timer.cancel()
        msg = Message("<timer>", b"", None, 0.0, 0, timer.callback, timer.args)
        last_used = act.last_used  # ticks do not keep an idle agent alive
        try:
            if act.put_nowait(msg, act.kind.mailbox_limit):
                self._start_drain(act)
        except Exception as exc:
            report_drop(self._bus, self._node_name, "timer_overloaded", act.kind.spec.name,
                        act.key, "<timer>", str(exc))
        act.last_used = last_used


def cancel_timers(act: Activation) -> None:
    """Cancel every timer of ``act`` (it stops here: passivated, moved or stopped)."""
    for timer in list(act.timers or ()):
        timer.cancel()
    act.timers = None
