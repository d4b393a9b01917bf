"""Erlang/OTP-style supervision trees for asyncio tasks.

A :class:`Supervisor` owns one task per child plus one monitor task. Children report their
exit through a done-callback into a queue; the monitor is the only code that restarts,
escalates or shuts down, so those decisions never race each other (OTP gets the same from
the supervisor being one process with one mailbox). ``add_child``/``terminate_child`` share
a lock with the monitor for the same reason.

Owns: child tasks, restart intensity, escalation; what it is told and reports (child specs,
statistics, the escalation error) is ``child_spec.py``. Imports only ``errors`` and
``_foundation`` (layer L0).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Literal, Self, get_args

from phoenix_cluster._foundation.env import Clock, SystemClock

from .child_spec import (
    ChildInfo,
    ChildSpec,
    RestartPolicy,
    Strategy,
    SupervisorEscalation,
    SupervisorState,
    SupervisorStatistics,
)

__all__ = [
    "ChildInfo", "ChildSpec", "RestartPolicy", "Strategy", "Supervisor", "SupervisorEscalation",
    "SupervisorState", "SupervisorStatistics",
]

logger = logging.getLogger("phoenix_cluster.supervisor")

_Event = Literal["child_started", "child_restarted", "child_stopped", "child_crashed", "escalated"]


@dataclass(eq=False, slots=True)
class _Child:
    # eq=False: children are compared by identity; two may never share a name anyway.
    spec: ChildSpec
    task: asyncio.Task[None] | None = None  # None while not running or while being stopped
    restarts: int = 0


async def _run_child(run: Callable[[], Awaitable[None]]) -> None:
    # Calling run() inside the task means a run() that raises before returning an
    # awaitable is a crash of the child too, not an error in the supervisor.
    await run()


class Supervisor:
    """Runs child coroutines and restarts them by policy and strategy, as OTP does.

    Strategies: ``one_for_one`` restarts only the child that ended; ``rest_for_one`` also
    stops the children started after it (in reverse) and restarts them in order;
    ``one_for_all`` does the same for every child. Siblings stopped that way are restarted
    unless they are ``temporary``; siblings that had already ended are left alone.

    Args:
        children: started in this order by :meth:`start`, stopped in reverse.
        strategy: which siblings share the fate of a child that is restarted.
        max_restarts: restarts allowed within ``max_seconds``; one more and the supervisor
            stops all children and raises :class:`SupervisorEscalation`. Low values surface
            persistent faults quickly; high ones ride out flaky dependencies.
        max_seconds: the sliding window, measured with ``clock.monotonic()``.
        name: for logs, events and ``repr``.
        clock: time source for the window; a ``ManualClock`` makes it deterministic.
        on_event: called with ``(event, {"supervisor", "child", "reason"})`` for
            ``child_started``, ``child_restarted``, ``child_stopped``, ``child_crashed`` and
            ``escalated``. It runs in the monitor, so keep it fast; errors are logged.
    """

    def __init__(self, children: Sequence[ChildSpec] = (), *, strategy: Strategy = "one_for_one",
                 max_restarts: int = 3, max_seconds: float = 5.0, name: str = "supervisor",
                 clock: Clock | None = None,
                 on_event: Callable[[str, Mapping[str, object]], None] | None = None) -> None:
        if strategy not in get_args(Strategy):
            raise ValueError(f"strategy must be one of {get_args(Strategy)}, got {strategy!r}")
        if max_restarts < 0 or max_seconds <= 0:
            raise ValueError(f"need max_restarts >= 0 and max_seconds > 0, got {max_restarts!r} "
                             f"and {max_seconds!r} for supervisor {name!r}")
        self.name = name
        self.strategy: Strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._on_event = on_event
        self._children: list[_Child] = []
        for spec in children:
            self._check_unique(spec.name)
            self._children.append(_Child(spec))
        self._state: SupervisorState = "idle"
        self._closing = False  # set once shutdown or escalation begins: start nothing new
        self._escalation: SupervisorEscalation | None = None
        self._restart_times: deque[float] = deque()
        self._total_restarts = 0
        self._exits: asyncio.Queue[tuple[_Child, asyncio.Task[None]] | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        # Children that ignored cancellation past their timeout: kept so they are not
        # garbage-collected mid-run ("Task was destroyed but it is pending").
        self._abandoned: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the monitor and every child, in order.

        A supervisor that stopped or gave up may be started again; that is how a parent
        restarts it. Raises ``RuntimeError`` if it is already running.
        """
        if self._state in ("running", "stopping"):
            raise RuntimeError(f"{self!r} is already {self._state}")
        self._state, self._closing, self._escalation = "running", False, None
        self._restart_times.clear()
        self._exits = asyncio.Queue()  # drop stale exits and close markers of a past run
        self._done.clear()
        self._monitor = asyncio.create_task(self._supervise(), name=f"{self.name}/monitor")
        for child in self._children:
            self._start_child(child, "child_started", "start")

    async def add_child(self, spec: ChildSpec) -> None:
        """Append a child to the start order and start it if the supervisor is running."""
        async with self._lock:
            if self._closing or self._state in ("stopped", "failed"):
                raise RuntimeError(f"cannot add child {spec.name!r}: {self!r} is {self._state}")
            self._check_unique(spec.name)
            child = _Child(spec)
            self._children.append(child)
            if self._state == "running":
                self._start_child(child, "child_started", "add_child")

    async def terminate_child(self, name: str) -> None:
        """Stop the named child (no restart) and forget it. Raises ``KeyError`` if unknown."""
        async with self._lock:
            child = next((c for c in self._children if c.spec.name == name), None)
            if child is None:
                raise KeyError(f"supervisor {self.name!r} has no child {name!r}")
            # Remove first, so a child terminating itself is gone before its cancel lands.
            self._children.remove(child)
            await self._stop_child(child, "terminate_child")

    async def wait(self) -> None:
        """Return once stopped; raise :class:`SupervisorEscalation` if it gave up."""
        await self._done.wait()
        if self._escalation is not None:
            raise self._escalation

    async def aclose(self) -> None:
        """Stop every child in reverse start order; idempotent, never raises escalation.

        Safe during a restart storm: the monitor finishes at most the stop in progress,
        starts nothing more, then stops the rest. Cancelling the caller does not cancel
        the shutdown.
        """
        if self._monitor is None or self._monitor.done():
            if self._state == "idle":
                self._state = "stopped"
                self._done.set()
            return
        if not self._closing:
            self._closing, self._state = True, "stopping"
            self._exits.put_nowait(None)  # wake the monitor if it is idle
        await asyncio.wait({self._monitor})

    async def run(self) -> None:
        """Start, then wait; stop the children however this ends.

        This lets a supervisor be the child of another: ``ChildSpec("sub", sub.run)``.
        Escalation propagates as a crash, and a parent's cancel becomes an ``aclose``.
        """
        await self.start()
        try:
            await self.wait()
        finally:
            await self.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def which_children(self) -> list[ChildInfo]:
        """Every known child, in start order (OTP ``which_children``)."""
        return [ChildInfo(c.spec.name, c.spec.restart, c.task is not None and not c.task.done(),
                          c.restarts) for c in self._children]

    def statistics(self) -> SupervisorStatistics:
        """A frozen snapshot of counts and state."""
        return SupervisorStatistics(self.name, self.strategy, len(self._children),
                                    self._total_restarts, self._state)

    def __repr__(self) -> str:
        return (f"<Supervisor {self.name} {self.strategy} "
                f"[{len(self._children)} children, {self._total_restarts} restarts]>")

    async def _supervise(self) -> None:
        try:
            while not self._closing:
                item = await self._exits.get()
                if item is None:
                    break
                child, task = item
                async with self._lock:
                    # A task that is no longer the child's current one was already dealt
                    # with (stopped and restarted by a one_for_all, say): ignore its exit.
                    if child.task is task:
                        child.task = None
                        await self._handle_exit(child, task)
        except Exception as exc:  # a bug here must not leave children unsupervised
            logger.exception("supervisor %r: monitor failed", self.name)
            self._escalation = SupervisorEscalation(
                f"supervisor {self.name!r} failed internally: {exc!r}",
                supervisor=self.name, reason=f"internal error: {exc!r}")
        finally:
            self._closing, self._state = True, "stopping"
            why = "escalation" if self._escalation is not None else "shutdown"
            async with self._lock:
                for child in reversed(self._children):
                    await self._stop_child(child, why)
            self._state = "failed" if self._escalation is not None else "stopped"
            self._done.set()

    async def _handle_exit(self, child: _Child, task: asyncio.Task[None]) -> None:
        name = child.spec.name
        # A cancel we did not ask for (the child cancelled itself, or a stranger did) is
        # a crash: the child did not finish its job.
        exc = asyncio.CancelledError() if task.cancelled() else task.exception()
        if exc is None:
            what = "exited normally"
            self._emit("child_stopped", name, what)
        else:
            what = f"crashed: {exc!r}"
            logger.error("supervisor %r: child %r crashed: %r", self.name, name, exc)
            logger.debug("supervisor %r: child %r traceback", self.name, name, exc_info=exc)
            self._emit("child_crashed", name, repr(exc))
        policy = child.spec.restart
        if policy == "temporary" or (policy == "transient" and exc is None):
            if policy == "temporary":
                self._children.remove(child)
            return
        if self._closing:
            return
        now = self._clock.monotonic()
        self._restart_times.append(now)
        while self._restart_times[0] <= now - self.max_seconds:
            self._restart_times.popleft()
        if len(self._restart_times) > self.max_restarts:
            self._escalate(name, what, now, exc)
            return
        self._total_restarts += 1
        await self._restart(child, f"{name} {what}")

    def _escalate(self, name: str, what: str, now: float, exc: BaseException | None) -> None:
        count, window = len(self._restart_times), now - self._restart_times[0]
        reason = (f"child {name!r} {what}; {count} restarts in {window:.3g}s exceeds "
                  f"max_restarts={self.max_restarts} within max_seconds={self.max_seconds}")
        logger.error("supervisor %r: giving up: %s", self.name, reason)
        self._emit("escalated", name, reason)
        escalation = SupervisorEscalation(f"supervisor {self.name!r} gave up: {reason}",
                                          supervisor=self.name, child=name, reason=reason)
        escalation.__cause__ = None if isinstance(exc, asyncio.CancelledError) else exc
        self._escalation, self._closing = escalation, True

    async def _restart(self, failed: _Child, reason: str) -> None:
        if self.strategy == "one_for_one":
            group = [failed]
        elif self.strategy == "rest_for_one":
            group = self._children[self._children.index(failed):]
        else:
            group = list(self._children)
        # Siblings that had already ended (a transient that finished) stay ended.
        restart = [c for c in group if c is failed or c.task is not None]
        for sibling in reversed(group):
            if sibling is not failed:
                await self._stop_child(sibling, f"restarting: {reason}")
        for child in restart:
            if self._closing:  # aclose() arrived mid-restart: start nothing more
                return
            if child is not failed and child.spec.restart == "temporary":
                self._children.remove(child)
                continue
            child.restarts += 1
            self._start_child(child, "child_restarted", reason)

    def _start_child(self, child: _Child, event: _Event, reason: str) -> None:
        task = asyncio.create_task(_run_child(child.spec.run),
                                   name=f"{self.name}/{child.spec.name}")
        child.task = task
        task.add_done_callback(partial(self._on_child_done, child))
        self._emit(event, child.spec.name, reason)

    def _on_child_done(self, child: _Child, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            task.exception()  # mark it retrieved: the monitor reports it, asyncio need not
        if child.task is task:  # not a stop we asked for
            self._exits.put_nowait((child, task))

    async def _stop_child(self, child: _Child, reason: str) -> None:
        task = child.task
        if task is None:
            return
        child.task = None  # from here on its exit is ours, not a crash
        task.cancel()
        try:
            async with asyncio.timeout(child.spec.shutdown_timeout_s):
                await asyncio.wait({task})  # does not raise the child's exception
        except TimeoutError:
            logger.warning("supervisor %r: child %r did not stop within %ss; abandoning it",
                           self.name, child.spec.name, child.spec.shutdown_timeout_s)
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
        self._emit("child_stopped", child.spec.name, reason)

    def _emit(self, event: _Event, child: str, reason: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event, {"supervisor": self.name, "child": child, "reason": reason})
        except Exception:  # a broken observer must not break supervision
            logger.exception("supervisor %r: on_event(%r) raised", self.name, event)

    def _check_unique(self, name: str) -> None:
        if any(c.spec.name == name for c in self._children):
            raise ValueError(f"supervisor {self.name!r} already has a child named {name!r}")
