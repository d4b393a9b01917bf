"""``node.pubsub``: topics, subscribers on every node, fan-out (the seed's ``Phoenix.PubSub``).

Design: each node keeps its own subscribers (agents, as ``(ref, method)``, and local
callbacks). ``publish`` hands the message to this node's subscribers, then sends one
frame per other node (members and listening clients), each over that node's single
connection; the receiving node hands it to its subscribers.

Guarantees (``docs/registry.md``):

- at most once per subscriber: nothing is retried, so a message sent while a node is
  unreachable, or dropped for a subscriber whose queue is full (``subscriber_queue_limit``),
  is lost for it (counted by the ``("phoenix", "pubsub", "dropped")`` event);
- FIFO per publisher and subscriber: messages one task publishes (awaiting each
  ``publish``) reach every subscriber in the order published: a node numbers what it
  sends to each other node and sends it one at a time, the receiver puts frames that
  overtook each other back in order (``ordering``), queues them for its subscribers
  before it yields, and each subscriber has its own queue (an agent's mailbox keeps that
  order too);
- ``publish(..., confirm=True)`` waits until every node handed the message to its
  subscribers (a callback returned, an agent's mailbox accepted it) and says how many
  took it and which nodes did not answer; re-publishing to make up for those gives
  at-least-once with possible duplicates.

How subscribers on a node take messages (inline, own queue, shared cast queue) is in
``subscribers``; how frames from other nodes are put back in order, ``pubsub_inbox``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Literal, overload

import msgspec

from .._agents.kinds import lookup_kind
from .._agents.ref import AgentRef
from .._foundation.env import Env
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from .._transport.tasks import LogLimiter, TaskSet
from ..errors import AgentNotFound, PhoenixError, ProtocolError
from .cluster import UNREACHABLE, ClusterLink
from .entries import check_name
from .messages import DeliveryReply, Publish, decode, encode
from .pubsub_inbox import Inbox
from .settings import RegistrySettings
from .subscribers import (
    AgentCasts,
    AgentSubscriber,
    Callback,
    CallbackSubscriber,
    Message,
    Subscriber,
    Tracker,
)

__all__ = ["Callback", "Delivery", "PubSub"]

_log = logging.getLogger("phoenix_cluster.pubsub")


class Delivery(msgspec.Struct, frozen=True):
    """The outcome of ``publish(..., confirm=True)``.

    Attributes:
        delivered: subscribers (on every node that answered) that took the message.
        dropped: subscribers that missed it (queue full, callback raised, agent refused).
        unreachable: nodes that did not answer; their subscribers may or may not have it.
    """

    delivered: int
    dropped: int
    unreachable: tuple[str, ...] = ()


class _Outbox:
    """This node's stream of messages to one other node: numbered, sent one at a time."""

    __slots__ = ("lock", "seq", "stream")

    def __init__(self, stream: int) -> None:
        self.lock = asyncio.Lock()
        self.stream = stream
        self.seq = 1


