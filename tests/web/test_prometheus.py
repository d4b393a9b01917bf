"""A real Prometheus scrapes a real ``phx node`` process over its ``/metrics``."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from web_agents import Meter
from web_helpers import get, get_json, node_process

import phoenix_cluster as phx
from phoenix_cluster.testing import free_port

COOKIE = "prometheus-test-cookie"
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"

_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: phoenix
    static_configs:
      - targets: ["{target}"]
"""


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("the prometheus server is not installed (apt-get install prometheus; "
                    "scripts/ensure-system-deps.sh does it)")
    return found


@pytest.fixture
async def prometheus(prometheus_binary: str, tmp_path: Path) -> AsyncIterator[
        tuple[str, Path, Any]]:
    """A function that starts Prometheus scraping a target; yields (url, config, start)."""
    started: list[asyncio.subprocess.Process] = []
    port = free_port()
    config = tmp_path / "prometheus.yml"
    log = tmp_path / "prometheus.log"

    async def start(target: str) -> None:
        config.write_text(_CONFIG.format(target=target))
        with log.open("wb") as out:
            started.append(await asyncio.create_subprocess_exec(
                prometheus_binary, f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL))

    try:
        yield f"http://127.0.0.1:{port}", log, start
    finally:
        for process in started:
            if process.returncode is None:
                process.terminate()
                try:
                    async with asyncio.timeout(20):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def poll(check: Any, *, timeout: float, what: str, log: Path) -> Any:
    """Call async ``check`` until it returns something truthy (network errors retried)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = await check()
        except OSError as exc:
            result, last = None, exc
        if result:
            return result
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what} after {timeout}s (last error: {last!r})\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


@pytest.mark.slow
async def test_real_prometheus_scrapes_a_node(prometheus: tuple[str, Path, Any],
                                             tmp_path: Path) -> None:
    prom_url, prom_log, start_prometheus = prometheus
    prom_config = prom_log.with_name("prometheus.yml")
    listen = f"127.0.0.1:{free_port()}"
    http = f"127.0.0.1:{free_port()}"
    async with node_process("--name", "prom-a", "--listen", listen, "--http", http,
                            "--import", "web_agents", log=tmp_path / "node.log",
                            env={"PHX_COOKIE": COOKIE}):
        async with phx.Node(role="client", seeds=[listen], cookie=COOKIE) as client:
            for i in range(20):
                await client.ref(Meter, f"p{i % 4}").add(i)
        await start_prometheus(http)
        promtool = shutil.which("promtool")
        if promtool is not None:
            check = await asyncio.create_subprocess_exec(
                promtool, "check", "config", str(prom_config),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            async with asyncio.timeout(60):
                output, _ = await check.communicate()
            assert check.returncode == 0, output.decode()

        async def target_up() -> bool:
            status, _, body = await get(f"{prom_url}/api/v1/targets")
            if status != 200:  # 503 while Prometheus is still starting
                return False
            targets = json.loads(body)["data"]["activeTargets"]
            return any(t["scrapeUrl"] == f"http://{http}/metrics" and t["health"] == "up"
                       for t in targets)

        await poll(target_up, timeout=60, what="the node never showed as an up target",
                   log=prom_log)

        async def query(expr: str) -> list[dict[str, Any]]:
            data = await get_json(f"{prom_url}/api/v1/query?query={expr}")
            assert data["status"] == "success", data
            result: list[dict[str, Any]] = data["data"]["result"]
            return result

        for expr, label, expected in [
            ("phoenix_agents_active", None, "4"),
            ('phoenix_cluster_nodes{status="alive",role="member"}', None, "1"),
            ("phoenix_agent_messages_total", "kind", "web.meter"),
            ("phoenix_agent_call_duration_seconds_count", "kind", "web.meter"),
            ("phoenix_event_loop_lag_seconds", None, None),
            ('up{job="phoenix"}', None, "1"),
        ]:
            result = await poll(functools.partial(query, expr), timeout=30,
                                what=f"no series for {expr}", log=prom_log)
            series = result[0]
            if label is not None:
                assert series["metric"][label] == expected, series
            elif expected is not None:
                assert series["value"][1] == expected, series


def _yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", markdown, flags=re.DOTALL)


@pytest.mark.parametrize(("what", "marker"), [("rules", "groups:"), ("config", "scrape_configs:")])
def test_monitoring_guide_yaml_passes_promtool(tmp_path: Path, what: str, marker: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    (block,) = [b for b in _yaml_blocks(GUIDE.read_text()) if marker in b]
    path = tmp_path / f"{what}.yml"
    path.write_text(block)
    done = subprocess.run([promtool, "check", what, str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
