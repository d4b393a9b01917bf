"""The handle of an agent timer (``Agent.set_timer``): what the agent keeps to cancel it.

The timers themselves (arming on the node's clock, ticks queued as messages of their
agent) are ``timers.py``; this module only holds the handle, so that ``agent.py`` can
name it without reaching the mailbox or the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._foundation.env import TimerHandle

__all__ = ["AgentTimer", "TimerOwner"]


class TimerOwner(Protocol):
    """The activation a timer belongs to (``mailbox.Activation``): its live timers."""

    timers: list[AgentTimer] | None


class AgentTimer:
    """A timer owned by an activation. ``cancel()`` stops it; passivation cancels it."""

    __slots__ = ("activation", "args", "callback", "cancelled", "handle", "interval", "repeat")

    def __init__(
        self,
        activation: TimerOwner,
        interval: float,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
        repeat: bool,
    ) -> None:
        self.activation = activation
        self.interval = interval
        self.callback = callback
        self.args = args
        self.repeat = repeat
        self.cancelled = False
        self.handle: TimerHandle | None = None

    def cancel(self) -> None:
        """Stop the timer. A tick already queued in the mailbox still runs."""
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        timers = self.activation.timers
        if timers is not None and self in timers:
            timers.remove(self)

    def __repr__(self) -> str:
        what = getattr(self.callback, "__name__", repr(self.callback))
        mode = "every" if self.repeat else "once after"
        state = " cancelled" if self.cancelled else ""
        return f"<AgentTimer {what} {mode} {self.interval}s{state}>"
