"""The measured agent of ``phx bench local`` and the fresh loop and node each measurement gets.

Every single-node measurement (``bench_local.py``) and every memory measurement
(``bench_local_memory.py``, in a process of its own) drives :class:`BenchCounter` through
:func:`run_on_fresh_node`: a fresh event loop (uvloop when asked for and importable) with a
fresh node built from default settings, so one measurement's garbage and caches do not leak
into the next. The other benchmarks pick their event loop with :func:`loop_factory` too.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.metadata
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from .._agents.agent import Agent
from .._foundation.settings import Settings
from .._node import Node

__all__ = [
    "BenchCounter",
    "LoopName",
    "bench_settings",
    "collected",
    "loop_factory",
    "probe",
    "rss_bytes",
    "run_on_fresh_node",
]

LoopName = Literal["auto", "uvloop", "asyncio"]


class _Probe:
    """Counts handled ``touch`` messages and wakes a waiter at a target count."""

    __slots__ = ("count", "event", "target")

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.event: asyncio.Event | None = None

    def expect(self, target: int) -> asyncio.Event:
        self.target = target
        self.event = asyncio.Event()
        if self.count >= target:
            self.event.set()
        return self.event

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target and self.event is not None:
            self.event.set()


probe = _Probe()


class BenchCounter(Agent, kind="bench.counter"):
    """The measured agent: one small integer of state, at the default mailbox limit
    (a run of casts fills the mailbox and then waits for room, as a user's loop would)."""

    def __init__(self) -> None:
        self.count = 0

    async def inc(self, by: int = 1) -> int:
        self.count += by
        return self.count

    async def touch(self) -> None:
        self.count += 1
        probe.hit()

    async def fail(self) -> None:
        self.count += 1
        raise _BenchFailure("rolled back")


class _BenchFailure(Exception):
    pass


def loop_factory(loop: LoopName) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop to measure with: uvloop when importable (``auto``), else asyncio."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            return f"uvloop {importlib.metadata.version('uvloop')}", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def rss_bytes() -> int | None:
    """This process's resident set size in bytes (psutil, else /proc), or None."""
    try:
        psutil: Any = importlib.import_module("psutil")  # optional; no stubs needed
    except ImportError:
        pass
    else:
        return int(psutil.Process().memory_info().rss)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def bench_settings(**options: Any) -> Settings:
    """Default settings (no ``phoenix.toml``, no ``PHX_*`` variables) plus ``options``."""
    return Settings(name="bench", **options)


def run_on_fresh_node(
    factory: Callable[[], asyncio.AbstractEventLoop],
    measure: Callable[[Node], Awaitable[Any]],
    settings: Settings | None = None,
) -> Any:
    """Run ``measure(node)`` in a fresh loop with a fresh node."""

    async def main() -> Any:
        async with Node(settings=settings or bench_settings()) as node:
            return await measure(node)

    gc.collect()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


@contextmanager
def collected() -> Iterator[None]:
    """Collect before a timed section so it does not pay for the set-up's garbage."""
    # The collector stays on while timing: real programs run with it.
    gc.collect()
    yield
