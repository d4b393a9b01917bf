"""An in-process network for replicators: tests, simulation and the micro-benchmark.

:class:`MemoryNetwork` hands each node an ``rpc`` that calls another node's
``Replicator.handle`` directly, with the faults a real network and real machines have:

- **latency** per direction (``latency_s``, on the node's clock);
- **loss**: a request or a reply is lost with probability ``loss`` (the caller times out);
- **cuts** between groups of nodes (:meth:`cut`, :meth:`isolate`, :meth:`heal`): both
  directions fail as timeouts, as a partitioned TCP link does; a one-way cut
  (``both=False``) loses only what goes from the first side to the second, so a
  request can arrive while its reply is lost;
- **kills** (:meth:`detach`): calls to a dead node fail at once, like a refused
  connection; its handler never runs again;
- **pauses** (:meth:`pause`, :meth:`resume`): a paused node handles nothing and sends
  nothing until resumed; what was sent to it waits and is delivered late, after its
  callers gave up - the GC-pause case.

A delivery runs in its own task, so a handler may still run after its caller timed out
(a late message), as on a real network. Randomness comes from ``seed``; time from the
given clock, so a run under ``ManualClock(autojump=True)`` is deterministic.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from functools import partial

from .._foundation.env import Clock
from .._transport.tasks import Callback, TaskSet
from ..errors import CallTimeout, NodeUnavailable
from .sending import Answered, Start

__all__ = ["Handler", "MemoryNetwork"]

Handler = Callable[[str, bytes], Awaitable[bytes]]
Rpc = Callable[[str, str, bytes, float], Awaitable[bytes]]
_Result = asyncio.Future[bytes] | Callback[bytes]


class MemoryNetwork:
    """Nodes by name, each with a handler; faults injected by the test.

    Args:
        clock: the clock latencies and timeouts run on.
        seed: seeds loss decisions.
        latency_s: one-way delay of every message.
        loss: probability that one request or one reply is lost.
    """

    def __init__(self, clock: Clock, *, seed: int = 0, latency_s: float = 0.0,
                 loss: float = 0.0) -> None:
        self.clock = clock
        self.latency_s = latency_s
        self.loss = loss
        self._random = random.Random(seed)
        self._handlers: dict[str, Handler] = {}
        self._cuts: set[tuple[str, str]] = set()  # (from, to)
        self._paused: dict[str, asyncio.Event] = {}
        self._tasks = TaskSet("memory network")
        self.calls = 0
        self.delivered = 0

    # ----------------------------------------------------------------- nodes

    def attach(self, name: str, handler: Handler) -> None:
        """Start serving ``name`` with ``handler`` (a new or restarted node)."""
        self._handlers[name] = handler

    def detach(self, name: str) -> None:
        """Kill ``name``: it handles nothing more; calls to it fail at once."""
        self._handlers.pop(name, None)
        self.resume(name)

    def rpc_for(self, name: str) -> Rpc:
        """The ``rpc`` function for a replicator running as ``name``."""

        async def rpc(peer: str, method: str, payload: bytes, timeout_s: float) -> bytes:
            return await self.call(name, peer, method, payload, timeout_s)

        return rpc

    def start_for(self, name: str) -> Start:
        """The ``start`` function for a replicator running as ``name``: a call to a live
        peer leaves now and its answer reaches ``answered`` from the delivery itself (as
        a connection's reader calls it); a paused sender or a dead peer is left to
        ``rpc`` (``False``)."""

        def start(peer: str, method: str, payload: bytes, timeout_s: float,
                  answered: Answered) -> bool:
            if name in self._paused or peer not in self._handlers:
                return False
            self.calls += 1
            result: Callback[bytes] = Callback(answered)
            result.timer = self.clock.call_later(
                timeout_s, partial(_expire, result, name, peer, timeout_s))
            self._tasks.spawn(self._deliver(name, peer, method, payload, result),
                              name=f"deliver-{name}-{peer}")
            return True

        return start

    # ----------------------------------------------------------------- faults

    def cut(self, side_a: Iterable[str], side_b: Iterable[str], *, both: bool = True) -> None:
        """Cut every link from ``side_a`` to ``side_b`` (and back, with ``both``)."""
        b = list(side_b)
        for x in side_a:
            for y in b:
                if x != y:
                    self._cuts.add((x, y))
                    if both:
                        self._cuts.add((y, x))

    def isolate(self, name: str, others: Iterable[str]) -> None:
        """Cut ``name`` off from ``others``."""
        self.cut([name], others)

    def heal(self) -> None:
        """Restore every cut link."""
        self._cuts.clear()

    def pause(self, name: str) -> None:
        """Freeze ``name``: it neither handles nor sends until :meth:`resume`."""
        self._paused.setdefault(name, asyncio.Event())

    def resume(self, name: str) -> None:
        event = self._paused.pop(name, None)
        if event is not None:
            event.set()

    def reachable(self, a: str, b: str) -> bool:
        """Whether a message from ``a`` gets to ``b``."""
        return (a, b) not in self._cuts

    # ----------------------------------------------------------------- calls

    async def call(self, src: str, dst: str, method: str, payload: bytes,
                   timeout_s: float) -> bytes:
        """Deliver one request from ``src`` to ``dst`` and return the reply.

        Raises:
            NodeUnavailable: ``dst`` is dead (definite: nothing was delivered).
            CallTimeout: the link is cut, the request or the reply was lost, or ``dst``
                did not answer within ``timeout_s``.
        """
        self.calls += 1
        await self._wait_unpaused(src)
        if dst not in self._handlers:
            raise NodeUnavailable(f"{dst} is down", definite=True)
        result: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._tasks.spawn(self._deliver(src, dst, method, payload, result),
                          name=f"deliver-{src}-{dst}")
        timer = self.clock.call_later(timeout_s, lambda: _expire(result, src, dst, timeout_s))
        try:
            return await result
        finally:
            timer.cancel()

    async def _deliver(self, src: str, dst: str, method: str, payload: bytes,
                       result: _Result) -> None:
        if not self.reachable(src, dst) or self._lost():
            return  # the caller times out
        if self.latency_s:
            await self.clock.sleep(self.latency_s)
        await self._wait_unpaused(dst)
        handler = self._handlers.get(dst)
        if handler is None:
            return
        try:
            reply = await handler(method, payload)
        except Exception as exc:
            if not result.done():
                result.set_exception(exc)
            return
        self.delivered += 1
        if self.latency_s:
            await self.clock.sleep(self.latency_s)
        if self.reachable(dst, src) and not self._lost() and not result.done():
            result.set_result(reply)

    async def _wait_unpaused(self, name: str) -> None:
        event = self._paused.get(name)
        if event is not None:
            await event.wait()

    def _lost(self) -> bool:
        return self.loss > 0 and self._random.random() < self.loss

    async def aclose(self) -> None:
        """Drop every message still in flight."""
        for event in self._paused.values():
            event.set()
        self._paused.clear()
        await self._tasks.aclose()

    def __repr__(self) -> str:
        return (f"<MemoryNetwork [{len(self._handlers)} nodes, {len(self._cuts)} cut links, "
                f"{len(self._paused)} paused, {self.calls} calls]>")


def _expire(result: _Result, src: str, dst: str, timeout_s: float) -> None:
    if not result.done():
        result.set_exception(CallTimeout(f"{src} -> {dst}: no answer within {timeout_s}s"))
