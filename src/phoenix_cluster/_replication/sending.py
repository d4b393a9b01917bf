"""Batching items to peers, and waiting for enough of their replies.

:class:`Sender` keeps one outbox per peer: every item bound for that peer (prepares,
accepts and marks of any partition) leaves in one ``batch`` RPC. Up to ``window`` batches
(two by default) are in flight to a peer at once, sent in the order they were cut, so
items leave in order; past that, items pile up into a bigger next batch (group commit
over the network). Items are queued encoded, in *parts*: :meth:`Sender.send`
queues one item and answers it through a future (elections, probes, marks);
:meth:`Sender.send_all` queues the accepts of a whole loop turn, encoded once for every
peer, and hands their replies to one callback (the commit path: no future per write
and peer). :func:`decide` waits for replies until a verdict (a quorum, a refusal) needs
no more of them.

With a ``start`` (the node's connections), the accepts of a loop turn leave from
:meth:`Sender.send_all` itself when the pipeline to the peer has room and no pump is at
work, and their replies come back through a callback the connection calls as it reads
them: no pump task between the end of the turn and the ``send``, nor between the reply
and the waiting writers. Pumps (tasks) remain for single items, for a peer with no open
connection and for a transport with no ``start``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from .._foundation.env import Clock, running_loop
from .._transport.tasks import TaskSet, fail_after
from ..errors import NodeClosed, NodeUnavailable, PhoenixError, ProtocolError
from .leader import Quorum
from .messages import Accept, Ack, Item, Reply, decode_batch_reply, encode_item, encode_items

__all__ = [
    "ACCEPT_OVERHEAD",
    "Answered",
    "Delivery",
    "Rpc",
    "Sender",
    "Start",
    "decide",
    "deciding",
    "done_future",
    "feed_quorum",
    "item_size",
    "result_of",
    "retrieve",
    "worst",
]

_log = logging.getLogger("phoenix_cluster.replication")

Rpc = Callable[[str, str, bytes, float], Awaitable[bytes]]
"""``rpc(node_name, method, payload, timeout_s) -> reply payload``."""


Delivery = Callable[[Sequence[Reply] | PhoenixError], None]
"""Receives the replies to a part's items, in order, or the error that lost them all."""

Answered = Callable[[bytes | BaseException], None]
"""Receives a started call's reply payload, or the exception that lost it."""

Start = Callable[[str, str, bytes, float, Answered], bool]
"""``start(node_name, method, payload, timeout_s, answered) -> bool``: queue the call on
the open connection to the node now and return ``True``; ``answered`` is then called
exactly once, from the transport (no task), with the reply payload or the exception.
``False``: nothing was sent (no open connection, a full send queue); use ``rpc``."""


class _Direct:
    """A batch sent by ``start``: its parts, until answered (or the sender closed)."""

    __slots__ = ("count", "done", "sent")

    def __init__(self, sent: list[tuple[list[bytes], int, Delivery]], count: int) -> None:
        self.sent = sent
        self.count = count
        self.done = False


class _Outbox:
    """Parts waiting to go to one peer, and the pumps sending them (FIFO per peer).

    A part is items queued together (encoded), their approximate size and who gets their
    replies: one item for :meth:`Sender.send`, every accept of a loop turn for
    :meth:`Sender.send_all`. A pump cuts a batch from the front of ``parts``, sends it
    and waits for its answer; up to :attr:`Sender.window` pumps run per peer, so that
    many batches are in flight. ``pumps - sending`` pumps are about to cut a batch.

    ``answered``: the last batch to the peer was answered. Until then (the first batch,
    and after a failure) one batch at a time: a second one would dial a connection of
    its own, and the order of two connections is not the order of the batches.

    ``direct``: the batches in flight sent by ``start`` (counted in ``sending`` too).
    Batches leave directly only while no pump runs, so a pump's batch (whose frame may
    wait for a dial) is never overtaken by a direct one.
    """

    __slots__ = ("answered", "direct", "parts", "peer", "pumps", "sending")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.parts: list[tuple[list[bytes], int, Delivery]] = []
        self.pumps = 0
        self.sending = 0
        self.answered = False
        self.direct: set[_Direct] = set()

    def room(self, window: int) -> int:
        """Batches that may be in flight now."""
        return window if self.answered else 1


