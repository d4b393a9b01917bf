"""The running event loop, without a system call per look-up.

On CPython 3.11 ``asyncio.get_running_loop()`` (and so ``asyncio.current_task()``, and
``create_task``/``call_later`` reached through it) makes a ``getpid()`` system call each
time: it checks that the loop was not inherited through ``fork``. glibc no longer caches
the pid, and in a sandboxed container a system call costs microseconds, so the registry's
hot path spent about a tenth of a node's CPU on it (``docs/design/performance.md``).
:func:`running_loop` remembers, per thread, the loop it last found and returns it while
it is running; the fork check is kept by forgetting it in a forked child.
"""

from __future__ import annotations

import asyncio
import os
import threading

__all__ = ["running_loop"]


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
