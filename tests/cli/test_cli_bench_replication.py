"""``phx bench replication`` runs end to end in a subprocess and saves sane figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import phx

pytestmark = pytest.mark.slow


def test_bench_replication_quick_saves_positive_figures_and_loses_no_write(
    tmp_path: Path,
) -> None:
    out = tmp_path / "replication.json"
    proc = phx("bench", "replication", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "quorum update" in proc.stdout
    assert "writes lost" in proc.stdout
    results = json.loads(out.read_text())
    for durability in ("quorum", "async", "none"):
        latency = results["latency"][durability]
        assert latency["calls"] == 500
        assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    for durability in ("quorum", "async"):
        throughput = results["throughput"][durability]
        assert throughput["updates"] == 2000
        assert throughput["updates_per_s_per_node"] > 0
    migration = results["migration"]
    assert [m["state_bytes"] for m in migration] == [0, 1024, 64 * 1024, 1024 * 1024]
    for m in migration:
        # The handoff carries the whole state plus a small envelope.
        assert m["state_bytes"] < m["handoff_bytes"] < m["state_bytes"] + 200
        assert 0 < m["migrate_p50_ms"] <= m["migrate_p95_ms"]
    failover = results["failover"]
    # Some of the 90 agents lived on the killed member; all answered again, nothing lost.
    assert 1 < failover["victim_agents"] < 90
    assert failover["detected_s"] > 0
    assert 0 < failover["failover_s"] <= failover["recovery_s"]
    assert failover["committed_checked"] > 3 * (failover["victim_agents"] - 1)
    assert failover["lost_writes"] == 0
    assert failover["extra_writes"] == 0