class Sender:
    """Per-peer outboxes over an injected ``rpc``.

    Args:
        name: this node's name (for messages).
        rpc: the transport.
        clock: the node's clock (batch deadlines).
        tasks: owns the pump tasks.
        batch_max_bytes: a batch is cut here.
        timeout_s: deadline of one batch.
        window: batches in flight to one peer at most (1: wait for each answer).
        start: sends a batch on an open connection with no task (see :data:`Start`).
    """

    def __init__(self, name: str, rpc: Rpc, clock: Clock, tasks: TaskSet, *,
                 batch_max_bytes: int, timeout_s: float, window: int = 2,
                 start: Start | None = None) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.name = name
        self._rpc = rpc
        self._start = start
        self._clock = clock
        self._tasks = tasks
        self.limit = batch_max_bytes
        self.window = window
        self._timeout = timeout_s
        self._boxes: dict[str, _Outbox] = {}
        self.closed = False
        self.batches = 0
        self.items = 0
        self.most_in_flight = 0
        """The most batches ever in flight to one peer at once (at most ``window``)."""

    def send(self, peer: str, item: Item, size: int = 64) -> asyncio.Future[Reply]:
        """Queue ``item`` for ``peer``; the future gets its reply (or the failure)."""
        fut: asyncio.Future[Reply] = running_loop().create_future()
        if self.closed:
            fut.set_exception(NodeClosed(f"node {self.name} is closed"))
            return fut
        self._queue(peer, [encode_item(item)], size, partial(_settle_one, fut))
        return fut

    def send_all(self, peer: str, items: list[bytes], size: int, deliver: Delivery) -> None:
        """Queue ``items`` (each :func:`~.messages.encode_item`'s bytes) for ``peer`` as
        one part: ``deliver`` gets their replies in order once the batch carrying them is
        answered, or the error that lost them (at once when the sender is closed). The
        caller keeps a part within :attr:`limit` (a part is never split)."""
        if self.closed:
            deliver(NodeClosed(f"node {self.name} is closed"))
            return
        # Called at the end of a loop turn (group commit): nothing more of this turn
        # would join the batch, so it may leave now.
        self._queue(peer, items, size, deliver, now=self._start is not None)

    def close(self) -> None:
        """Refuse new items; fail the parts of batches in flight by ``start`` (pumps are
        the task set's: cancelling it fails theirs)."""
        self.closed = True
        error = NodeClosed(f"node {self.name} stopped")
        for box in self._boxes.values():
            direct, box.direct = box.direct, set()
            for batch in direct:
                batch.done = True
                box.sending -= 1
                _fail_all(batch.sent, error)

    def _queue(self, peer: str, items: list[bytes], size: int, deliver: Delivery, *,
               now: bool = False) -> None:
        box = self._boxes.get(peer)
        if box is None:
            box = self._boxes[peer] = _Outbox(peer)
        box.parts.append((items, size, deliver))
        if now:
            self._send_now(box)
        self._spawn_pump(box)

    def _spawn_pump(self, box: _Outbox) -> None:
        # A new pump only when every running one waits for an answer: a pump about to
        # cut takes this part too (the parts of one loop turn leave in one batch).
        if box.parts and box.pumps == box.sending - len(box.direct) and \
                box.sending < box.room(self.window):
            box.pumps += 1
            self._tasks.spawn(self._pump(box), name=f"replication-to-{box.peer}")

    def _cut(self, box: _Outbox) -> tuple[list[tuple[list[bytes], int, Delivery]], list[bytes]]:
        """The next batch from the front of the outbox: its parts and its items."""
        parts = box.parts
        n, total = 0, 0
        while n < len(parts) and (n == 0 or total + parts[n][1] <= self.limit):
            total += parts[n][1]
            n += 1
        sent = parts[:n]
        del parts[:n]
        items = sent[0][0] if n == 1 else [i for part in sent for i in part[0]]
        self.batches += 1
        self.items += len(items)
        box.sending += 1
        if box.sending > self.most_in_flight:
            self.most_in_flight = box.sending
        return sent, items

    def _send_now(self, box: _Outbox) -> None:
        """Send what the outbox holds by ``start`` while the pipeline has room and no
        pump runs; what cannot leave now stays for a pump or the next answer."""
        start = self._start
        assert start is not None
        while box.parts and box.pumps == 0 and box.sending < box.room(self.window):
            sent, items = self._cut(box)
            batch = _Direct(sent, len(items))
            box.direct.add(batch)
            try:
                left = start(box.peer, "batch", encode_items(items), self._timeout,
                             partial(self._answered, box, batch))
            except Exception as exc:  # e.g. a batch above max_frame_bytes
                self._answered(box, batch, exc)
                continue
            if not left:  # no open connection: a pump dials
                box.direct.discard(batch)
                box.sending -= 1
                self.batches -= 1
                self.items -= len(items)
                box.parts[:0] = sent
                return

    def _answered(self, box: _Outbox, batch: _Direct, result: bytes | BaseException) -> None:
        """A direct batch's reply (or failure), called by the transport as it reads it."""
        if batch.done:
            return  # the sender closed meanwhile: its writes were failed then
        batch.done = True
        box.direct.discard(batch)
        box.sending -= 1
        error: BaseException | None = result if isinstance(result, BaseException) else None
        if error is None:
            assert isinstance(result, bytes)
            try:
                replies = decode_batch_reply(result).replies
                if len(replies) != batch.count:
                    raise ProtocolError(f"{box.peer} answered {len(replies)} of "
                                        f"{batch.count} replication items")
            except Exception as exc:
                error = exc
        if error is not None:
            box.answered = False
            _fail_all(batch.sent, _as_error(box.peer, error))
        else:
            box.answered = True
            _deliver_all(batch.sent, replies)
        if box.parts and not self.closed:
            self._send_now(box)
            self._spawn_pump(box)

    async def _pump(self, box: _Outbox) -> None:
        parts = box.parts
        try:
            while parts:
                if box.sending >= box.room(self.window):
                    break  # after a failure, one at a time: the one in flight takes these
                sent, items = self._cut(box)
                try:
                    # The batch's frame is queued on the connection before the first
                    # suspension (connected peer), so batches leave in the order cut.
                    async with fail_after(self._clock, self._timeout):
                        raw = await self._rpc(box.peer, "batch", encode_items(items),
                                              self._timeout)
                    replies = decode_batch_reply(raw).replies
                    if len(replies) != len(items):
                        raise ProtocolError(f"{box.peer} answered {len(replies)} of "
                                            f"{len(items)} replication items")
                except asyncio.CancelledError:
                    box.sending -= 1
                    _fail_all(sent, NodeClosed(f"node {self.name} stopped"))
                    raise
                except Exception as exc:
                    box.sending -= 1
                    box.answered = False
                    _fail_all(sent, _as_error(box.peer, exc))
                    continue
                box.sending -= 1
                box.answered = True
                _deliver_all(sent, replies)
        except asyncio.CancelledError:
            _fail_all(parts, NodeClosed(f"node {self.name} stopped"))
            parts.clear()
            raise
        finally:
            box.pumps -= 1


