"""The failure detector on real node processes: no false deaths under load, real deaths found.

Figures (how fast) live in ``benchmarks/failure_detection.py``; these tests check that
the detector is right, with generous deadlines.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from phoenix_cluster.testing import LocalCluster

pytestmark = pytest.mark.slow

BURN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


async def test_no_false_deaths_while_the_cpu_is_saturated() -> None:
    async with LocalCluster(nodes=3) as cluster:
        # Twice as many busy loops as cores, for longer than a failure would need to be
        # detected (~2-3 s): every node process is starved of CPU at times.
        burners = [await asyncio.create_subprocess_exec(sys.executable, "-c", BURN.format(s=8))
                   for _ in range(4)]
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 8
            while loop.time() < end:
                await cluster.wait_converged(timeout_s=30)
                await asyncio.sleep(0.5)
        finally:
            for burner in burners:
                if burner.returncode is None:
                    burner.kill()
                await burner.wait()
        await cluster.wait_converged(timeout_s=30)
        for node in cluster.nodes:
            assert node.running
            log = node.log()
            assert " is dead" not in log, f"{node.name} declared a live node dead:\n{log}"


async def test_a_killed_node_is_declared_dead_by_every_survivor() -> None:
    async with LocalCluster(nodes=3) as cluster:
        cluster.kill(2)
        await cluster.wait(2)
        await cluster.wait_converged(timeout_s=30)  # survivors agree: node-2 gone
        for node in cluster.nodes[:2]:
            assert "node-2 is dead" in node.log()
