"""Helpers of the web tests: a ``phx node`` process, HTTP reads, waiting on the network."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent


async def get(url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: status, headers and body (no raise on 4xx/5xx)."""
    method = kwargs.pop("method", "GET")
    async with aiohttp.ClientSession() as session, session.request(method, url,
                                                                   **kwargs) as r:
        return r.status, dict(r.headers), await r.read()


async def get_json(url: str) -> Any:
    status, _, body = await get(url)
    assert status == 200, (url, status, body[:500])
    return json.loads(body)


class NodeProcess:
    """A ``phx node`` subprocess whose stderr goes to a file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log_path = log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    return await self.process.wait()
            except TimeoutError:
                self.process.kill()
        return await self.process.wait()


@contextlib.asynccontextmanager
async def node_process(*args: str, log: Path, env: dict[str, str] | None = None,
                       ready_timeout: float = 30.0) -> AsyncIterator[NodeProcess]:
    """Run ``python -m phoenix_cluster node ARGS`` until its READY line; stop it after."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
                **(env or {})}
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "phoenix_cluster", "node", *args,
            stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL,
            env=full_env)
    node = NodeProcess(process, log)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(ready_timeout):
            while True:
                line = await process.stdout.readline()
                if not line:
                    raise RuntimeError(f"node exited before READY:\n{node.log()[-2000:]}")
                if line.startswith(b"READY "):
                    break
        yield node
    finally:
        await node.stop()
