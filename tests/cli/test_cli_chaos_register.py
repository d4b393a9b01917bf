"""``phx chaos --workload register``: the report in text and JSON, and the exit codes
(0 all linearizable, 1 a violation, 3 undecided, 2 bad usage)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from phoenix_cluster._cli.chaos import chaos
from phoenix_cluster.testing import register
from phoenix_cluster.testing.linearizability import KeyResult, Op
from phoenix_cluster.testing.register import RegisterReport


def canned(linearizable: bool | None, lost: int = 0) -> RegisterReport:
    results = {
        "reg-0-0": KeyResult("reg-0-0", True, {"ok": 90, "fail": 2, "info": 8}, 120),
        "reg-1-0": KeyResult("reg-1-0", linearizable, {"ok": 50, "fail": 0, "info": 0}, 9,
                             "" if linearizable else "no linearization: the longest "
                             "placed 7 of 50 acknowledged operations, then could not "
                             "place read -> 3 (ok, client 4, 1.000-1.002)"),
    }
    return RegisterReport(seed=1, nodes=3, seconds=6.0, results=results,
                          counts={"ok": 140, "fail": 2, "info": 8},
                          faults=["kill node-1 1.0s"],
                          lost={"reg-1-0": lost} if lost else {},
                          history=[Op("reg-0-0", "write", 0.0, 0.1, "ok", value=1)])


Install = Callable[[RegisterReport], None]


@pytest.fixture
def report_is(monkeypatch: pytest.MonkeyPatch) -> Install:
    def install(report: RegisterReport) -> None:
        async def run(**_: object) -> RegisterReport:
            return report
        monkeypatch.setattr(register, "run_register", run)
    return install


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(chaos, ["--workload", "register", "--seed", "1", *args])
    return result.exit_code, result.output


def test_all_linearizable_exits_0_with_a_line_per_key(report_is: Install) -> None:
    report_is(canned(True))
    code, out = invoke()
    assert code == 0, out
    assert "key reg-0-0: linearizable (90 ok, 2 fail, 8 info)" in out
    assert "8 indefinite (5.33%)" in out
    assert "acknowledged writes lost: 0" in out
    assert out.rstrip().endswith("result: OK, every key linearizable (seed 1)")


def test_a_key_that_is_not_linearizable_exits_1_and_says_why(report_is: Install) -> None:
    report_is(canned(False, lost=2))
    code, out = invoke()
    assert code == 1, out
    assert "key reg-1-0: NOT linearizable" in out
    assert "VIOLATION: reg-1-0: not linearizable: no linearization" in out
    assert "VIOLATION: reg-1-0: 2 acknowledged writes lost" in out


def test_an_undecided_key_exits_3(report_is: Install) -> None:
    report_is(canned(None))
    code, out = invoke()
    assert code == 3, out
    assert "UNDECIDED: reg-1-0" in out


def test_json_report(report_is: Install) -> None:
    report_is(canned(False))
    code, out = invoke("--json")
    assert code == 1
    data = json.loads(out.strip().splitlines()[-1])
    assert data["workload"] == "register" and data["ok"] is False
    assert data["keys"]["reg-1-0"]["linearizable"] is False
    assert data["keys"]["reg-0-0"]["counts"] == {"ok": 90, "fail": 2, "info": 8}
    assert data["indefinite_share"] == pytest.approx(8 / 150, abs=1e-4)
    assert data["counts"] == {"ok": 140, "fail": 2, "info": 8}


def test_unknown_faults_are_bad_usage() -> None:
    code, out = invoke("--faults", "kill,flood")
    assert code == 2
    assert "choose from kill,pause,restart,roll,isolate" in out


def test_help_documents_the_exit_codes() -> None:
    out = CliRunner().invoke(chaos, ["--help"]).output
    assert "Exit codes:" in out and "3  register: no violation found" in out
