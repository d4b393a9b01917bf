"""``phx demo``: the three-node story end to end, as a user runs it (``make demo``).

A real subprocess starts three real node processes, kills one, restarts it and verifies
the acknowledged writes. The full default demo runs, because its length is part of what
it promises: the README says how long it takes, and past ``DEMO_BUDGET_S`` this fails.
Latency and throughput figures are not asserted (a noisy test machine); the story, the
verification and the count of calls that failed or were retried during the kill are.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import phx

DEMO_BUDGET_S = 45.0
"""The longest ``phx demo`` may take on 2 cores of its own (the README states ~30 s)."""


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (0 where unknown)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _budget_s(elapsed: float, others_cpu_s: float) -> float:
    """The budget, for the cores the demo had: other processes that kept cores busy
    during the run (a shared developer machine) leave it fewer than 2."""
    others_cores = max(0.0, others_cpu_s / elapsed)
    return DEMO_BUDGET_S * 2 / max(2 - others_cores, 0.25)


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in output"
    return int(match.group(1).replace(",", ""))


@pytest.mark.slow
def test_demo_kills_restarts_and_verifies_within_its_budget() -> None:
    busy, own = _busy_cpu_s(), _children_cpu_s()
    started = time.monotonic()
    proc = phx("demo", "--seed", "7", timeout=300.0)
    elapsed = time.monotonic() - started
    others = (_busy_cpu_s() - busy) - (_children_cpu_s() - own)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # 45 s on 2 cores of its own (CI); on a machine shared with other test runs the
    # budget grows with the cores they kept busy, and the message says so.
    budget = _budget_s(elapsed, others)
    assert elapsed < budget, (f"phx demo took {elapsed:.1f} s, budget {budget:.0f} s "
                              f"(other processes used {others / elapsed:.1f} cores):\n{out}")
    # No traceback reaches the user, from the demo or from the client library.
    assert "Traceback" not in proc.stderr, proc.stderr
    # Not a terminal: plain lines, no live table escape codes.
    assert "\x1b[" not in out
    assert "10,000 tally agents activated" in out
    assert "dashboard: " in out
    # The story, in order.
    steps = ["SIGKILL node-2", "detection: node-2 is dead", "failover: all",
             "calls since the kill:", "node-2 restarted", "rebalanced: node-2 hosts",
             "Summary"]
    positions = [out.index(step) for step in steps]
    assert positions == sorted(positions)
    assert "calls/s" in out
    # During the kill the view says how many calls failed and how many the client
    # library retried; calls to the dead node wait for the failover instead of failing.
    kill_lines = [line for line in out.splitlines() if "] node-2 killed:" in line]
    assert kill_lines
    assert all(re.search(r"this phase: [\d,]+ calls, [\d,]+ failed, [\d,]+ retried by the "
                         r"client library", line) for line in kill_lines)
    since_kill = _number(r"calls since the kill: ([\d,]+)", out)
    failed = _number(r"calls since the kill: [\d,]+, ([\d,]+) failed", out)
    retried = _number(r"([\d,]+) retried by the client library \(a retried", out)
    assert retried > 0
    # Only calls in flight when the node died may fail (their outcome is unknown).
    assert failed < since_kill / 10, out
    # The verification: nothing lost, the killed node's acknowledged writes included.
    assert "lost on surviving nodes' agents and across rebalancing: 0 (" in out
    moved = _number(r"(\d[\d,]*) agents moved by rebalancing", out)
    assert moved > 3_000  # the restarted node's share came back to it
    assert re.search(r"carried [\d,]+ writes, 0 lost", out)
    verified = _number(r"verified: ([\d,]+) of", out)
    acknowledged = _number(r"verified: [\d,]+ of ([\d,]+) acknowledged", out)
    lost = _number(r"lost with the killed node: ([\d,]+)", out)
    assert verified > 10_000
    assert lost == 0
    assert verified == acknowledged
    assert "ERROR" not in out
    assert out.rstrip().splitlines()[-1] == "result: OK"


@pytest.mark.slow
def test_demo_forever_runs_until_ctrl_c_then_verifies() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "phoenix_cluster", "demo", "--forever", "--agents", "500",
         "--seconds", "1", "--rate", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        # The status lines name the phase; once the story is told it runs until Ctrl-C.
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "(Ctrl-C to stop)" in line:
                break
        assert any("(Ctrl-C to stop)" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + out
    assert proc.returncode == 0, out + err
    assert "Ctrl-C: stopping the workload and verifying" in out
    assert "interrupted with Ctrl-C" not in out  # the whole story ran before it
    assert "lost on surviving nodes' agents and across rebalancing: 0 (" in out
    assert out.rstrip().splitlines()[-1] == "result: OK"