class PubSub:
    """Topics and subscribers: ``node.pubsub`` (see the module docstring)."""

    def __init__(self, link: ClusterLink, *, env: Env, bus: TelemetryBus,
                 settings: RegistrySettings) -> None:
        self._link = link
        self._me = link.self_name
        self._bus = bus
        self.settings = settings
        self._topics: dict[str, dict[Hashable, Subscriber]] = {}
        self.casts = AgentCasts(self)
        self._clock = env.clock
        self._random = env.random
        self._outboxes: dict[str, _Outbox] = {}
        self._tasks = TaskSet(f"pubsub {self._me}")
        self._limiter = LogLimiter(env.clock)
        self._closed = False
        self._inbox = Inbox(self._me, clock=env.clock, bus=bus,
                            reorder_timeout_s=lambda: self.settings.reorder_timeout_s,
                            deliver=self._deliver, missed=self._missed,
                            closed=lambda: self._closed)

    # ------------------------------------------------------------------ subscribing

    @overload
    async def subscribe(self, topic: str, target: AgentRef, method: str) -> None: ...

    @overload
    async def subscribe(self, topic: str, target: Callback) -> None: ...

    async def subscribe(self, topic: str, target: AgentRef | Callback,
                        method: str | None = None) -> None:
        """Subscribe an agent (each message is cast to ``ref.<method>(message)``) or a
        callback of this node (``callback(message)``) to ``topic``. Idempotent.

        The subscription lives on this node: it ends with :meth:`unsubscribe`, or when
        this node stops or dies.

        Raises:
            AgentNotFound: the agent's kind has no such method (or is not imported here).
            TypeError: neither an agent with a method nor a callable.
        """
        check_name(topic, "topic")
        key, make = self._subscriber(target, method)
        subs = self._topics.setdefault(topic, {})
        if key not in subs:
            subs[key] = make()

    async def unsubscribe(self, topic: str, target: AgentRef | Callback,
                          method: str | None = None) -> bool:
        """End a subscription made on this node; returns whether there was one.
        Messages already queued for it are dropped."""
        check_name(topic, "topic")
        key, _ = self._subscriber(target, method, check=False)
        subs = self._topics.get(topic)
        sub = subs.pop(key, None) if subs is not None else None
        if sub is None:
            return False
        sub.closed = True
        if subs is not None and not subs:
            del self._topics[topic]
        return True

    def subscribers(self, topic: str) -> int:
        """How many subscriptions ``topic`` has on this node."""
        return len(self._topics.get(topic, ()))

    def topics(self) -> list[str]:
        """Topics with a subscriber on this node, sorted."""
        return sorted(self._topics)

    def _subscriber(self, target: AgentRef | Callback, method: str | None, *,
                    check: bool = True) -> tuple[Hashable, Callable[[], Subscriber]]:
        if isinstance(target, AgentRef):
            if not isinstance(method, str) or not method:
                raise TypeError("subscribing an agent needs the method to cast messages to")
            if check and method not in lookup_kind(target.kind).methods:
                raise AgentNotFound(f"agent kind {target.kind!r} has no method {method!r}")
            ref = target
            return ("agent", ref.kind, ref.key, method), lambda: AgentSubscriber(
                self, ref, method)
        if not callable(target):
            raise TypeError(f"subscribers are an AgentRef with a method, or a callable; got "
                            f"{type(target).__name__}")
        if method is not None:
            raise TypeError("a callback subscriber takes no method")
        fn = target
        return ("callback", fn), lambda: CallbackSubscriber(self, fn)

    # ------------------------------------------------------------------ publishing

    @overload
    async def publish(self, topic: str, message: Any) -> None: ...

    @overload
    async def publish(self, topic: str, message: Any, *, confirm: Literal[True]) -> Delivery: ...

    @overload
    async def publish(self, topic: str, message: Any, *,
                      confirm: Literal[False]) -> None: ...

    async def publish(self, topic: str, message: Any, *,
                      confirm: bool = False) -> Delivery | None:
        """Send ``message`` (any msgpack value) to every subscriber of ``topic`` on every
        node.

        Without ``confirm`` it returns once the message was handed to this node's
        subscribers and queued for every other node (at most once per subscriber). With
        ``confirm=True`` it waits for every node's hand-over and returns a
        :class:`Delivery`.

        Raises:
            TypeError: msgpack cannot carry ``message``.
        """
        check_name(topic, "topic")
        try:
            raw = msgspec.msgpack.encode(message)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            raise TypeError(f"cannot publish on {topic!r}: the message must be "
                            f"msgpack-serializable ({exc})") from None
        tracker = Tracker() if confirm else None
        self._deliver(Message(topic, self._me, raw, tracker))
        peers = self._link.peers() if self._link.clustered else []
        if confirm:
            assert tracker is not None
            return await self._confirmed(tracker, peers, topic, raw)
        if peers:
            sent = await asyncio.gather(*(self._send(p, topic, raw) for p in peers))
            missed = sent.count(False)
            if missed and self._bus.has_handlers(events.PUBSUB_DROPPED):
                self._bus.execute(events.PUBSUB_DROPPED, {"messages": float(missed)},
                                  {"node": self._me, "topic": topic, "reason": "unreachable"})
        if self._bus.has_handlers(events.PUBSUB_PUBLISHED):
            self._bus.execute(events.PUBSUB_PUBLISHED, {"nodes": float(len(peers) + 1)},
                              {"node": self._me, "topic": topic})
        return None

    def _outbox(self, node: str) -> _Outbox:
        box = self._outboxes.get(node)
        if box is None:
            box = self._outboxes[node] = _Outbox(self._random.getrandbits(62) | 1)
        return box

    async def _send(self, node: str, topic: str, raw: bytes) -> bool:
        """Send one message to ``node``, numbered in this node's stream to it."""
        box = self._outbox(node)
        async with box.lock:  # one at a time per node: numbers reach the socket in order
            payload = encode(Publish(topic, self._me, msgspec.Raw(raw), box.stream, box.seq))
            sent = await self._link.cast(node, "pubsub", "publish", payload,
                                         self.settings.timeout_s)
            if sent:  # a frame that was not queued leaves no gap in the numbers
                box.seq += 1
        return sent

    async def _confirmed(self, tracker: Tracker, peers: list[str], topic: str,
                         raw: bytes) -> Delivery:
        unreachable: list[str] = []
        delivered = dropped = 0

        async def ask(node: str) -> None:
            nonlocal delivered, dropped
            box = self._outbox(node)
            async with box.lock:
                payload = encode(Publish(topic, self._me, msgspec.Raw(raw), box.stream,
                                         box.seq))
                # Whether it arrived is unknown on a timeout: the number is used anyway
                # (the receiver skips a gap after reorder_timeout_s).
                box.seq += 1
                try:
                    answer = await self._link.call(node, "pubsub", "publish_confirm",
                                                   payload, self.settings.fanout_timeout_s)
                except UNREACHABLE:
                    unreachable.append(node)
                    return
            reply = decode(DeliveryReply, answer)
            delivered += reply.delivered
            dropped += reply.dropped

        await asyncio.gather(*(ask(p) for p in peers), tracker.future)
        return Delivery(delivered + tracker.delivered, dropped + tracker.dropped,
                        tuple(sorted(unreachable)))

    def _deliver(self, msg: Message) -> None:
        """Hand ``msg`` to this node's subscribers of its topic, in order, right now."""
        subs = self._topics.get(msg.topic)
        tracker = msg.tracker
        if not subs:
            if tracker is not None:
                tracker.all_offered()
            return
        if tracker is not None:
            tracker.pending += len(subs)
        taken = 0
        for sub in list(subs.values()):
            taken += sub.offer(msg)
        if tracker is not None:
            tracker.all_offered()
        if self._bus.has_handlers(events.PUBSUB_DELIVERED):
            self._bus.execute(events.PUBSUB_DELIVERED, {"subscribers": float(taken)},
                              {"node": self._me, "topic": msg.topic,
                               "publisher": msg.publisher})

    # ------------------------------------------------------------------ the service

    async def handle(self, method: str, payload: bytes) -> bytes:
        """The ``$pubsub`` node service: ``publish`` (a cast) and ``publish_confirm``.

        The message is queued for the subscribers before anything awaits, so messages
        from one connection keep their order.

        Raises:
            AgentNotFound: unknown method.
            ProtocolError: malformed payload.
        """
        if method not in ("publish", "publish_confirm"):
            raise AgentNotFound(f"node {self._me} has no pubsub method {method!r} "
                                "(methods: publish, publish_confirm)")
        try:
            frame = decode(Publish, payload)
            check_name(frame.topic, "topic")
        except (TypeError, ValueError) as exc:
            self._limiter.warning(_log, "pubsub-bad-input", "$pubsub.%s: %s", method, exc)
            raise ProtocolError(f"$pubsub.{method}: {exc}") from None
        except PhoenixError as exc:
            self._limiter.warning(_log, "pubsub-bad-input", "$pubsub.%s: %s", method,
                                  exc.message)
            raise
        tracker = Tracker() if method == "publish_confirm" else None
        self._inbox.arrived(frame, Message(frame.topic, frame.publisher,
                                           bytes(frame.message), tracker))
        if tracker is None:
            return b""
        await tracker.future
        return encode(DeliveryReply(tracker.delivered, tracker.dropped))

    def _missed(self, msg: Message, reason: str) -> None:
        """A message arrived too late to keep its publisher's order: drop it."""
        subs = len(self._topics.get(msg.topic, ()))
        if msg.tracker is not None:
            msg.tracker.dropped += subs
            msg.tracker.all_offered()
        if subs:
            self._report_drop(msg.topic, reason)

    # ------------------------------------------------------------------ reporting

    def dropped(self, msg: Message, reason: str) -> None:
        if msg.tracker is not None:
            msg.tracker.done(False)
        self._report_drop(msg.topic, reason)

    def callback_failed(self, msg: Message, fn: Any) -> None:
        _log.exception("subscriber %r of topic %r raised (the message is dropped for it)",
                       fn, msg.topic)
        self._report_drop(msg.topic, "callback_raised")

    def agent_refused(self, msg: Message, ref: AgentRef, method: str,
                      exc: PhoenixError) -> None:
        self._limiter.warning(_log, "pubsub-agent-refused",
                              "subscriber %s/%s.%s missed a message on %r: %s",
                              ref.kind, ref.key, method, msg.topic, exc.message)
        self._report_drop(msg.topic, "agent_refused")

    def _report_drop(self, topic: str, reason: str) -> None:
        if self._bus.has_handlers(events.PUBSUB_DROPPED):
            self._bus.execute(events.PUBSUB_DROPPED, {"messages": 1.0},
                              {"node": self._me, "topic": topic, "reason": reason})

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        return self._tasks.spawn(_await(coro), name=name)

    async def aclose(self) -> None:
        self._closed = True
        self._inbox.close()
        for subs in self._topics.values():
            for sub in subs.values():
                sub.closed = True
        await self._tasks.aclose()

    def __repr__(self) -> str:
        count = sum(len(s) for s in self._topics.values())
        return f"<PubSub {self._me} [{len(self._topics)} topics, {count} subscriptions]>"


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable
