"""The deterministic whole-system simulator (``phx simulate``,
``phoenix_cluster.testing.simulation``): the CI corpus of seeds, determinism of the
trace, the checks, the fault plan's syntax and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from phoenix_cluster._cli.simulate import simulate as simulate_command
from phoenix_cluster.testing.simulation import DEFAULT_FAULTS, FaultPlan, TraceRecorder, simulate
from phoenix_cluster.testing.simulation import run as run_module
from phoenix_cluster.testing.simulation.ledger import history_violations
from phoenix_cluster.testing.simulation.membership import simulate_membership

CORPUS = range(1, 5)
"""The seeds CI runs at the membership layer (about 0.3 s each at 30 members, on a
quiet machine); ``phx simulate --runs N`` is the soak (docs/simulation.md)."""


@pytest.mark.parametrize("seed", CORPUS)
def test_membership_converges_under_every_fault_for_each_seed_of_the_corpus(
        seed: int) -> None:
    run = simulate_membership(30, seed, FaultPlan.parse(DEFAULT_FAULTS), TraceRecorder())
    assert run.converged, run
    assert run.join_rounds is not None and run.join_rounds <= 10
    assert run.duplicated > 0 and run.lost > 0  # the faults really struck
    # 30 members, 4,096 partitions x 3 replicas: a join moves about 3/31 of them
    assert 200 <= run.partitions_moved_join <= 600


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    plan = FaultPlan.parse(DEFAULT_FAULTS)
    first, again, other = TraceRecorder(), TraceRecorder(), TraceRecorder()
    a = simulate_membership(20, 11, plan, first)
    b = simulate_membership(20, 11, plan, again)
    simulate_membership(20, 12, plan, other)
    assert first.sha256 == again.sha256 and first.events == again.events > 1000
    assert a == b
    assert other.sha256 != first.sha256


def _phx_simulate(*args: str, hash_seed: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phoenix_cluster", "simulate", *args],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONHASHSEED": hash_seed})


def test_the_trace_does_not_depend_on_the_process_hash_seed() -> None:
    """Set and dict orders of strings change with PYTHONHASHSEED: a simulation that
    iterated a set of names would differ from process to process."""
    args = ("--nodes", "25", "--stack-nodes", "0", "--seed", "5", "--json")
    one, two = _phx_simulate(*args, hash_seed="1"), _phx_simulate(*args, hash_seed="2")
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert a["trace_sha256"] == b["trace_sha256"]
    assert a["converged"] is True and a["layers"]["membership"] == 25


def test_whole_node_stacks_lose_no_acknowledged_write_through_a_crash() -> None:
    report = simulate(3, 2, FaultPlan.parse("loss=0.01,dup=0.01,delay=0.5-30,crash"),
                      stack_nodes=3)
    stack = report.stack
    assert stack is not None
    assert report.ok, report.failures
    assert stack.acknowledged > 200
    assert stack.lost_acked_writes == stack.duplicate_writes == 0
    assert stack.duplicate_activations == stack.unreadable_ledgers == 0
    assert stack.settle_rounds is not None
    data = report.as_dict()
    assert data["layers"] == {"membership": 3, "ring": 3, "placement": 3,
                              "replication": 3, "agents": 3}
    assert data["replay"].startswith("phx simulate --nodes 3 --stack-nodes 3 --seed 2 ")


def test_whole_node_stacks_give_the_same_trace_for_the_same_seed() -> None:
    """Every node's membership, ring, placement, replication and agent host in one
    process: the same seed replays byte for byte (frames, datagrams, the workload)."""
    plan = FaultPlan.parse("loss=0.01,dup=0.01,delay=0.5-30")
    first = simulate(3, 4, plan, stack_nodes=3)
    again = simulate(3, 4, plan, stack_nodes=3)
    assert first.stack is not None and first.stack.acknowledged > 100
    assert first.trace_sha256 == again.trace_sha256
    assert first.trace_events == again.trace_events
    assert first.stack == again.stack


def test_history_check_counts_an_older_activation_writing_again() -> None:
    assert history_violations([[1, "a/1"], [2, "a/1"], [3, "b/1"], [4, "b/1"]]) == 0
    assert history_violations([[1, "a/1"], [2, "b/1"], [3, "a/1"], [4, "b/1"]]) == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("none", FaultPlan()),
    ("loss=0.1,dup=0.02", FaultPlan(loss=0.1, duplicate=0.02)),
    ("delay=1-20,partition,crash-disk,overlap",
     FaultPlan(latency_ms=(1.0, 20.0), partition=True, crash_disk=True, overlap=True)),
])
def test_fault_plans_parse_and_print_back(text: str, expected: FaultPlan) -> None:
    plan = FaultPlan.parse(text)
    assert plan == expected
    assert FaultPlan.parse(str(plan)) == plan


@pytest.mark.parametrize(("text", "named"), [
    ("loss=1.5", "loss='1.5'"), ("dup=x", "dup='x'"), ("delay=9-1", "delay='9-1'"),
    ("meteor", "unknown fault 'meteor'"), ("crash=1", "unknown fault 'crash=1'"),
])
def test_a_bad_fault_plan_is_refused_naming_the_part(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        FaultPlan.parse(text)
    result = CliRunner().invoke(simulate_command, ["--faults", text])
    assert result.exit_code == 2
    assert named in result.output


def test_a_failing_run_prints_its_seed_and_the_command_that_replays_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "_failures", lambda report: ["1 acknowledged write lost"])
    result = CliRunner().invoke(simulate_command, ["--nodes", "5", "--stack-nodes", "0",
                                                   "--seed", "77", "--faults", "none"])
    assert result.exit_code == 1
    assert "seed 77 FAILED: 1 acknowledged write lost" in result.output
    assert ("replay: phx simulate --nodes 5 --stack-nodes 0 --seed 77 --faults none"
            in result.output)


def test_json_report_has_the_documented_fields() -> None:
    result = CliRunner().invoke(simulate_command, ["--nodes", "10", "--stack-nodes", "0",
                                                   "--seed", "3", "--runs", "2", "--json"])
    assert result.exit_code == 0, result.output
    reports: list[dict[str, Any]] = [json.loads(line) for line in result.output.splitlines()]
    assert [r["seed"] for r in reports] == [3, 4]
    for r in reports:
        assert r["converged"] is True and r["ok"] is True
        assert r["duplicate_activations"] == r["lost_acked_writes"] == 0
        assert len(r["trace_sha256"]) == 64
        assert r["sim_seconds_per_wall_second"] > 1
        assert 1.0 < r["gossip_messages_per_node_per_round"] < 5.0


def test_help_documents_the_exit_codes() -> None:
    out = CliRunner().invoke(simulate_command, ["--help"]).output
    for line in ("0  every run converged", "1  a run failed a check", "2  bad usage"):
        assert line in out
