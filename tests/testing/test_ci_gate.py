"""``ci_gate``: a skip is a skip on a workstation and a one-line failure under ``CI``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = '''
import pytest

def test_needs_a_command():
    pytest.skip("iptables is not installed")

@pytest.mark.skipif(True, reason="etcd binary not found")
def test_marked():
    pass

@pytest.mark.xfail(strict=True)
def test_known_bug():
    assert False
'''


def run_sample(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent),
                                         env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "ci_gate", "-p", "no:cacheprovider", "-rA",
         "-q", "test_sample.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_without_ci_a_missing_command_is_a_skip(tmp_path: Path) -> None:
    done = run_sample(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 skipped, 1 xfailed" in done.stdout


@pytest.mark.parametrize("ci", ["1", "true"])
def test_under_ci_a_missing_command_fails_with_one_line(tmp_path: Path, ci: str) -> None:
    done = run_sample(tmp_path, ci)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"FAILED test_sample.py::test_needs_a_command - missing in CI (CI={ci!r}, so this"
            " is not a skip): iptables is not installed") in done.stdout
    assert "etcd binary not found" in done.stdout
    assert "1 xfailed" in done.stdout and "skipped" not in done.stdout


MODULE_SKIP = '''
import pytest
pytest.importorskip("no_such_optional_package_phx")

def test_never_collected():
    pass
'''


@pytest.mark.parametrize(("ci", "code", "seen"), [
    (None, 5, "1 skipped"),  # 5: pytest ran no test
    ("1", 2, "missing in CI (CI='1', so this is not a skip): could not import"),
])
def test_a_module_skipped_at_collection_fails_under_ci(
        tmp_path: Path, ci: str | None, code: int, seen: str) -> None:
    """``pytest.importorskip`` at module level skips during collection, where the
    per-test hook never looks: under ``CI`` that is a failure too."""
    (tmp_path / "test_sample.py").write_text(MODULE_SKIP)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent),
                                         env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "ci_gate", "-p", "no:cacheprovider", "-rA",
         "-q", "test_sample.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == code, done.stdout + done.stderr
    assert seen in done.stdout, done.stdout


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-system-deps.sh"


def run_script(deps: str) -> subprocess.CompletedProcess[str]:
    """The script with ``deps`` as its package:command list, as an unprivileged user (so
    it cannot install and must say so); as root through ``setpriv`` to ``nobody``."""
    command = ["bash", str(SCRIPT)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed to drop root"
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PHX_SYSTEM_DEPS": deps}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_system_deps_script_is_quiet_when_everything_is_present() -> None:
    done = run_script("bash:bash coreutils:ls")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_system_deps_script_fails_with_one_line_when_it_cannot_install() -> None:
    done = run_script("bash:bash phx-no-such-package:phx-no-such-command")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == ("ensure-system-deps: missing phx-no-such-package; install as root:"
                           " apt-get install phx-no-such-package\n")
