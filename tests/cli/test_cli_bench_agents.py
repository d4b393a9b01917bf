"""``phx bench agents`` runs end to end in a subprocess and saves sane figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import phx

pytestmark = pytest.mark.slow


def test_bench_agents_quick_saves_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "agents.json"
    proc = phx("bench", "agents", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "routed call" in proc.stdout
    assert "agents migrated per" in proc.stdout
    results = json.loads(out.read_text())
    routed = results["routed"]
    assert 0 < routed["p50_us"] <= routed["p95_us"] <= routed["p99_us"]
    migration = results["migration"]
    assert migration["migrations"] == 20 + 100
    assert 0 < migration["migrate_p50_ms"] <= migration["migrate_p95_ms"]
    assert migration["migrated_per_s"] > 0
    join = results["join"]
    # The fourth member received a share of the 300 agents: not none, not all.
    assert 0 < join["join_received"] < join["join_agents"] == 300
