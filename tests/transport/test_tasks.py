"""Clock-driven timeouts, owned task sets and the warning rate limiter."""

from __future__ import annotations

import asyncio
import logging

import pytest

from phoenix_cluster._foundation.env import ManualClock, SystemClock
from phoenix_cluster._transport.tasks import LogLimiter, TaskSet, fail_after
from phoenix_cluster.testing import wait_until


async def test_fail_after_follows_the_injected_clock() -> None:
    clock = ManualClock()
    never = asyncio.Event()

    async def guarded() -> None:
        async with fail_after(clock, 10.0):
            await never.wait()

    task = asyncio.ensure_future(guarded())
    await asyncio.sleep(0)
    clock.advance(9.9)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(0.1)
    with pytest.raises(TimeoutError, match=r"10\.0s"):
        await task


async def test_fail_after_passes_results_and_outer_cancellation_through() -> None:
    clock = SystemClock()
    async with fail_after(clock, 5.0):
        await asyncio.sleep(0)
    started = asyncio.Event()

    async def guarded() -> None:
        async with fail_after(clock, 5.0):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(guarded())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # a cancel from outside stays a cancel, not a TimeoutError


async def test_task_set_logs_crashes_and_closes_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = TaskSet("test")

    async def crash() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="phoenix_cluster.transport"):
        tasks.spawn(crash(), name="crasher")
        forever = tasks.spawn(asyncio.Event().wait(), name="forever")
        await wait_until(lambda: len(tasks) == 1)
    assert "crasher crashed" in caplog.text and "boom" in caplog.text
    assert "1 tasks" in repr(tasks)
    await tasks.aclose()
    assert forever.cancelled() and len(tasks) == 0


def test_log_limiter_allows_a_burst_then_summarises(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    limiter = LogLimiter(clock, burst=3, window_s=10.0)
    log = logging.getLogger("phoenix_cluster.transport.test")
    with caplog.at_level(logging.WARNING, logger=log.name):
        for i in range(8):
            limiter.warning(log, "protocol", "bad frame %d", i)
        limiter.warning(log, "auth", "refused %d", 0)  # categories are separate
        assert [r.getMessage() for r in caplog.records] == [
            "bad frame 0", "bad frame 1", "bad frame 2", "refused 0",
        ]
        clock.advance(10.0)
        limiter.warning(log, "protocol", "bad frame %d", 8)
    assert caplog.records[-2].getMessage().startswith("5 more protocol warnings suppressed")
    assert caplog.records[-1].getMessage() == "bad frame 8"
