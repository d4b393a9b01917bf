"""``phx status`` reads the member table from a running cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phoenix_cluster.testing import LocalCluster, free_port

pytestmark = pytest.mark.slow


def phx_status(*args: str, cookie: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phoenix_cluster", "status", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PHX_COOKIE": cookie, "COLUMNS": "200"},
    )


async def test_status_lists_every_member() -> None:
    async with LocalCluster(nodes=2) as cluster:
        done = phx_status("--seed", cluster.nodes[0].address, cookie=cluster.cookie)
        assert done.returncode == 0, done.stderr
        for node in cluster.nodes:
            assert node.name in done.stdout
            assert node.address in done.stdout
        assert "2 alive of 2 known members; split brain: keep-majority" in done.stdout
        assert "last split-brain decision: none" in done.stdout
        as_json = phx_status("--seed", cluster.nodes[1].address, "--json",
                             cookie=cluster.cookie)
        view = json.loads(as_json.stdout)
        assert view["name"] == "node-1"
        assert sorted(m["name"] for m in view["members"]) == ["node-0", "node-1"]
        assert sum(view["ring_share"].values()) == pytest.approx(1.0)
        assert view["last_decision"] is None
        wrong = phx_status("--seed", cluster.nodes[0].address, "--timeout-s", "2",
                           cookie="wrong")
        assert wrong.returncode == 1
        assert "cannot read the cluster's status" in wrong.stderr


def test_status_of_nothing_is_a_one_line_error() -> None:
    done = phx_status("--seed", f"127.0.0.1:{free_port()}", "--timeout-s", "1", cookie="x")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("named", [False, True], ids=["default-file", "cookie-file"])
def test_status_without_a_secret_is_one_line_and_writes_no_file(
    tmp_path: Path, named: bool
) -> None:
    home = tmp_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHX_")}
    args = ["--cookie-file", str(home / "missing.cookie")] if named else []
    done = subprocess.run(
        [sys.executable, "-m", "phoenix_cluster", "status", "--seed",
         f"127.0.0.1:{free_port()}", "--timeout-s", "1", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**env, "HOME": str(home)},
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no cluster secret: set PHX_COOKIE" in done.stderr
    assert list(home.iterdir()) == [], "phx status wrote a file"
