"""Processes started with ``PHX_EXIT_WITH_PARENT`` die with their parent
(``_foundation/parent_death.py``), on real processes: a middle process starts them, the
test SIGKILLs the middle one and waits for them to be gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from phoenix_cluster._foundation.parent_death import PARENT_PID_ENV, exit_with_parent_from_env

_GONE_DEADLINE_S = 10.0


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        # Field 3 of /proc/<pid>/stat is the state; Z is a zombie, X dead.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_gone(pids: list[int]) -> list[int]:
    """The pids still running after the deadline."""
    deadline = time.monotonic() + _GONE_DEADLINE_S
    while (alive := [p for p in pids if not _gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _kill_middle_and_check(script: str, expected: int) -> None:
    """Run ``script`` (prints one line of child pids), SIGKILL it, expect its children gone."""
    pids: list[int] = []
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                          stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          text=True) as middle:
        try:
            assert middle.stdout is not None
            line = middle.stdout.readline()
            pids = [int(p) for p in line.split()]
            assert len(pids) == expected, f"middle process printed {line!r}"
            assert not any(_gone(p) for p in pids)
            middle.send_signal(signal.SIGKILL)
            middle.wait(timeout=10)
            assert _wait_gone(pids) == []
        finally:
            if middle.poll() is None:
                middle.kill()
            for pid in pids:
                if not _gone(pid):
                    os.kill(pid, signal.SIGKILL)


_WATCHED_CHILD = """
import os, sys, time
from phoenix_cluster._foundation import parent_death
if sys.argv[1] == "watchdog":
    parent_death._set_death_signal = lambda sig: False   # the non-Linux path
how = parent_death.exit_with_parent_from_env()
assert how == sys.argv[1], how
print("armed", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("how", ["prctl", "watchdog"])
def test_a_watched_process_dies_with_its_parent(how: str) -> None:
    if how == "prctl" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")  # the watchdog case covers others
    _kill_middle_and_check(f"""
        import os, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", {_WATCHED_CHILD!r}, {how!r}],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                 env={{**os.environ, {PARENT_PID_ENV!r}: str(os.getpid())}})
        assert child.stdout.readline() == b"armed\\n"
        print(child.pid, flush=True)
        child.wait()
    """, expected=1)


def test_a_process_whose_parent_is_already_gone_dies_at_once() -> None:
    # pid 1 is never this child's parent: the parent "died" before the check.
    done = subprocess.run(
        [sys.executable, "-c", "import time\n"
         "from phoenix_cluster._foundation.parent_death import exit_with_parent_from_env\n"
         "exit_with_parent_from_env()\nprint('survived', flush=True)\ntime.sleep(30)"],
        env={**os.environ, PARENT_PID_ENV: "1"}, capture_output=True, text=True, timeout=30,
        check=False)
    assert done.returncode == -signal.SIGKILL
    assert "survived" not in done.stdout


def test_no_variable_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PARENT_PID_ENV, raising=False)
    assert exit_with_parent_from_env() is None


def test_a_bad_value_is_ignored_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(PARENT_PID_ENV, "not-a-pid")
    assert exit_with_parent_from_env() is None
    assert PARENT_PID_ENV not in os.environ   # not passed on to this process's children
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"ignoring {PARENT_PID_ENV}='not-a-pid'" in err


@pytest.mark.slow
def test_local_cluster_nodes_die_when_the_harness_is_killed() -> None:
    # The middle process is a test harness that starts a cluster and is then SIGKILLed
    # (as pytest-timeout or an OOM kill would): no aclose, no atexit.
    _kill_middle_and_check("""
        import asyncio
        from phoenix_cluster.testing import LocalCluster

        async def main() -> None:
            async with LocalCluster(nodes=2) as cluster:
                pids = [n.process.pid for n in cluster.nodes if n.process is not None]
                print(*pids, flush=True)
                await asyncio.sleep(120)

        asyncio.run(main())
    """, expected=2)
