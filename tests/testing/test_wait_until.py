"""``wait_until``: checks after every loop turn by default, or at the pace it is given."""

from __future__ import annotations

import pytest

from phoenix_cluster.testing import wait_until


async def test_a_condition_checked_every_interval_is_evaluated_at_that_pace() -> None:
    checks = 0

    def never() -> bool:
        nonlocal checks
        checks += 1
        return False

    with pytest.raises(TimeoutError, match="the flag still false"):
        await wait_until(never, timeout=0.25, what="the flag", every=0.1)
    assert 1 <= checks <= 4  # 0, 0.1, 0.2 (and the one that finds the deadline passed)


async def test_a_condition_that_turns_true_ends_the_wait() -> None:
    turns = 0

    def third_time() -> bool:
        nonlocal turns
        turns += 1
        return turns == 3

    await wait_until(third_time, timeout=5)
    assert turns == 3
