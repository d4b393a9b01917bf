"""A node's subscribers and how messages reach them (used by ``pubsub``).

Plain-function callbacks run inline. An ``async`` callback gets a queue of its own and a
task that drains it while messages wait, so a slow callback delays only itself. Agent
subscribers share one queue per node (:class:`AgentCasts`): a cast only puts the message
in a mailbox, so one task per message instead of one per subscriber keeps fan-out cheap.
Every queue keeps arrival order, so each subscriber sees a publisher's messages in the
order they arrived.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from .._agents.ref import AgentRef
from ..errors import PhoenixError
from .settings import RegistrySettings

__all__ = ["AgentCasts", "AgentSubscriber", "Callback", "CallbackSubscriber", "Hub",
           "Message", "Subscriber", "Tracker"]

Callback = Callable[[Any], Awaitable[None] | None]
"""A local subscriber: ``callback(message)``, a plain or an ``async`` function."""


class Hub(Protocol):
    """What subscribers need from the node's pub/sub service."""

    settings: RegistrySettings
    casts: AgentCasts

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]: ...

    def dropped(self, msg: Message, reason: str) -> None: ...

    def callback_failed(self, msg: Message, fn: Any) -> None: ...

    def agent_refused(self, msg: Message, ref: AgentRef, method: str,
                      exc: PhoenixError) -> None: ...


class Tracker:
    """Counts one confirmed message's hand-overs on this node; ``future`` is done once
    the message was offered to every subscriber and each of them took it or missed it."""

    __slots__ = ("delivered", "dropped", "future", "offered", "pending")

    def __init__(self) -> None:
        self.pending = 0
        self.delivered = 0
        self.dropped = 0
        self.offered = False
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(self, ok: bool) -> None:
        if ok:
            self.delivered += 1
        else:
            self.dropped += 1
        self.pending -= 1
        self._check()

    def all_offered(self) -> None:
        self.offered = True
        self._check()

    def _check(self) -> None:
        if self.offered and self.pending <= 0 and not self.future.done():
            self.future.set_result(None)



class Message:
    """A message arriving on this node: its bytes, decoded at most once."""

    __slots__ = ("_decoded", "_value", "publisher", "raw", "topic", "tracker")

    def __init__(self, topic: str, publisher: str, raw: bytes, tracker: Tracker | None) -> None:
        self.topic = topic
        self.publisher = publisher
        self.raw = raw
        self.tracker = tracker
        self._decoded = False
        self._value: Any = None

    @property
    def value(self) -> Any:
        # Shared by every callback on this node: subscribers must not mutate it.
        if not self._decoded:
            self._value = msgspec.msgpack.decode(self.raw)
            self._decoded = True
        return self._value


class Subscriber:
    """One subscription on this node."""

    __slots__ = ("closed", "pubsub")

    def __init__(self, pubsub: Hub) -> None:
        self.pubsub = pubsub
        self.closed = False

    def offer(self, msg: Message) -> bool:
        """Take ``msg`` after the ones before it; ``False`` if it was dropped at once."""
        raise NotImplementedError


class CallbackSubscriber(Subscriber):
    """A local callback. A plain function runs inline; an ``async`` one gets a queue of
    its own, drained by a task that exists only while messages wait, so a slow callback
    delays nobody else."""

    __slots__ = ("fn", "is_async", "label", "queue", "task")

    def __init__(self, pubsub: Hub, fn: Callback) -> None:
        super().__init__(pubsub)
        self.fn = fn
        self.label = f"pubsub-callback-{getattr(fn, '__name__', 'callback')}"
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None))  # noqa: B004 - async callable objects too
        self.queue: deque[Message] = deque()
        self.task: asyncio.Task[None] | None = None

    def offer(self, msg: Message) -> bool:
        if not self.is_async:
            ok = self._run(msg)
            if msg.tracker is not None:
                msg.tracker.done(ok)
            return True
        if len(self.queue) >= self.pubsub.settings.subscriber_queue_limit:
            self.pubsub.dropped(msg, "queue_full")
            return False
        self.queue.append(msg)
        if self.task is None:
            self.task = self.pubsub.spawn(self._drain(), self.label)
        return True

    def _run(self, msg: Message) -> bool:
        try:
            result = self.fn(msg.value)
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                self.pubsub.spawn(result, self.label)
        except Exception:
            self.pubsub.callback_failed(msg, self.fn)
            return False
        return True

    async def _drain(self) -> None:
        queue = self.queue
        try:
            while queue and not self.closed:
                msg = queue[0]
                try:
                    await self.fn(msg.value)  # type: ignore[misc]
                    ok = True
                except Exception:
                    self.pubsub.callback_failed(msg, self.fn)
                    ok = False
                queue.popleft()
                if msg.tracker is not None:
                    msg.tracker.done(ok)
        finally:
            self.task = None
            while queue:  # closed (unsubscribed, or the node stops): nobody takes these
                msg = queue.popleft()
                if msg.tracker is not None:
                    msg.tracker.done(False)


class AgentSubscriber(Subscriber):
    """An agent: each message becomes a cast to ``ref.<method>(message)``.

    The casts of every agent subscriber on this node go through one queue and one task
    (:class:`AgentCasts`): a cast only hands the message to a mailbox, so it is quick,
    and one task per message instead of one per subscriber keeps fan-out cheap.
    """

    __slots__ = ("method", "pending", "ref")

    def __init__(self, pubsub: Hub, ref: AgentRef, method: str) -> None:
        super().__init__(pubsub)
        self.ref = ref
        self.method = method
        self.pending = 0

    def offer(self, msg: Message) -> bool:
        if self.pending >= self.pubsub.settings.subscriber_queue_limit:
            self.pubsub.dropped(msg, "queue_full")
            return False
        self.pending += 1
        self.pubsub.casts.put(self, msg)
        return True

    async def deliver(self, msg: Message) -> bool:
        try:
            # Raw bytes are spliced into the cast's arguments as they are: no re-encoding.
            # Unacknowledged: pub/sub is best effort (a refusal at a remote owner is
            # counted there as a dropped message), and one round trip per message
            # would bound a node's fan-out to agents by the network's latency.
            await getattr(self.ref, self.method).cast_unacknowledged(msgspec.Raw(msg.raw))
        except PhoenixError as exc:
            self.pubsub.agent_refused(msg, self.ref, self.method, exc)
            return False
        return True


class AgentCasts:
    """The queue of casts to agent subscribers on one node, in arrival order."""

    __slots__ = ("pubsub", "queue", "task")

    def __init__(self, pubsub: Hub) -> None:
        self.pubsub = pubsub
        self.queue: deque[tuple[AgentSubscriber, Message]] = deque()
        self.task: asyncio.Task[None] | None = None

    def put(self, sub: AgentSubscriber, msg: Message) -> None:
        self.queue.append((sub, msg))
        if self.task is None:
            self.task = self.pubsub.spawn(self._drain(), "pubsub-agent-casts")

    async def _drain(self) -> None:
        queue = self.queue
        try:
            while queue:
                sub, msg = queue[0]
                ok = not sub.closed and await sub.deliver(msg)
                queue.popleft()
                sub.pending -= 1
                if msg.tracker is not None:
                    msg.tracker.done(ok)
        finally:
            self.task = None
            while queue:  # the node stops: nobody takes these
                sub, msg = queue.popleft()
                sub.pending -= 1
                if msg.tracker is not None:
                    msg.tracker.done(False)
