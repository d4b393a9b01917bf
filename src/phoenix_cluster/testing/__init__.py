"""Test helpers for Phoenix applications and for Phoenix itself.

``LocalCluster`` starts real node processes on loopback and injects faults;
``ManualClock`` drives a node's time by hand; ``wait_until`` waits for a condition with a
deadline instead of sleeping and hoping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .._foundation.env import Env as Env
from .._foundation.env import ManualClock as ManualClock
from ._local_cluster import ClusterNode as ClusterNode
from ._local_cluster import LocalCluster as LocalCluster
from ._local_cluster import free_port as free_port

__all__ = ["ClusterNode", "Env", "LocalCluster", "ManualClock", "free_port", "wait_until"]


async def wait_until(
    condition: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Wait until ``condition()`` is true, checking after every event-loop turn.

    Raises:
        TimeoutError: still false after ``timeout`` real seconds (the message names
            ``what``).
    """
    deadline = time.monotonic() + timeout
    turns = 0
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} still false after {timeout}s")
        turns += 1
        # Yield a few turns cheaply, then back off so a busy loop does not starve others.
        await asyncio.sleep(0 if turns < 50 else 0.005)