def _as_error(peer: str, exc: BaseException) -> PhoenixError:
    return exc if isinstance(exc, PhoenixError) else NodeUnavailable(
        f"replication batch to {peer} failed: {exc!r}", definite=False)


def _deliver_all(sent: list[tuple[list[bytes], int, Delivery]],
                 replies: Sequence[Reply]) -> None:
    if len(sent) == 1:
        _deliver(sent[0][2], replies)
        return
    at = 0
    for part_items, _, deliver in sent:
        _deliver(deliver, replies[at:at + len(part_items)])
        at += len(part_items)


def _settle_one(fut: asyncio.Future[Reply], result: Sequence[Reply] | PhoenixError) -> None:
    if fut.done():
        return
    if isinstance(result, PhoenixError):
        fut.set_exception(result)
    else:
        fut.set_result(result[0])


def _deliver(deliver: Delivery, result: Sequence[Reply] | PhoenixError) -> None:
    try:
        deliver(result)
    except Exception:  # a bug in a receiver must not stop the peer's pump
        _log.exception("a receiver of replication replies raised")


def _fail_all(parts: list[tuple[list[bytes], int, Delivery]], error: PhoenixError) -> None:
    for _, _, deliver in parts:
        _deliver(deliver, error)


async def decide(waits: list[tuple[str, asyncio.Future[Any]]],
                 feed: Callable[[str, asyncio.Future[Any]], None],
                 decided: Callable[[], bool]) -> None:
    """Feed ``(node, future)`` replies as they come until ``decided()`` or all are in.

    Replies arriving after the verdict are retrieved and ignored.
    """
    await deciding(waits, feed, decided)


def deciding(waits: list[tuple[str, asyncio.Future[Any]]],
             feed: Callable[[str, asyncio.Future[Any]], None],
             decided: Callable[[], bool]) -> asyncio.Future[None]:
    """:func:`decide` as a future that resolves at the verdict (no task needed)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if decided() or not waits:
        for _, fut in waits:
            fut.add_done_callback(retrieve)
        done.set_result(None)
        return done
    remaining = len(waits)

    def on_reply(node: str, fut: asyncio.Future[Any]) -> None:
        nonlocal remaining
        remaining -= 1
        if done.done():
            retrieve(fut)
            return
        feed(node, fut)
        if remaining == 0 or decided():
            done.set_result(None)

    for node, fut in waits:
        fut.add_done_callback(partial(on_reply, node))
    return done


def result_of(fut: asyncio.Future[Any]) -> Any:
    """The future's result, or its exception as a value."""
    if fut.cancelled():
        return NodeClosed("cancelled")
    exc = fut.exception()
    return exc if exc is not None else fut.result()


def retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (asyncio logs unseen ones)."""
    if not fut.cancelled():
        fut.exception()


def done_future(value: Any) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


def worst(replies: list[Reply]) -> Reply:
    """The first refusal among ``replies``, else the last reply."""
    for reply in replies:
        if isinstance(reply, Ack) and not reply.ok:
            return reply
    return replies[-1]


def feed_quorum(quorum: Quorum, node: str, fut: asyncio.Future[Any]) -> None:
    """Count an :class:`Ack` (or a failure) in ``quorum``."""
    reply = result_of(fut)
    if isinstance(reply, Ack) and reply.ok:
        quorum.ack(node)
    elif isinstance(reply, Ack) and reply.reason == "epoch":
        quorum.fence(node, reply.promised)
    else:
        quorum.fail(node)


ACCEPT_OVERHEAD = 64
"""What :func:`item_size` counts for an accept besides its entries."""


def item_size(item: Accept) -> int:
    """Approximate wire size of an accept, for cutting batches."""
    return ACCEPT_OVERHEAD + sum(e.size() for _, _, e in item.entries)
