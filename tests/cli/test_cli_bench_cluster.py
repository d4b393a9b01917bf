"""``phx bench cluster`` runs end to end, as a user would run it.

It runs in a subprocess (a fresh interpreter, the real console script code path) and
starts its own node processes. No assertion on timing beyond sanity: the figures belong
to ``docs/benchmarks.md``, not to a noisy test machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import numbers as json_numbers
from cli_helpers import phx

pytestmark = pytest.mark.slow


def test_bench_cluster_quick_saves_positive_figures_on_the_loop_it_names(
        tmp_path: Path) -> None:
    # One run on the stdlib loop: --loop reaches the node processes too (a plain
    # ``phx node`` uses uvloop when it can: tests/cli/test_cli_bench_remote.py), and the figures
    # are those of the default run (a second, uvloop run would only double the time).
    out = tmp_path / "results" / "cluster.json"
    proc = phx("bench", "cluster", "--quick", "--loop", "asyncio", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "client → member p95" in proc.stdout
    assert "member → member p95" in proc.stdout

    results = json.loads(out.read_text())
    machine = results["machine"]
    assert machine["cpu_count"] > 0
    assert machine["quick"] is True
    assert machine["loop"] == "asyncio"
    assert machine["node_loop"] == "asyncio"

    for key in ("call_latency", "member_call_latency"):
        lat = results[key]
        assert set(lat) >= {"p50_us", "p95_us", "p99_us", "calls_per_s"}
        assert lat["calls"] == results["sizes"]["latency_calls"]
        assert lat["p50_us"] <= lat["p95_us"] <= lat["p99_us"]
    throughput = results["call_throughput_per_s"]
    assert set(throughput) == {"1_member", "3_members"}
    for per_callers in throughput.values():
        assert set(per_callers) == {"100", "1000"}
    assert set(results["cast_throughput_per_s"]) == {"1_agent", "100_agents"}

    # Every figure is a positive number (the refusal counts are not figures: often 0).
    figures = {k: v for k, v in results.items() if k not in ("machine", "cast_final_call_refusals")}
    numbers = json_numbers(figures)
    assert len(numbers) >= 25
    not_positive = [(path, value) for path, value in numbers if not value > 0]
    assert not not_positive
