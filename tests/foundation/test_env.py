"""The injectable clock: ManualClock moves only when told, or jumps when idle."""

from __future__ import annotations

import asyncio

import pytest

from phoenix_cluster.testing import ManualClock


async def test_advance_wakes_due_sleepers_in_deadline_order() -> None:
    clock = ManualClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("late", 2), ("early", 1))]
    await asyncio.sleep(0)
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(1.0)
    await asyncio.sleep(0)
    assert woke == ["early"]
    clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert woke == ["early", "late"]
    assert clock.monotonic() == pytest.approx(2.5)


async def test_call_later_can_be_cancelled() -> None:
    clock = ManualClock()
    fired: list[int] = []
    handle = clock.call_later(1, lambda: fired.append(1))
    clock.call_later(2, lambda: fired.append(2))
    handle.cancel()
    clock.advance(5)
    assert fired == [2]
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


async def test_autojump_skips_idle_time() -> None:
    clock = ManualClock(autojump=True)
    await asyncio.wait_for(clock.sleep(3600), timeout=2)  # an hour, instantly
    assert clock.monotonic() == pytest.approx(3600)
    assert clock.wall() > 1_000_000_000
