"""Task ownership, clock-driven timeouts and rate-limited warnings for the transport.

- :class:`TaskSet` is a small nursery: every task the transport starts (accept handlers,
  dials, per-connection reader/writer/keepalive, inbound handlers) belongs to one, and the
  owner cancels and awaits it in ``aclose()`` (STYLE 3.11). Unlike ``asyncio.TaskGroup``
  it can outlive a single ``async with`` block, which a ``start()``/``aclose()``
  lifecycle needs, and one failing task does not cancel its siblings.
- :func:`fail_after` is ``asyncio.timeout`` driven by the node's :class:`Clock`, so the
  simulator's clock governs handshake and connect deadlines too (DESIGN principle 4).
- :class:`LogLimiter` keeps hostile input from flooding the log: a burst per window,
  then one summary line.
- :class:`LogSummary` turns a burst of one kind of routine event (a membership change
  moves hundreds of partitions) into one INFO line with counts per reason.
- :class:`Callback` stands where a pending request's future would, and calls a function
  with the answer at once instead of waking a task a loop turn later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, TypeVar

from phoenix_cluster._foundation.env import Clock, TimerHandle, running_loop

__all__ = ["Callback", "LogLimiter", "LogSummary", "TaskSet", "fail_after"]

_log = logging.getLogger("phoenix_cluster.transport")

_T = TypeVar("_T")


class Callback(Generic[_T]):
    """The three methods of a future a pending request's owner uses (``done``,
    ``set_result``, ``set_exception``), calling ``answered`` with the result or the
    exception, once, right there: the code that reads the answer runs it, with no task
    woken for it on a later loop turn. ``timer``, if set, is cancelled when it settles.
    """

    __slots__ = ("_answered", "_done", "timer")

    def __init__(self, answered: Callable[[_T | BaseException], None]) -> None:
        self._answered = answered
        self._done = False
        self.timer: TimerHandle | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, result: _T, /) -> None:
        self._settle(result)

    def set_exception(self, exception: BaseException, /) -> None:
        self._settle(exception)

    def _settle(self, value: _T | BaseException) -> None:
        if self._done:
            return
        self._done = True
        if self.timer is not None:
            self.timer.cancel()
        try:
            self._answered(value)
        except Exception:  # the reader that called it must go on reading
            _log.exception("the receiver of an answer raised")


class TaskSet:
    """Owns a set of tasks: starts them, logs crashes, cancels and awaits them on close."""

    __slots__ = ("_name", "_tasks")

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved
        if exc is not None:
            _log.error("%s: task %s crashed: %r", self._name, task.get_name(), exc, exc_info=exc)

    def cancel(self) -> None:
        """Cancel every task except the one calling (it may be closing its own set)."""
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def wait(self) -> None:
        """Wait until every task but the caller has finished, including ones started meanwhile."""
        current = asyncio.current_task()
        while True:
            others = {t for t in self._tasks if t is not current}
            if not others:
                return
            await asyncio.wait(others)

    async def aclose(self) -> None:
        self.cancel()
        await self.wait()

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"<TaskSet {self._name} [{len(self._tasks)} tasks]>"


class fail_after:  # lower case: named like trio's fail_after, used like a function
    """``async with fail_after(clock, s):`` raises ``TimeoutError`` if the block outlives ``s``.

    Same semantics as ``asyncio.timeout`` (cancel the task, turn that cancellation into
    ``TimeoutError`` on exit, leave unrelated cancellations alone), but the deadline is a
    timer on the node's clock instead of the event loop's.
    """

    __slots__ = ("_cancelling", "_clock", "_expired", "_handle", "_seconds", "_task")

    def __init__(self, clock: Clock, seconds: float) -> None:
        self._clock = clock
        self._seconds = seconds
        self._expired = False
        self._handle: TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0

    async def __aenter__(self) -> None:
        task = asyncio.current_task(running_loop())
        if task is None:
            raise RuntimeError("fail_after must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = self._clock.call_later(self._seconds, self._fire)

    def _fire(self) -> None:
        if self._task is not None and not self._task.done():
            self._expired = True
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if not self._expired or self._task is None:
            return
        # Our cancel request is consumed here whether or not it surfaced as an exception.
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError(f"deadline of {self._seconds}s passed") from exc


class LogLimiter:
    """At most ``burst`` warnings per ``window_s`` per category; then one summary line.

    Bad input is the peer's choice, so without a limit a hostile peer decides how much
    we log. Time comes from the node's clock.
    """

    __slots__ = ("_burst", "_clock", "_state", "_window_s")

    def __init__(self, clock: Clock, *, burst: int = 10, window_s: float = 10.0) -> None:
        self._clock = clock
        self._burst = burst
        self._window_s = window_s
        self._state: dict[str, list[float]] = {}  # category -> [window start, count, dropped]

    def warning(self, logger: logging.Logger, category: str, msg: str, *args: object) -> None:
        now = self._clock.monotonic()
        state = self._state.setdefault(category, [now, 0.0, 0.0])
        if now - state[0] >= self._window_s:
            if state[2]:
                logger.warning(
                    "%d more %s warnings suppressed in the last %.0fs",
                    int(state[2]),
                    category,
                    now - state[0],
                )
            state[:] = [now, 0.0, 0.0]
        if state[1] < self._burst:
            state[1] += 1
            logger.warning(msg, *args)
        else:
            state[2] += 1
            logger.debug(msg, *args)


class LogSummary:
    """Counts events by reason and logs one INFO line per burst: ``<what>: N (reason: n, ...)``.

    The first event of a burst arms a timer of ``window_s`` on the node's clock; when it
    fires, the counts are logged and reset. Each single event is the caller's DEBUG line.

    Args:
        clock: the node's clock (the timer).
        logger: where the summary goes.
        what: the line's subject, e.g. ``node a stopped serving partitions``.
        window_s: how long a burst may last before it is summarised.
    """

    __slots__ = ("_clock", "_counts", "_logger", "_timer", "_what", "_window_s")

    def __init__(self, clock: Clock, logger: logging.Logger, what: str, *,
                 window_s: float = 1.0) -> None:
        self._clock = clock
        self._logger = logger
        self._what = what
        self._window_s = window_s
        self._counts: dict[str, int] = {}
        self._timer: TimerHandle | None = None

    def add(self, reason: str) -> None:
        self._counts[reason] = self._counts.get(reason, 0) + 1
        if self._timer is None:
            self._timer = self._clock.call_later(self._window_s, self.flush)

    def flush(self) -> None:
        """Log what was counted (if anything) now, and start a new burst."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._counts:
            return
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(self._counts.items()))
        self._logger.info("%s: %d (%s)", self._what, sum(self._counts.values()), detail)
        self._counts.clear()
