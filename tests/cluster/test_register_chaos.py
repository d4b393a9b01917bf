"""The register workload (``phoenix_cluster.testing.register``) on a real 3-node cluster
under SIGSTOP and kill -9: 15 clients read, write and compare-and-set four registers at a
time; every key's history must be linearizable and no acknowledged write lost. The same
recorded history with one read made stale must be reported."""

from __future__ import annotations

import dataclasses

import pytest

from phoenix_cluster.testing.linearizability import Op, check_history
from phoenix_cluster.testing.register import FINAL_READER, lost_writes, run_register

pytestmark = pytest.mark.slow

SEED = 2026120737
"""Its nemesis pauses a node for 3.0 s (past failure detection), then kills another."""


def make_stale(history: list[Op]) -> tuple[str, list[Op]]:
    """``history`` with one acknowledged read changed to return the value of a write
    that an acknowledged write had replaced before the read began."""
    writes = [op for op in history if op.kind == "write" and op.outcome == "ok"]
    for read_at, read in enumerate(history):
        if read.kind != "read" or read.outcome != "ok":
            continue
        done = [w for w in writes if w.key == read.key and w.complete is not None
                and w.complete < read.invoke]
        for old in done:
            if any(w.invoke > (old.complete or 0) for w in done):
                broken = list(history)
                broken[read_at] = dataclasses.replace(read, output=old.value)
                return read.key, broken
    raise AssertionError("no read followed two writes")


async def test_every_register_stays_linearizable_under_pauses_and_kills() -> None:
    report = await run_register(seconds=11, seed=SEED, nodes=3, keys=4, clients=15,
                                ops_per_key=1_000, faults=("kill", "pause"),
                                pause_between_s=1.0)
    assert {fault.split()[0] for fault in report.faults} == {"pause", "kill"}, report.faults
    assert report.counts["ok"] > 1_000, report.counts
    assert report.violations == [], report.violations
    assert report.undecided == []
    assert all(r.linearizable is True for r in report.results.values())
    assert report.lost == {} and lost_writes(report.history) == {}
    # Every key was read after the heal: a lost write would have shown there.
    finals = {op.key for op in report.history
              if op.client == FINAL_READER and op.outcome == "ok"}
    assert finals == set(report.results)

    key, broken = make_stale(report.history)
    verdict = check_history(broken)[key]
    assert verdict.linearizable is False
    assert "could not place read" in verdict.explanation
