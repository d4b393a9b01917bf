"""The startup benchmark behind ``phx bench startup``: READY to the first served call.

Each trial spawns one ``phx node`` seeded with its own address (``--seed`` = ``--listen``,
the pattern where every node gets the same seed list and the first seed forms the
cluster) importing :mod:`.bench_agents`. A ``role="client"`` node in this process,
started before the node, calls :class:`~.bench_agents.BenchTarget` as soon as the node
prints READY and again every 10 ms until a call is served. Reported per trial: spawn to
READY (interpreter start and imports included) and READY to the first served call, the
figure a supervisor that routes traffic on READY cares about (goal: under 2 s).

This module is imported only when ``phx bench startup`` runs; ``bench.py`` stays cheap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import statistics
import sys
import time
from typing import Any

from phoenix_cluster.testing import free_port

from .._foundation.parent_death import PARENT_PID_ENV
from .._node import Node
from ..errors import PhoenixError
from .bench_agents import BenchTarget
from .bench_cluster_report import report_title
from .bench_local import machine_info, save_json

__all__ = ["GOAL_FIRST_CALL_S", "print_report", "run_startup", "save_json"]

GOAL_FIRST_CALL_S = 2.0
_RETRY_S = 0.01
_DEADLINE_S = 60.0


async def _trial(cookie: str) -> tuple[float, float]:
    """One node start: ``(spawn -> READY, READY -> first served call)`` in seconds."""
    address = f"127.0.0.1:{free_port()}"
    client = Node(name=f"bench-client-{secrets.token_hex(3)}", role="client",
                      seeds=[address], cookie=cookie)
    await client.start()
    spawned = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phoenix_cluster", "node", "--name", "first", "--listen",
        address, "--seed", address, "--import", "phoenix_cluster._cli.bench_agents",
        "--log-level", "warning", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
        env={**_environ(), "PHX_COOKIE": cookie, PARENT_PID_ENV: str(os.getpid())})
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(_DEADLINE_S):
            while not (line := await proc.stdout.readline()).startswith(b"READY "):
                if not line:
                    raise RuntimeError(f"phx node exited ({await proc.wait()}) before READY")
            ready = time.monotonic()
            ref = client.ref(BenchTarget, "first")
            while True:
                try:
                    await ref.options(timeout=1.0).inc(1)
                    break
                except PhoenixError:
                    await asyncio.sleep(_RETRY_S)
            return ready - spawned, time.monotonic() - ready
    finally:
        await client.aclose()
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PHX_")}


def run_startup(*, quick: bool, progress: Any) -> dict[str, Any]:
    trials = 3 if quick else 10

    async def main() -> dict[str, Any]:
        # The client starts before its seed exists: its "cannot join" warnings are
        # expected here and would only clutter the report.
        logging.getLogger("phoenix_cluster").setLevel(logging.ERROR)
        results: dict[str, Any] = machine_info("asyncio", quick)
        results["node_loop"] = "uvloop when installed"
        cookie = secrets.token_hex(16)
        to_ready: list[float] = []
        to_call: list[float] = []
        for i in range(trials):
            progress(f"node start {i + 1} of {trials}")
            spawn_ready, ready_call = await _trial(cookie)
            to_ready.append(spawn_ready)
            to_call.append(ready_call)
        results["startup"] = {
            "trials": float(trials),
            "spawn_to_ready_median_s": statistics.median(to_ready),
            "spawn_to_ready_max_s": max(to_ready),
            "ready_to_first_call_median_ms": statistics.median(to_call) * 1000,
            "ready_to_first_call_max_ms": max(to_call) * 1000,
        }
        return results

    return asyncio.run(main())


def print_report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = results["startup"]
    table = Table(title=report_title("startup", results))
    table.add_column(f"figure ({s['trials']:.0f} node starts)")
    table.add_column("median", justify="right")
    table.add_column("max", justify="right")
    table.add_column("goal", justify="right")
    table.add_row("1-node cluster: READY → first served call",
                  f"{s['ready_to_first_call_median_ms']:,.1f} ms",
                  f"{s['ready_to_first_call_max_ms']:,.1f} ms",
                  f"< {GOAL_FIRST_CALL_S:.0f} s")
    table.add_row("process spawn → READY", f"{s['spawn_to_ready_median_s']:.2f} s",
                  f"{s['spawn_to_ready_max_s']:.2f} s", "—")
    Console().print(table)
