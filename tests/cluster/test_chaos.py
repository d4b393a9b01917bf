"""The Jepsen-style check (``phoenix_cluster.testing.chaos``) in a short, seeded run:
kills, pauses and (where iptables works) an isolated node while clients add to counters;
every acknowledged add must survive, none may run twice."""

from __future__ import annotations

import pytest

from phoenix_cluster.testing.chaos import run_chaos

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [7, 20261128])
async def test_no_acknowledged_write_is_lost_under_the_nemesis(seed: int) -> None:
    report = await run_chaos(seconds=14, seed=seed, nodes=3, keys=16, workers=6,
                             pause_between_s=1.5)
    assert report.ok, (report.faults, report.violations)
    assert report.faults, "the nemesis struck nothing"
    assert report.counts["ok"] > 200, report.counts
