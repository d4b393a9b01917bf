"""``phx bench registry`` runs end to end, as a user would run it (figures belong to
``docs/benchmarks.md``, not to a noisy test machine: only sanity is checked here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import numbers, phx

pytestmark = pytest.mark.slow


def test_bench_registry_quick_saves_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "registry.json"
    proc = phx("bench", "registry", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    for label in ("registration p95", "cached lookups (1 name)", "fan-out, all subscribers",
                  "memory per 100k names (store)", "baseline: unreplicated agent calls",
                  "uncached lookups / agent calls"):
        assert label in proc.stdout
    results = json.loads(out.read_text())
    assert results["machine"]["quick"] is True
    names, pubsub = results["names"], results["pubsub"]
    assert names["uncached_lookups_per_agent_call"] == pytest.approx(
        names["uncached_lookups_per_s"] / names["baseline_agent_calls_per_s"])
    lat = names["register_latency"]
    assert lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
    assert sum(pubsub["subscribers_per_member"].values()) == results["sizes"]["subscribers"]
    assert len(pubsub["subscribers_per_member"]) == 3
    assert results["memory"]["names"] == results["sizes"]["memory_names"]
    figures = numbers({k: v for k, v in results.items() if k != "machine"})
    assert len(figures) >= 30
    assert [(path, value) for path, value in figures if not value > 0] == []
