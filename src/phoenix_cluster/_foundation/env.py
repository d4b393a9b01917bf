"""The node's view of time and chance, and the running loop.

Every component takes its clock and random source from the node's :class:`Env`, never from
``time`` or ``random`` module globals, so the same code runs under a deterministic
simulator. Must not import anything above L0.

:func:`running_loop` is ``asyncio.get_running_loop()`` without a system call per look-up:
on CPython 3.11 that makes a ``getpid()`` system call each time (and so do
``asyncio.current_task()``, and ``create_task``/``call_later`` reached through it), to
check that the loop was not inherited through ``fork``. glibc no longer caches the pid,
and in a sandboxed container a system call costs microseconds, so the registry's hot path
spent about a tenth of a node's CPU on it (``docs/design/performance.md``). It remembers,
per thread, the loop it last found and returns it while it is running; the fork check is
kept by forgetting it in a forked child.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Clock", "Env", "ManualClock", "SystemClock", "TimerHandle", "running_loop"]


class _Cache(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_cache = _Cache()


def running_loop() -> asyncio.AbstractEventLoop:
    """The event loop running in this thread (as ``asyncio.get_running_loop()``).

    Raises:
        RuntimeError: no event loop is running in this thread.
    """
    loop = _cache.loop
    # A thread runs one loop at a time: a remembered loop that still runs is this
    # thread's (loops are not handed from thread to thread while they run).
    if loop is None or not loop.is_running():
        loop = _cache.loop = asyncio.get_running_loop()
    return loop


def _forget_in_child() -> None:
    global _cache
    _cache = _Cache()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class TimerHandle(Protocol):
    """What ``Clock.call_later`` returns: something that can be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """A source of time.

    ``monotonic()`` is for durations and deadlines; ``wall()`` is for humans and logs.
    """

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` on the event loop after ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        return running_loop().call_later(seconds, callback)

    def __repr__(self) -> str:
        return "<SystemClock>"


class _ManualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to (tests and simulation).

    ``advance(dt)`` moves time forward and runs every timer whose deadline passed.
    With ``autojump=True``, when the event loop has nothing else to run the clock jumps
    straight to the earliest deadline, like trio's ``MockClock(autojump_threshold=0)``:
    a test of a 60-second timeout runs in microseconds.
    """

    def __init__(self, start: float = 0.0, *, autojump: bool = False) -> None:
        self._now = start
        self._wall_offset = 1_700_000_000.0
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._seq = 0
        self.autojump = autojump
        self._jumper: asyncio.Handle | None = None

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_offset + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and run the timers that are due."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (advance({seconds!r}))")
        self._now += seconds
        self._run_due()

    def _run_due(self) -> None:
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        timer = _ManualTimer(callback)
        self._seq += 1
        heapq.heappush(self._timers, (self._now + max(seconds, 0.0), self._seq, timer))
        if self.autojump:
            self._schedule_jump(asyncio.get_running_loop())
        return timer

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await fut
        finally:
            timer.cancel()

    def _schedule_jump(self, loop: asyncio.AbstractEventLoop) -> None:
        # Jump only once the loop has nothing else ready: a few call_soon hops let the
        # tasks that are runnable now go first.
        if self._jumper is None:
            self._jumper = loop.call_soon(self._jump_stage, loop, 0)

    def _jump_stage(self, loop: asyncio.AbstractEventLoop, stage: int) -> None:
        if stage < 3:
            self._jumper = loop.call_soon(self._jump_stage, loop, stage + 1)
            return
        self._jumper = None
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if self._timers:
            self._now = max(self._now, self._timers[0][0])
            self._run_due()
        if self._timers:
            self._schedule_jump(loop)

    def __repr__(self) -> str:
        return f"<ManualClock t={self._now:.6f} [{len(self._timers)} timers]>"


@dataclass(slots=True)
class Env:
    """What a node's components may take from the world: time and randomness.

    Pass one to :class:`phoenix_cluster.Node` (``Node(env=Env(clock=ManualClock()))``) to
    run a node under test time. ``random`` is seeded per node so runs can be replayed.
    """

    clock: Clock = field(default_factory=SystemClock)
    random: random.Random = field(default_factory=random.Random)
