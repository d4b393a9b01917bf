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
    "Delivery",
    "Rpc",
    "Sender",
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
    """

    __slots__ = ("answered", "parts", "peer", "pumps", "sending")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.parts: list[tuple[list[bytes], int, Delivery]] = []
        self.pumps = 0
        self.sending = 0
        self.answered = False


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
    """

    def __init__(self, name: str, rpc: Rpc, clock: Clock, tasks: TaskSet, *,
                 batch_max_bytes: int, timeout_s: float, window: int = 2) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.name = name
        self._rpc = rpc
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
        self._queue(peer, items, size, deliver)

    def _queue(self, peer: str, items: list[bytes], size: int, deliver: Delivery) -> None:
        box = self._boxes.get(peer)
        if box is None:
            box = self._boxes[peer] = _Outbox(peer)
        box.parts.append((items, size, deliver))
        # A new pump only when every running one waits for an answer: a pump about to
        # cut takes this part too (the parts of one loop turn leave in one batch).
        if box.pumps == box.sending and box.pumps < (self.window if box.answered else 1):
            box.pumps += 1
            self._tasks.spawn(self._pump(box), name=f"replication-to-{peer}")

    async def _pump(self, box: _Outbox) -> None:
        parts = box.parts
        try:
            while parts:
                if not box.answered and box.sending:
                    break  # after a failure, one at a time: the one in flight takes these
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
                    error = exc if isinstance(exc, PhoenixError) else NodeUnavailable(
                        f"replication batch to {box.peer} failed: {exc!r}", definite=False)
                    _fail_all(sent, error)
                    continue
                box.sending -= 1
                box.answered = True
                if n == 1:
                    _deliver(sent[0][2], replies)
                    continue
                at = 0
                for part_items, _, deliver in sent:
                    _deliver(deliver, replies[at:at + len(part_items)])
                    at += len(part_items)
        except asyncio.CancelledError:
            _fail_all(parts, NodeClosed(f"node {self.name} stopped"))
            parts.clear()
            raise
        finally:
            box.pumps -= 1


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
