"""Rolling restarts under load on real node processes (issue: acknowledged writes lost
when nodes restart gracefully one after another).

Each node in turn gets SIGTERM, is started again at once under the same name and
address, and the next node is taken the moment the restarted one prints READY: as fast
as readiness allows, which is what an orchestrator's rolling update does. Every
acknowledged write must be present exactly once afterwards. ``phx bench roll`` runs many
rolls (docs/benchmarks.md).
"""

from __future__ import annotations

import pytest

from phoenix_cluster.testing.roll import run_rolls

pytestmark = pytest.mark.slow


# Memory-only on 3 nodes (every partition on every node: each restart forgets all of
# them) and data_dir on 5 (restarted replicas hold old data): the two ways a restarted
# replica can be behind. The 3-node roll is also a rolling upgrade (each node restarts
# with --app-version 2.0, so agents move to the upgraded members as it goes). `phx bench
# roll` runs the other combinations and many rolls.
@pytest.mark.parametrize(("nodes", "durable"), [(3, False), (5, True)],
                         ids=["3-memory-upgrade", "5-data_dir"])
async def test_a_rolling_restart_under_load_loses_no_acknowledged_write(
        nodes: int, durable: bool) -> None:
    upgrade = not durable
    report = await run_rolls(nodes=nodes, rolls=1, keys=30, workers=6, durable=durable,
                             seed=nodes, upgrade=upgrade)
    assert report.violations == []
    assert report.lost == 0
    assert report.app_version == ("2.0" if upgrade else "")
    # The load ran through the roll: writes were acknowledged all along.
    assert report.counts["ok"] > 100 * nodes
