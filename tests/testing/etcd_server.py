"""A real etcd (Debian's etcd-server) for tests, on free loopback ports with a temp data dir.

``ETCD`` is the binary or ``None``; the module fixtures of the etcd tests skip with the
reason when it is missing (under ``CI`` that skip is a failure: tests/testing/ci_gate.py;
``scripts/ensure-system-deps.sh`` installs it for ``make test``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ETCD = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
MISSING = "etcd binary not found: apt-get install etcd-server (scripts/ensure-system-deps.sh)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    assert ETCD is not None
    client, peer = _free_port(), _free_port()
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [ETCD, "--name", "phx-test", "--data-dir", str(data_dir),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"phx-test={peer_url}", "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if json.loads(resp.read()).get("health") == "true":
                    return proc, url
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"etcd did not become healthy: {log_path.read_text()[-2000:]}")


@contextlib.contextmanager
def running_etcd(base: Path) -> Iterator[str]:
    """Start etcd under ``base`` (data dir and log), yield its client URL, stop it."""
    for attempt in range(3):  # a free port may be taken between probing and binding
        try:
            proc, url = _start(base / f"data{attempt}", base / f"etcd{attempt}.log")
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
