"""Durable reminders: ticks stored with the cluster, delivered to ``Agent.on_reminder``.

Where a reminder lives. The reminders of an agent ``kind/key`` are the state of one
agent of a system kind, :class:`ReminderTable` (``phoenix.reminders``, keyed by
:func:`table_key`). That record is replicated like any agent's state: a registration
returns once a quorum of the table's replicas stored it, and it moves with its partition
on a failover or a handoff. The table agent lives where its key's partition is led, and
while it is active it keeps one volatile timer per reminder.

Who fires them. When a node wins the election of a partition (``Replicator.on_led``:
a failover, a handoff, a restart), it lists the tables its store holds there and
activates each (a call to :meth:`ReminderTable.arm`), which arms their timers again. A
node that loses the partition stops the table agent with the others, and its timers
die with the activation. So after an owner is killed, the reminder fires again on the
new leader within the election time (plus the period, since the tick due next waits
its turn).

How a tick arrives. A due tick is recorded in the table (``last``, committed with the
table's state) and handed to a delivery task of this node (:class:`Reminders`), which
calls ``on_reminder(name, tick)`` on the target agent through the ordinary call path:
routed to its owner, activated if it was passivated, run as a message. Delivery is at
least once: a failed call (an unreachable owner, a timeout) is retried until the next
tick is due, and after a failover the new leader delivers the newest due tick again
unless the old one had recorded it; handlers de-duplicate by ``tick``. A handler that
raises is logged; the next tick arrives as planned. Ticks that came due while no node
led the partition are folded into one: the newest is delivered when the table is armed
again.

The delivery runs outside the table's mailbox, so a handler may register or cancel
reminders (calls to its own table) without waiting for itself.

Known cost: a table whose last reminder was cancelled keeps its (empty) record, and
stays active, a few hundred bytes, on the node leading its partition: replicated
records are never deleted yet, and a table with reminders must not be passivated for
being idle between ticks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from .._transport.tasks import TaskSet
from ..errors import AgentError, AgentNotFound, CallCycle, ConfigError, PhoenixError
from .agent import Agent
from .kinds import REMINDER_METHOD, KindSpec, kind_spec, lookup_kind

if TYPE_CHECKING:
    from .._foundation.env import Clock
    from .._replication.service import Replicator
    from .agent_timer import AgentTimer

__all__ = ["TABLE_KIND", "Reminder", "ReminderTable", "Reminders", "table_key"]

_log = logging.getLogger("phoenix_cluster.agents")

TABLE_KIND = "phoenix.reminders"
"""The kind whose agents hold the reminders of one agent each."""

MIN_PERIOD_S = 0.01
"""Shortest period a reminder may have (a tick commits the table's state)."""

ARM_RETRY_MIN_S = 0.2
ARM_RETRY_MAX_S = 5.0
"""Backoff between attempts to activate a table after winning its partition."""

RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0
"""Backoff between attempts to deliver one tick (until the next tick is due)."""

Call = Callable[[KindSpec, str, str, tuple[Any, ...], dict[str, Any], float | None],
                Coroutine[Any, Any, Any]]
"""``AgentRuntime.call``."""


def table_key(kind: str, key: str) -> str:
    """The key of the table holding the reminders of ``kind/key`` (unambiguous: the
    kind's length first, since both parts may contain any character)."""
    return f"{len(kind)}:{kind}/{key}"


class Reminder(msgspec.Struct):
    """One reminder, as the table stores it.

    Attributes:
        every_s: the period.
        first_at: wall-clock time (seconds since the epoch) of tick 0.
        last: the last tick handed for delivery (``-1``: none yet).
    """

    every_s: float
    first_at: float
    last: int = -1

    def due(self, now: float) -> int:
        """The newest tick due at ``now`` (``-1`` before the first)."""
        if now < self.first_at:
            return -1
        return math.floor((now - self.first_at) / self.every_s)

    def at(self, tick: int) -> float:
        """When ``tick`` is due (wall clock)."""
        return self.first_at + tick * self.every_s


class ReminderTable(Agent, kind=TABLE_KIND, idle_timeout=1e9):
    """The reminders of one agent (a system kind: see the module). It is never
    passivated for being idle: its timers are what fires the reminders."""

    target_kind: str
    target_key: str
    reminders: dict[str, Reminder]

    def __init__(self) -> None:
        self.target_kind = ""
        self.target_key = ""
        self.reminders = {}
        self._timers: dict[str, AgentTimer] = {}

    async def on_activate(self) -> None:
        for name in self.reminders:
            self._arm(name)

    async def put(self, kind: str, key: str, name: str, every_s: float,
                  first_s: float) -> None:
        """Register or replace the reminder ``name`` (its first tick ``first_s`` from now)."""
        self.target_kind, self.target_key = kind, key
        now = self._phx_act.runtime.clock.wall()
        self.reminders[name] = Reminder(every_s, now + first_s)
        self._arm(name)

    async def cancel(self, name: str) -> bool:
        """Drop the reminder ``name``; ``False``: there was none."""
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        return self.reminders.pop(name, None) is not None

    async def arm(self) -> int:
        """Nothing: the call activates the table (arming its timers). Returns how many
        reminders it holds."""
        return len(self.reminders)

    async def names(self) -> list[str]:
        """The names of the reminders held."""
        return sorted(self.reminders)

    def _arm(self, name: str) -> None:
        """(Re-)arm the timer of ``name``: at once if a tick is due that was not
        handed on yet (a failover: folded into the newest), else at the next tick."""
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        reminder = self.reminders[name]
        now = self._phx_act.runtime.clock.wall()
        due = reminder.due(now)
        when = now if due > reminder.last else reminder.at(max(due, reminder.last) + 1)
        self._timers[name] = self.set_timer(max(when - now, 0.001), self._tick, name)

    def _tick(self, name: str) -> None:
        """A timer of ``name`` fired: hand the newest due tick on, arm the next one."""
        self._timers.pop(name, None)
        reminder = self.reminders.get(name)
        if reminder is None:
            return
        host = self._phx_act.runtime
        due = reminder.due(host.clock.wall())
        if due > reminder.last:
            reminder.last = due
            host.deliver_reminder(self.target_kind, self.target_key, name, due,
                                  reminder.at(due + 1))
        self._arm(name)


class Reminders:
    """This node's side of reminders: registering them (through the tables), re-arming
    the tables of partitions this node comes to lead, and delivering ticks."""

    __slots__ = ("_call", "_clock", "_replicator", "_tasks", "stopped")

    def __init__(self, call: Call, clock: Clock, node_name: str,
                 replicator: Callable[[], Replicator | None]) -> None:
        self._call = call
        self._clock = clock
        self._replicator = replicator
        """This node's replicator, once it has one (a member of a cluster)."""
        self._tasks = TaskSet(f"reminders {node_name}")
        self.stopped = False

    async def put(self, spec: KindSpec, key: str, name: str, every_s: float,
                  first_s: float | None) -> None:
        """Register the reminder ``name`` of ``spec``/``key`` (``Agent.remind``).

        Raises:
            ConfigError: a stateless kind, no ``on_reminder``, or a bad period or first
                delay.
        """
        if spec.stateless:
            raise ConfigError(f"agent kind {spec.name!r} is a stateless worker: it has no "
                              "single activation for a reminder to wake", key="placement")
        if REMINDER_METHOD not in spec.methods:
            raise ConfigError(f"agent kind {spec.name!r} has no on_reminder(name, tick): "
                              "define it to use reminders", key="on_reminder")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a reminder's name must be a non-empty string, got {name!r}",
                              key="name")
        if not (isinstance(every_s, (int, float)) and math.isfinite(every_s)
                and every_s >= MIN_PERIOD_S):
            raise ConfigError(f"reminder {name!r}: every must be at least {MIN_PERIOD_S} s, "
                              f"got {every_s!r}", key="every")
        first = every_s if first_s is None else first_s
        if not (isinstance(first, (int, float)) and math.isfinite(first) and first >= 0):
            raise ConfigError(f"reminder {name!r}: first must be >= 0 seconds, got {first!r}",
                              key="first")
        await self._call(kind_spec(ReminderTable), table_key(spec.name, key), "put",
                         (spec.name, key, name, float(every_s), float(first)), {}, None)

    async def cancel(self, spec: KindSpec, key: str, name: str) -> bool:
        """Cancel the reminder ``name`` of ``spec``/``key`` (``Agent.cancel_reminder``)."""
        result = await self._call(kind_spec(ReminderTable), table_key(spec.name, key),
                                  "cancel", (name,), {}, None)
        return bool(result)

    def partition_led(self, partition: int) -> None:
        """``Replicator.on_led``: activate the tables this node holds in ``partition``,
        which arms their timers again."""
        replicator = self._replicator()
        if replicator is None or self.stopped:
            return
        keys = replicator.keys_of(partition, TABLE_KIND)
        if keys:
            self._tasks.spawn(self._arm(partition, keys), name=f"reminders-arm-{partition}")

    async def _arm(self, partition: int, keys: list[str]) -> None:
        """Activate each table, retrying (a view of the ring still settling routes it
        to a dead node) while this node leads the partition: after that, whoever leads
        it arms them (its own ``on_led``)."""
        spec = kind_spec(ReminderTable)
        for key in keys:
            backoff = ARM_RETRY_MIN_S
            while not self.stopped:
                try:
                    await self._call(spec, key, "arm", (), {}, None)
                    break
                except PhoenixError as exc:
                    replicator = self._replicator()
                    if (replicator is None or replicator.leads(partition) is None
                            or backoff > ARM_RETRY_MAX_S):
                        _log.info("reminders of %s not armed here: %s", key, exc.message)
                        break
                    await self._clock.sleep(backoff)
                    backoff *= 2

    def deliver(self, kind: str, key: str, name: str, tick: int, until: float) -> None:
        """Deliver ``tick`` of reminder ``name`` to ``kind/key`` in a task of this node,
        retrying until ``until`` (when the next tick is due)."""
        if not self.stopped:
            self._tasks.spawn(self._deliver(kind, key, name, tick, until),
                              name=f"reminder-{kind}/{key}/{name}/{tick}")

    async def _deliver(self, kind: str, key: str, name: str, tick: int, until: float) -> None:
        what = f"reminder {name!r} of {kind}/{key} (tick {tick})"
        try:
            spec = lookup_kind(kind)
        except AgentNotFound as exc:
            _log.warning("%s not delivered: %s", what, exc.message)
            return
        backoff = RETRY_MIN_S
        while not self.stopped:
            try:
                await self._call(spec, key, REMINDER_METHOD, (name, tick), {}, None)
                return
            except (AgentError, CallCycle) as exc:
                _log.warning("%s failed: %s; the next tick arrives as planned", what,
                             exc.message)
                return
            except PhoenixError as exc:
                if self._clock.wall() + backoff >= until:
                    _log.warning("%s not delivered before the next tick: %s", what,
                                 exc.message)
                    return
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)

    async def aclose(self) -> None:
        """Stop delivering; cancel and await this node's reminder tasks."""
        self.stopped = True
        self._tasks.cancel()
        await self._tasks.wait()
