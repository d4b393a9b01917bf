"""The Jepsen-style check (``phoenix_cluster.testing.chaos``) in a short, seeded run:
kills, pauses, graceful restarts, whole-cluster rolls and an isolated node while clients
add to counters; every acknowledged add must survive, none may run twice. Isolation needs
root and iptables: without them the test skips (a failure under CI, see
tests/testing/ci_gate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phoenix_cluster.testing import LocalCluster
from phoenix_cluster.testing.chaos import run_chaos

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("seed", "durable"), [(7, False), (20261128, True)])
async def test_no_acknowledged_write_is_lost_under_the_nemesis(
    seed: int, durable: bool, tmp_path: Path,
) -> None:
    reason = LocalCluster.network_faults_unavailable()
    if reason is not None:
        pytest.skip(reason)
    report = await run_chaos(seconds=14, seed=seed, nodes=3, keys=16, workers=6,
                             pause_between_s=1.5,
                             data_dir=str(tmp_path) if durable else None)
    assert report.ok, (report.faults, report.violations)
    assert report.faults, "the nemesis struck nothing"
    assert report.counts["ok"] > 200, report.counts
