"""``phx agents list`` and ``phx agents show`` against a real two-member cluster: what
they print, and the exit codes of an unknown kind and of a key no member holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from agents_for_cli import CliCounter

from phoenix_cluster.testing import LocalCluster

pytestmark = pytest.mark.slow


def phx_agents(*args: str, cookie: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phoenix_cluster", "agents", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PHX_COOKIE": cookie, "COLUMNS": "200"},
    )


async def test_list_and_show_a_running_cluster() -> None:
    async with LocalCluster(2, ["agents_for_cli"]) as cluster:
        client = await cluster.client()
        for key in ("alpha", "beta", "gamma"):
            await client.ref(CliCounter, key).increment(len(key))
        where = await client.where(client.ref(CliCounter, "beta"))
        seed = cluster.addresses[0]
        cookie = cluster.cookie

        listed = phx_agents("list", "--seed", seed, "--kind", "cli_tests.counter", "--json",
                            cookie=cookie)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)["agents"]
        assert [(r["key"], r["status"]) for r in rows] == [
            ("alpha", "active"), ("beta", "active"), ("gamma", "active")]
        assert {r["node"] for r in rows} <= {"node-0", "node-1"}
        table = phx_agents("list", "--seed", seed, "--node", where, cookie=cookie)
        assert table.returncode == 0, table.stderr
        assert "beta" in table.stdout and where in table.stdout

        shown = phx_agents("show", "--seed", cluster.addresses[1], "cli_tests.counter",
                           "beta", "--json", cookie=cookie)
        assert shown.returncode == 0, shown.stderr
        body = json.loads(shown.stdout)
        assert body["state"] == {"count": 4}
        assert body["owner"] == where and body["status"] == "active"
        assert sorted(body["replicas"]) == ["node-0", "node-1"]
        assert body["version"] is not None
        text = phx_agents("show", "--seed", seed, "cli_tests.counter", "beta", cookie=cookie)
        assert text.returncode == 0, text.stderr
        assert f"owner        {where}" in text.stdout and '"count": 4' in text.stdout

        unknown = phx_agents("show", "--seed", seed, "no.such.kind", "beta", cookie=cookie)
        assert unknown.returncode == 2
        assert unknown.stderr.strip() == (
            "phx agents show: error: unknown agent kind 'no.such.kind': no member imports "
            "it (phx node --import MODULE)")
        missing = phx_agents("show", "--seed", seed, "cli_tests.counter", "nobody",
                             cookie=cookie)
        assert missing.returncode == 3
        assert "agent cli_tests.counter/nobody not found" in missing.stderr
        assert len(missing.stderr.strip().splitlines()) == 1
