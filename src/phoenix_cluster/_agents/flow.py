"""Flow control of casts: senders wait for mailbox room; a lost message is counted.

A cast returns once its message is in the agent's mailbox. When the mailbox is at its
``mailbox_limit`` the sender waits here, yielding, for the agent to take a message, up
to the cast's timeout; only then does it fail with ``Overloaded`` (nothing was queued).
So a plain loop of ``await ref.method.cast(...)`` is paced by the agent instead of
failing at the limit. (Calls are not paced: a call to a full mailbox is refused at once,
which sheds load when many callers wait on one agent.)

A message that was accepted and then could not be run or passed on, with nobody left to
tell (a cast queued on a node that stopped, a cast forwarded to a host that refused
it), is reported through :func:`report_drop`: one log line and the
``("phoenix", "message", "dropped")`` event that feeds
``phoenix_messages_dropped_total{reason}``.

Must not import the runtime (it imports this).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Literal, get_args

from .._foundation.env import Clock
from .._telemetry import events
from .._telemetry.bus import TelemetryBus

__all__ = ["DROP_REASONS", "DropReason", "RoomWaiters", "report_drop"]

_log = logging.getLogger("phoenix_cluster.agents")

DropReason = Literal["node_stopped", "activation_failed", "refused", "forward_failed",
                     "reroute_failed", "timer_overloaded"]
"""Why an accepted message was lost:

- ``node_stopped``: still queued when its node stopped (after ``shutdown_timeout_s``);
- ``activation_failed``: queued behind an activation that failed (e.g. ``on_activate``
  raised; calls get the error, a cast has nobody to tell);
- ``refused``: an unacknowledged cast (from a peer older than acknowledged casts)
  that the receiving node refused;
- ``forward_failed``: an unacknowledged cast forwarded to the agent's new host, which
  could not take it;
- ``reroute_failed``: a cast queued on a node that stopped leading the agent's
  partition, which could not be routed to its new leader;
- ``timer_overloaded``: a timer tick that found the agent's mailbox full.
"""

DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)


class RoomWaiters:
    """Senders waiting for room in the full mailboxes of one kind, by agent key.

    The drain loop calls :meth:`wake_one` each time it takes a message from a mailbox
    that has waiters, and :meth:`wake_all` when the mailbox stops (emptied, moved,
    stopped): a woken sender tries again from the start (the agent may have moved).
    """

    __slots__ = ("by_key",)

    def __init__(self) -> None:
        self.by_key: dict[str, deque[asyncio.Future[None]]] = {}
        """Waiters by agent key; empty (falsy) when nobody waits. A plain attribute, not
        a property: the drain loop tests it around every message, so it must cost no
        Python call."""

    def __bool__(self) -> bool:
        return bool(self.by_key)

    def __len__(self) -> int:
        return sum(len(q) for q in self.by_key.values())

    async def wait(self, key: str, clock: Clock, timeout_s: float) -> bool:
        """Wait until the mailbox of ``key`` may have room; ``False`` after ``timeout_s``."""
        if timeout_s <= 0:
            return False
        room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self.by_key.get(key)
        if waiting is None:
            waiting = self.by_key[key] = deque()
        waiting.append(room)
        timer = clock.call_later(timeout_s, room.cancel)
        try:
            await asyncio.shield(room)
        except asyncio.CancelledError:
            if not room.cancelled():  # we were cancelled, not timed out
                raise
            return False
        finally:
            timer.cancel()
            waiting = self.by_key.get(key)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(room)
                if not waiting:
                    del self.by_key[key]
        return True

    def wake_one(self, key: str) -> None:
        waiting = self.by_key.get(key)
        while waiting:
            room = waiting.popleft()
            if not room.done():
                room.set_result(None)
                break
        if waiting is not None and not waiting:
            del self.by_key[key]

    def wake_all(self, key: str) -> None:
        waiting = self.by_key.pop(key, None)
        for room in waiting or ():
            if not room.done():
                room.set_result(None)

    def __repr__(self) -> str:
        return f"<RoomWaiters [{len(self)} waiting for {len(self.by_key)} agents]>"


def report_drop(bus: TelemetryBus, node: str, reason: DropReason, kind: str, key: str,
                method: str, why: str, count: int = 1) -> None:
    """Say that ``count`` accepted messages were lost with nobody to tell: log and count."""
    _log.warning("dropped %d message(s) to %s/%s.%s (%s): %s", count, kind, key, method,
                 reason, why)
    if bus.has_handlers(events.MESSAGE_DROPPED):
        bus.execute(events.MESSAGE_DROPPED, {"messages": float(count)},
                    {"node": node, "reason": reason, "kind": kind, "key": key,
                     "method": method})
