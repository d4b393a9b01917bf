"""``phx demo --quick``: the three-node story end to end, as a user runs it.

A real subprocess starts three real node processes, kills one, restarts it and verifies
the acknowledged writes. The figures it prints are not asserted (a noisy test machine);
the story and the verification are.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from cli_helpers import phx


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in output"
    return int(match.group(1).replace(",", ""))


@pytest.mark.slow
def test_demo_quick_kills_restarts_and_verifies() -> None:
    proc = phx("demo", "--quick", "--seed", "7", timeout=90.0)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # Not a terminal: plain lines, no live table escape codes.
    assert "\x1b[" not in out
    assert "2,000 tally agents activated" in out
    assert "dashboard: " in out
    # The story, in order.
    steps = ["SIGKILL node-2", "detection: node-2 is dead", "failover: all",
             "node-2 restarted", "rebalanced: node-2 hosts", "Summary"]
    positions = [out.index(step) for step in steps]
    assert positions == sorted(positions)
    assert "calls/s" in out
    # The verification: nothing lost, the killed node's acknowledged writes included.
    assert "lost on surviving nodes' agents and across rebalancing: 0 (" in out
    moved = _number(r"(\d[\d,]*) agents moved by rebalancing", out)
    assert moved > 0
    assert re.search(r"carried [\d,]+ writes, 0 lost", out)
    verified = _number(r"verified: ([\d,]+) of", out)
    acknowledged = _number(r"verified: [\d,]+ of ([\d,]+) acknowledged", out)
    lost = _number(r"lost with the killed node: ([\d,]+)", out)
    assert verified > 0
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
