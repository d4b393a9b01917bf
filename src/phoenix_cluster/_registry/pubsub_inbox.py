"""Pub/sub messages from other nodes, put back in each publisher's order.

A node numbers what it sends to each other node and sends it one at a time, but frames
of one publisher may still overtake each other on the way (a reconnect, a second
connection). :class:`Inbox` holds what arrived early until the frames before it come,
hands each message to delivery in its publisher's order, drops one that arrives after
its turn was given up (counted as missed), and gives up a gap that stays open for
``reorder_timeout_s`` (logged, and counted as dropped with reason ``gap``).
:class:`~.pubsub.PubSub` delivers what it hands on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .._foundation.env import Clock, TimerHandle
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from .messages import Publish
from .ordering import StreamOrder
from .subscribers import Message

__all__ = ["Inbox"]

_log = logging.getLogger("phoenix_cluster.pubsub")


class Inbox:
    """The messages of every publisher that reach the node ``me``.

    Args:
        me: this node's name.
        clock: the node's clock (the reorder timeout).
        bus: where dropped messages are counted.
        reorder_timeout_s: how long a gap may stay open before it is given up (read when
            a gap opens: pub/sub's settings may be replaced).
        deliver: hands a message, in its publisher's order, to this node's subscribers.
        missed: called for a message that came too late to keep the order (dropped).
        closed: whether pub/sub is closed (a timer that fires then does nothing).
    """

    def __init__(self, me: str, *, clock: Clock, bus: TelemetryBus,
                 reorder_timeout_s: Callable[[], float],
                 deliver: Callable[[Message], None], missed: Callable[[Message, str], None],
                 closed: Callable[[], bool]) -> None:
        self._me = me
        self._clock = clock
        self._bus = bus
        self._reorder_timeout_s = reorder_timeout_s
        self._deliver = deliver
        self._missed = missed
        self._closed = closed
        self._orders: dict[str, StreamOrder[Message]] = {}
        self._gaps: dict[str, TimerHandle] = {}

    def arrived(self, frame: Publish, msg: Message) -> None:
        """Deliver what is now in order from ``frame``'s publisher; hold what is early."""
        if not frame.seq:
            self._deliver(msg)
            return
        publisher = frame.publisher
        order = self._orders.get(publisher)
        if order is None:
            order = self._orders[publisher] = StreamOrder()
        accepted = order.accept(frame.stream, frame.seq, msg)
        if accepted.late:
            self._missed(msg, "late")
        for ready in accepted.ready:
            self._deliver(ready)
        self._watch_gap(publisher, order)

    def _watch_gap(self, publisher: str, order: StreamOrder[Message]) -> None:
        timer = self._gaps.get(publisher)
        if order.waiting and timer is None:
            self._gaps[publisher] = self._clock.call_later(
                self._reorder_timeout_s(), lambda: self._gap_expired(publisher))
        elif not order.waiting and timer is not None:
            timer.cancel()
            del self._gaps[publisher]

    def _gap_expired(self, publisher: str) -> None:
        self._gaps.pop(publisher, None)
        order = self._orders.get(publisher)
        if order is None or self._closed():
            return
        accepted = order.give_up()
        if accepted.skipped:
            _log.info("%d messages from %s never arrived; delivering the ones after them",
                      accepted.skipped, publisher)
            if self._bus.has_handlers(events.PUBSUB_DROPPED):
                self._bus.execute(events.PUBSUB_DROPPED, {"messages": float(accepted.skipped)},
                                  {"node": self._me, "topic": "", "reason": "gap"})
        for ready in accepted.ready:
            self._deliver(ready)
        self._watch_gap(publisher, order)

    def close(self) -> None:
        """Stop waiting for any gap."""
        for timer in self._gaps.values():
            timer.cancel()
        self._gaps.clear()
