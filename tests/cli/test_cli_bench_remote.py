"""``phx bench remote`` runs end to end, as a user would run it.

It runs in a subprocess (a fresh interpreter, the real console script code path) and
starts its own node processes and the baseline's echo server. No assertion on timing
beyond sanity: the figures belong to ``docs/benchmarks.md``, not to a noisy test machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import numbers as json_numbers
from cli_helpers import phx

pytestmark = pytest.mark.slow

TRANSPORTS = {"tcp", "http2", "quic"}
IN_FLIGHT = {"1", "16", "256"}


def _assert_latency(lat: dict[str, float], calls: int) -> None:
    assert set(lat) >= {"p50_us", "p95_us", "p99_us", "calls_per_s"}
    assert lat["calls"] == calls
    assert 0 < lat["p50_us"] <= lat["p95_us"] <= lat["p99_us"]


@pytest.mark.timeout(300)
def test_bench_remote_quick_all_transports_saves_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "results" / "remote.json"
    proc = phx("bench", "remote", "--quick", "--transport", "all", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    for transport in TRANSPORTS:
        assert f"{transport} call p95" in proc.stdout
        assert f"{transport} 256 in flight" in proc.stdout
        assert f"{transport} casts" in proc.stdout
    assert "raw" in proc.stdout

    results = json.loads(out.read_text())
    machine = results["machine"]
    assert machine["cpu_count"] > 0
    assert machine["quick"] is True
    assert machine["node_loop"] == machine["loop"]
    sizes = results["sizes"]

    baseline = results["baseline"]
    _assert_latency(baseline["call_latency"], sizes["latency_calls"])
    assert set(baseline["calls_per_s"]) == IN_FLIGHT

    assert set(results["transports"]) == TRANSPORTS
    for figures in results["transports"].values():
        _assert_latency(figures["call_latency"], sizes["latency_calls"])
        assert set(figures["calls_per_s"]) == IN_FLIGHT
        assert figures["casts_per_s"] > 0
    assert set(results["of_baseline"]) == TRANSPORTS
    for share in results["of_baseline"].values():
        assert set(share) == {"p50_latency", "p95_latency", "p99_latency",
                              *(f"calls_per_s_{n}" for n in IN_FLIGHT)}

    # Every figure of every row is a positive number (the refusal counts are not figures).
    figures = {k: v for k, v in results.items() if k != "machine"}
    numbers = [(p, v) for p, v in json_numbers(figures) if "cast_final_call_refusals" not in p]
    assert len(numbers) >= 3 * (7 + 3 + 1 + 6) + 7 + 3
    not_positive = [(path, value) for path, value in numbers if not value > 0]
    assert not not_positive


def test_bench_remote_one_transport(tmp_path: Path) -> None:
    out = tmp_path / "tcp.json"
    proc = phx("bench", "remote", "--quick", "--transport", "tcp", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert set(results["transports"]) == {"tcp"}
    assert "http2" not in proc.stdout


def test_bench_remote_rejects_an_unknown_transport() -> None:
    proc = phx("bench", "remote", "--transport", "carrier-pigeon", timeout=60)
    assert proc.returncode == 2
    assert "carrier-pigeon" in proc.stderr
