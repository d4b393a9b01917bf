"""State safety on real node processes: acknowledged writes survive kill -9, pauses and
whole-cluster restarts (a short Jepsen-style check; ``phx chaos`` runs longer ones).

Every operation is recorded with its outcome: ``ok`` (acknowledged), ``fail`` (definite:
nothing happened) or ``unknown`` (indefinite). At the end, for every key, each
acknowledged add is present exactly once, no failed add is present, and the total lies
in [acknowledged, acknowledged + unknown].
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from phoenix_cluster.testing import LocalCluster, wait_until
from phoenix_cluster.testing.chaos import CHAOS_IMPORTS, History, check, workload
from phoenix_cluster.testing.chaos_agents import ChaosCounter

pytestmark = pytest.mark.slow


async def test_acknowledged_writes_survive_kill_9_and_a_pause() -> None:
    async with LocalCluster(3, CHAOS_IMPORTS) as cluster:
        client = await cluster.client()
        keys = [f"c{i}" for i in range(24)]
        history = History()
        stop = asyncio.Event()
        workers = [asyncio.create_task(workload(client, keys, history, stop,
                                                random.Random(w), w))
                   for w in range(8)]
        await wait_until(lambda: history.acknowledged > 200, timeout=30, what="warm-up")

        cluster.kill(2)  # a leader of about a third of the partitions, mid-write
        await wait_until(lambda: all(m.name != "node-2" or m.status == "dead"
                                     for m in client.members()), timeout=30,
                         what="node-2 declared dead")
        acked_at_death = history.acknowledged
        await wait_until(lambda: history.acknowledged > acked_at_death + 200, timeout=30,
                         what="writes continue after the failover")

        await cluster.restart(2)
        await cluster.wait_converged()
        cluster.pause(1)  # a GC-like pause of another leader
        await asyncio.sleep(1.0)
        cluster.resume(1)
        await cluster.wait_converged()
        acked = history.acknowledged
        await wait_until(lambda: history.acknowledged > acked + 200, timeout=30,
                         what="writes continue after the pause")
        stop.set()
        await asyncio.gather(*workers)
        assert await check(client, keys, history) == []
        assert history.acknowledged > 600


async def test_a_whole_cluster_restart_with_data_dir_keeps_every_committed_write(
    tmp_path: object,
) -> None:
    async with LocalCluster(3, CHAOS_IMPORTS,
                            node_args=["--data-dir", str(tmp_path)]) as cluster:
        client = await cluster.client()
        keys = [f"d{i}" for i in range(20)]
        history = History()
        for i in range(200):
            key = keys[i % len(keys)]
            await client.ref(ChaosCounter, key).add(1, f"x{i}")
            history.record("ok", key, f"x{i}")
        for i in range(3):
            cluster.kill(i)
        for i in range(3):
            await cluster.wait(i)
        await asyncio.gather(*(cluster.start_node(i) for i in range(3)))
        await cluster.wait_converged()
        assert await check(client, keys, history) == []


def test_a_foreign_or_corrupt_data_dir_stops_the_node_with_a_clear_error(
    tmp_path: object,
) -> None:
    data_dir = Path(str(tmp_path))
    (data_dir / "replication-n1.sqlite3").write_bytes(b"not a database at all")
    proc = subprocess.run(
        [sys.executable, "-m", "phoenix_cluster", "node", "--name", "n1", "--listen",
         "127.0.0.1:0", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PHX_COOKIE": "a-test-cluster-secret"},
    )
    assert proc.returncode == 1
    assert "StorageError" in proc.stderr
    assert "replication-n1.sqlite3" in proc.stderr
    assert "READY" not in proc.stdout
