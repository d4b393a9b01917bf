"""``phx bench startup`` runs end to end in a subprocess and saves its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import phx

from phoenix_cluster._cli.bench_startup import GOAL_FIRST_CALL_S

pytestmark = pytest.mark.slow


def test_bench_startup_quick_measures_ready_to_first_call(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    proc = phx("bench", "startup", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "READY → first served call" in proc.stdout
    s = json.loads(out.read_text())["startup"]
    assert s["trials"] == 3
    assert 0 < s["ready_to_first_call_median_ms"] <= s["ready_to_first_call_max_ms"]
    assert s["ready_to_first_call_max_ms"] < GOAL_FIRST_CALL_S * 1000
    assert 0 < s["spawn_to_ready_median_s"] <= s["spawn_to_ready_max_s"]
