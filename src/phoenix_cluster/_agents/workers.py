"""Stateless workers: which of a key's activations on this node takes the next message.

A ``placement="stateless"`` kind is served on whichever member a message reaches (a
member's own calls stay on it), by up to ``max_workers`` activations of the same key at
once. Each worker is an ordinary activation whose key is ``key\\x00<n>``
(``agent.WORKER_SEPARATOR``); ``Agent.key`` shows the caller's key. Its state is its
own and volatile: nothing is replicated, handed off or kept when it passivates.

A message goes to an idle worker if there is one, else to a new worker while fewer than
``max_workers`` exist, else to the worker with the fewest queued messages, so at most
``max_workers`` messages of one key run at once on one node.
"""

from __future__ import annotations

import asyncio

from .agent import WORKER_SEPARATOR
from .mailbox import KindRuntime

__all__ = ["pick_worker", "recent_reply"]


def pick_worker(kr: KindRuntime, key: str) -> str:
    """The activation key of the worker of ``key`` that takes the next message."""
    activations = kr.activations
    free: str | None = None
    least_queued: str | None = None
    fewest = 1 << 62
    for n in range(kr.spec.max_workers):
        worker = f"{key}{WORKER_SEPARATOR}{n}"
        act = activations.get(worker)
        if act is None:
            if free is None:
                free = worker
            continue
        queued = len(act.queue) if act.queue else 0
        if act.task is None and not queued:
            return worker  # idle
        if queued < fewest:
            least_queued, fewest = worker, queued
    if free is not None:
        return free
    assert least_queued is not None
    return least_queued


def recent_reply(kr: KindRuntime, key: str,
                 request_id: int) -> asyncio.Future[bytes] | None:
    """The reply of a call this node's workers of ``key`` took already (a resend after a
    broken connection runs at most once here too), or ``None``."""
    activations = kr.activations
    for n in range(kr.spec.max_workers):
        act = activations.get(f"{key}{WORKER_SEPARATOR}{n}")
        if act is not None and act.recent is not None:
            future = act.recent.get(request_id)
            if future is not None:
                return future
    return None
