"""``phx bench roll``'s report and JSON, from a RollReport (the rolls themselves run in
tests/cluster/test_rolling_restart.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from phoenix_cluster._cli import bench_roll
from phoenix_cluster._cli.bench import bench
from phoenix_cluster.testing.roll import RollReport


def report(violations: list[str]) -> RollReport:
    return RollReport(nodes=3, rolls=2, durable=True,
                      counts={"ok": 1234, "unknown": 5, "failed": 7}, lost=len(violations),
                      violations=violations, roll_seconds=[10.0, 12.0],
                      failed_during_rolls=12, errors={"CallTimeout": 5, "NotLeader": 7})


def test_the_report_names_every_figure(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    results = bench_roll._results(report([]), seed=4)
    bench_roll.print_report(results)
    out = capsys.readouterr().out
    assert "3 nodes (data_dir), 2 rolls" in out and "seed 4" in out
    assert "median 11.0 s (min 10.0, max 12.0)" in out
    assert "acknowledged       1,234" in out
    assert "lost               0" in out
    assert "failed during roll 12 (5 CallTimeout, 7 NotLeader)" in out
    assert out.rstrip().endswith("result: OK")
    bench_roll.save_json(results, tmp_path / "roll.json")
    saved = json.loads((tmp_path / "roll.json").read_text())
    assert saved["lost"] == 0 and saved["acknowledged"] == 1234


def test_a_loss_fails_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    lost = bench_roll._results(report(["roll-1: 1 acknowledged adds lost, e.g. ['w0-1']"]),
                               seed=0)
    monkeypatch.setattr(bench_roll, "run_roll_bench", lambda **_: lost)
    result = CliRunner().invoke(bench, ["roll", "--rolls", "1"])
    assert result.exit_code == 1
    assert "VIOLATION: roll-1: 1 acknowledged adds lost" in result.output
    assert "result: FAILED" in result.output
