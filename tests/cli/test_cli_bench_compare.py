"""``phx bench compare`` runs end to end, as a user would run it.

It runs in a subprocess (the real console script code path) that starts the baseline's
echo server and two clusters. No assertion on timing beyond sanity: the figures belong
to ``docs/benchmarks.md``, not to a noisy test machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import phx

pytestmark = pytest.mark.slow

SERIES = {"raw", "quorum, 1 node", "none, 1 node", "quorum, 3 nodes", "none, 3 nodes"}


@pytest.mark.timeout(300)
def test_bench_compare_quick_measures_every_series_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    proc = phx("bench", "compare", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "quorum, 3 nodes" in proc.stdout
    assert "ratios, median of the rounds" in proc.stdout

    results = json.loads(out.read_text())
    assert results["sizes"]["rounds"] == 1
    assert len(results["runs"]) == 1
    # Ray is optional: measured when importable, reported absent otherwise.
    series = set(results["median"])
    assert series in (SERIES, SERIES | {"ray"})
    assert ("ray" in series) == (results["ray"] == "measured")
    for name, figures in results["median"].items():
        assert 0 < figures["p50_us"] <= figures["p95_us"], name
        assert figures["calls_per_s"] > 0, name
        assert figures["calls_per_s_spread"] == 0.0, name  # one round: no spread
    ratios = results["ratios"]
    assert set(ratios) == SERIES - {"raw"}
    assert set(ratios["quorum, 3 nodes"]) >= {"p95_of_raw", "calls_of_raw", "calls_of_none"}
    q3 = results["median"]["quorum, 3 nodes"]
    assert ratios["quorum, 3 nodes"]["calls_of_none"] == pytest.approx(
        q3["calls_per_s"] / results["median"]["none, 3 nodes"]["calls_per_s"])


def test_bench_compare_rejects_zero_rounds() -> None:
    proc = phx("bench", "compare", "--rounds", "0", timeout=60)
    assert proc.returncode == 2
