"""``phx chaos`` runs the checkers end to end as a user would, and says the seed."""

from __future__ import annotations

import json

import pytest
from cli_helpers import phx

pytestmark = pytest.mark.slow


def test_phx_chaos_short_run_passes_and_prints_its_seed() -> None:
    proc = phx("chaos", "--minutes", "0.1", "--seed", "3", "--keys", "8", "--workers", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "seed 3:" in proc.stdout
    assert "nemesis:" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1] == "result: OK (seed 3)"


def test_phx_chaos_register_workload_reports_every_key_linearizable_in_json() -> None:
    proc = phx("chaos", "--workload", "register", "--minutes", "0.1", "--seed", "3",
               "--faults", "kill", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nemesis: kill" in proc.stderr  # progress goes to stderr with --json
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["violations"] == [] and report["lost"] == 0
    assert report["keys"] and all(k["linearizable"] is True for k in report["keys"].values())
    assert report["counts"]["ok"] > 100
    assert report["indefinite_share"] < 0.5
