"""Structured logs of a node with an HTTP endpoint: node name and trace id on every line,
the cluster secret nowhere (not in the log, not in any response)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from web_helpers import get, node_process

from phoenix_cluster._cli.logging_setup import JsonFormatter, TextFormatter
from phoenix_cluster._telemetry.tracing import current_trace_id
from phoenix_cluster.testing import free_port

SECRET = "s3cret-cookie-never-logged-7f3a"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("formatter", [JsonFormatter("node-t"), TextFormatter("node-t")])
def test_trace_id_is_on_lines_logged_inside_a_trace(formatter: logging.Formatter) -> None:
    def line(msg: str) -> str:
        return formatter.format(logging.makeLogRecord(
            {"name": "phoenix_cluster.test", "levelname": "INFO", "msg": msg}))

    outside = line("outside")
    token = current_trace_id.set(TRACE)
    try:
        inside = line("inside")
    finally:
        current_trace_id.reset(token)
    if isinstance(formatter, JsonFormatter):
        assert "trace_id" not in json.loads(outside)
        assert json.loads(inside)["trace_id"] == TRACE
        assert json.loads(inside)["node"] == "node-t"
    else:
        assert outside.endswith("[node-t] outside")
        assert inside.endswith(f"[node-t trace={TRACE}] inside")


@pytest.mark.slow
async def test_node_log_has_node_names_and_never_the_cookie(tmp_path: Path) -> None:
    http = f"127.0.0.1:{free_port()}"
    log = tmp_path / "node.log"
    bodies: list[bytes] = []
    async with node_process("--name", "log-a", "--listen", f"127.0.0.1:{free_port()}",
                            "--http", http, "--log-format", "json", "--log-level", "debug",
                            log=log, env={"PHX_COOKIE": SECRET}):
        for path in ["/", "/metrics", "/health/live", "/health/ready", "/api/cluster",
                     "/api/agents", "/nope"]:
            bodies.append((await get(f"http://{http}{path}"))[2])
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://{http}/api/events") as response:
            bodies.append(await response.content.readuntil(b"\n\n"))
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines, "the node logged nothing"
    assert {line["node"] for line in lines} == {"log-a"}
    assert any(f"dashboard at http://{http}/" in line["msg"] for line in lines)
    assert SECRET not in text
    for body in bodies:
        assert SECRET.encode() not in body


def test_cli_refuses_a_public_http_bind_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "phoenix_cluster", "node", "--listen",
         f"127.0.0.1:{free_port()}", "--http", "0.0.0.0:9100"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("phx node: error: bad setting http:")
    assert "--http-public" in line
