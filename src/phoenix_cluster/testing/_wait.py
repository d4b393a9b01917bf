"""Waiting for a condition with a deadline, never sleeping and hoping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["wait_until"]


async def wait_until(
    condition: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition",
    every: float | None = None,
) -> None:
    """Wait until ``condition()`` is true, checking after every event-loop turn, or
    every ``every`` seconds (for a condition costly to evaluate, such as one that reads
    the nodes' logs, in a process whose loop must stay free for the calls it measures).

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
        await asyncio.sleep(every if every is not None else 0 if turns < 50 else 0.005)
