"""Request de-duplication: the window of answered request ids an agent carries along.

Every remote call has a cluster-wide request id. The host remembers the reply future of
the last ``DEDUP_WINDOW`` ids per agent (``Activation.recent``, filled as calls are
queued; local calls to a kind whose commits carry the window too), so a call resent
after a lost reply, or after its commit was fenced, runs at most once. The window
travels with the agent:

- the last ``REPLICATED_REPLIES`` answered ids are committed with each state change
  (``state.py``), and :func:`install_replies` restores them when the agent activates
  again from its replicas (after a failover);
- a migration hands the window and the queued messages to the new host
  (:func:`answered` on the old one, :func:`install_handoff` on the new one).

A resent call that reaches the new host before the window does waits in the mailbox;
installing the window answers it from there instead of running it again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from .handoff import HandoffRecord
from .mailbox import DEDUP_WINDOW, Activation, Message

__all__ = ["DEDUP_WINDOW", "REPLICATED_REPLIES", "answered", "chain", "install_handoff",
           "install_replies"]

REPLICATED_REPLIES = 32
"""Request ids (with replies) of the dedup window committed with each state change, so a
call resent after a failover still runs at most once."""


def answered(act: Activation) -> list[tuple[int, bytes]]:
    """The request ids of ``act``'s window that got a reply, with their replies, oldest
    first (what a migration hands over)."""
    return [
        (rid, f.result()) for rid, f in (act.recent or {}).items()
        if f.done() and not f.cancelled() and f.exception() is None
    ]


def _remember_replies(act: Activation,
                      replies: Iterable[tuple[int, bytes]]) -> dict[int, bytes]:
    """Put answered request ids into ``act``'s window; returns them as a dict."""
    loop = asyncio.get_running_loop()
    recent = act.recent if act.recent is not None else {}
    results: dict[int, bytes] = {}
    for rid, reply in replies:
        done: asyncio.Future[bytes] = loop.create_future()
        done.set_result(reply)
        recent[rid] = done
        results[rid] = reply
    if recent:
        act.recent = recent
    return results


def install_replies(act: Activation, replies: tuple[tuple[int, bytes], ...]) -> None:
    """Restore the replicated dedup window, and answer from it the resent calls that
    queued while the agent was activating (they ran before the failover)."""
    answered_ids = _remember_replies(act, replies)
    act.recent = act.recent if act.recent is not None else {}
    queue = act.queue
    if not queue:
        return
    kept = []
    for m in queue:
        future = m.future
        if m.fn is None and future is not None and m.request_id in answered_ids:
            if not future.done():
                future.set_result(answered_ids[m.request_id])
            continue
        kept.append(m)
    if len(kept) != len(queue):
        queue.clear()
        queue.extend(kept)


def install_handoff(act: Activation, record: HandoffRecord, now: float) -> None:
    """Continue an agent handed over from another node: its dedup window, then its
    queued messages ahead of those that reached this node directly (which are merged
    with them when they carry the same request id)."""
    loop = asyncio.get_running_loop()
    results = _remember_replies(act, record.recent)
    recent = act.recent if act.recent is not None else {}
    transferred: list[Message] = []
    by_id: dict[int, asyncio.Future[bytes]] = {}
    for q in record.queued:
        future: asyncio.Future[bytes] | None = None
        if q.wants_reply:
            future = loop.create_future()
            by_id[q.request_id] = recent[q.request_id] = future
        transferred.append(Message(q.method, q.payload, future,
                                   now + q.timeout_ms / 1000, q.request_id))
    if recent:
        act.recent = recent
    queue = act.queue
    if queue is None:
        if transferred:
            act.queue = deque(transferred)
        return
    kept: list[Message] = []
    for m in queue:
        future = m.future
        if future is not None and m.fn is None:
            first = by_id.get(m.request_id)
            if first is not None:
                chain(first, future)
                continue
            if m.request_id in results:
                if not future.done():
                    future.set_result(results[m.request_id])
                continue
        kept.append(m)
    queue.clear()
    queue.extend(transferred)
    queue.extend(kept)


def chain(first: asyncio.Future[bytes], second: asyncio.Future[bytes]) -> None:
    """Settle ``second`` as ``first`` settles (one run answers a duplicate request)."""

    def copy(done: asyncio.Future[bytes]) -> None:
        if second.done():
            return
        if done.cancelled():
            second.cancel()
        elif (exc := done.exception()) is not None:
            second.set_exception(exc)
        else:
            second.set_result(done.result())

    first.add_done_callback(copy)
