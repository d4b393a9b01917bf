"""The agent runtime's upkeep: what it does for its agents between messages.

Timers and reminders an agent sets (``timers.py``, ``reminders.py``), idle sweeps and
passivation (``passivation.py``), agents leaving for another node or a lost partition
(``departures.py``), the load placement polls, shutdown, and the statistics telemetry
reads. Each job has its module; these are the runtime's entry points to them, apart
from the path of a message (``runtime.py``), so none of this is on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._foundation.env import Clock
    from .activation import Activator
    from .agent_timer import AgentTimer
    from .departures import Departures
    from .kinds import KindSpec
    from .mailbox import Activation, KindRuntime, Message
    from .outcomes import FailedMessages
    from .passivation import Passivation
    from .reminders import Reminders
    from .timers import AgentTimers

__all__ = ["RuntimeStatistics", "RuntimeUpkeep"]


@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    """A point-in-time view of the agent runtime (telemetry and tests read it)."""

    kinds: int
    active_agents: int
    passive_agents: int
    busy_agents: int
    queued_messages: int
    messages_handled: int
    activations: int
    passivations: int


class RuntimeUpkeep:
    """Timers, reminders, passivation, departures, shutdown and statistics of the node's
    agent runtime (``AgentRuntime`` is one; its ``__init__`` sets these parts)."""

    _kinds: dict[str, KindRuntime]
    clock: Clock
    node_name: str
    closing: bool
    """Set once :meth:`aclose` began: new messages are refused with ``NodeClosed``."""
    timers: AgentTimers
    reminders: Reminders
    passivation: Passivation
    departures: Departures
    failed: FailedMessages
    activator: Activator
    _messages_handled: int
    _load_mark: tuple[float, int]

    def start_timer(self, act: Activation, delay_s: float, callback: Callable[..., Any],
                    args: tuple[Any, ...], repeat: bool) -> AgentTimer:
        """``Agent.start_timer`` (``timers.py``)."""
        return self.timers.start(act, delay_s, callback, args, repeat)

    async def remind(self, act: Activation, name: str, every_s: float,
                     first_s: float | None) -> None:
        """``Agent.remind`` (``reminders.py``)."""
        await self.reminders.put(act.kind.spec, act.key, name, every_s, first_s)

    async def cancel_reminder(self, act: Activation, name: str) -> bool:
        """``Agent.cancel_reminder`` (``reminders.py``)."""
        return await self.reminders.cancel(act.kind.spec, act.key, name)

    def deliver_reminder(self, kind: str, key: str, name: str, tick: int,
                         until: float) -> None:
        """A reminder table's tick is due: deliver it (``reminders.py``)."""
        self.reminders.deliver(kind, key, name, tick, until)

    def sweep_idle(self) -> int:
        """Passivate every activation idle past its kind's ``idle_timeout``. Returns how many."""
        return self.passivation.sweep_idle()

    def passivate(self, act: Activation, *, reason: str) -> None:
        """Deactivate ``act`` keeping its state (``passivation.py``)."""
        self.passivation.passivate(act, reason=reason)

    def load(self) -> tuple[int, float, float]:
        """``(active agents, messages/s since the last call, event-loop lag s)``."""
        now = self.clock.monotonic()
        handled = self._messages_handled
        last_at, last_handled = self._load_mark
        rate = (handled - last_handled) / (now - last_at) if now > last_at else 0.0
        self._load_mark = (now, handled)
        active = sum(len(kr.activations) for kr in self._kinds.values())
        return active, rate, 0.0

    async def freeze(self, spec: KindSpec, key: str, to: str) -> list[Message]:
        """Stop the agent here for a move to node ``to`` (``departures.py``)."""
        return await self.departures.freeze(spec, key, to)

    def partition_lost(self, partition: int, reason: str) -> None:
        """The replicator's ``on_lost``: this node no longer leads ``partition``
        (``departures.py``)."""
        self.departures.partition_lost(partition, reason)

    def _iter_activations(self) -> Iterator[Activation]:
        for kr in self._kinds.values():
            yield from kr.activations.values()

    async def aclose(self, timeout_s: float) -> None:
        """Stop taking messages, let queued ones finish (up to ``timeout_s``), deactivate all.

        Messages still queued when the time is up fail with ``NodeClosed``.
        """
        if self.closing:
            return
        self.closing = True
        self.timers.stopped = True
        await self.reminders.aclose()
        await self.passivation.close_all(timeout_s, self.failed.fail_queued)

    def activation(self, spec: KindSpec, key: str) -> Activation | None:
        kr = self._kinds.get(spec.name)
        return None if kr is None else kr.activations.get(key)

    def statistics(self) -> RuntimeStatistics:
        acts = list(self._iter_activations())
        return RuntimeStatistics(
            kinds=len(self._kinds),
            active_agents=len(acts),
            passive_agents=sum(len(kr.passive) for kr in self._kinds.values()),
            busy_agents=sum(1 for a in acts if a.task is not None),
            queued_messages=sum(len(a.queue) for a in acts if a.queue),
            messages_handled=self._messages_handled,
            activations=self.activator.count,
            passivations=self.passivation.count,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<AgentRuntime {self.node_name} [{s.active_agents} active, "
            f"{s.passive_agents} passive, {s.queued_messages} queued]>"
        )
