"""State safety on real node processes: acknowledged writes survive kill -9, pauses and
whole-cluster restarts (a short Jepsen-style check; ``phx chaos`` runs longer ones).

Every operation is recorded with its outcome: ``ok`` (acknowledged), ``fail`` (definite:
nothing happened) or ``unknown`` (indefinite). At the end, for every key, each
acknowledged add is present exactly once, no failed add is present, and the total lies
in [acknowledged, acknowledged + unknown].
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest
from placement_agents import Counter

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.slow

IMPORTS = ["placement_agents"]


@dataclass
class History:
    ok: dict[str, list[str]] = field(default_factory=dict)
    unknown: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)

    def record(self, outcome: str, key: str, item: str) -> None:
        getattr(self, outcome).setdefault(key, []).append(item)

    def counts(self) -> tuple[int, int, int]:
        return tuple(sum(len(v) for v in d.values())  # type: ignore[return-value]
                     for d in (self.ok, self.unknown, self.failed))


async def workload(client: phx.Node, keys: list[str], history: History, stop: asyncio.Event,
                   worker: int) -> None:
    n = 0
    rng = random.Random(worker)
    while not stop.is_set():
        key = rng.choice(keys)
        item = f"w{worker}-{n}"
        n += 1
        try:
            await client.ref(Counter, key).options(timeout=3.0).add(1, item)
        except phx.PhoenixError as exc:
            history.record("failed" if exc.definite else "unknown", key, item)
            await asyncio.sleep(0.02)
        else:
            history.record("ok", key, item)


async def check(client: phx.Node, keys: list[str], history: History) -> None:
    for key in keys:
        state = None
        deadline = asyncio.get_running_loop().time() + 30
        while state is None:
            try:
                state = await client.ref(Counter, key).read()
            except phx.PhoenixError:
                assert asyncio.get_running_loop().time() < deadline, f"{key} never answered"
                await asyncio.sleep(0.1)
        items = state["items"]
        assert isinstance(items, list)
        acked = history.ok.get(key, [])
        missing = set(acked) - set(items)
        assert not missing, f"{key}: {len(missing)} acknowledged adds lost: {sorted(missing)[:5]}"
        assert len(items) == len(set(items)), f"{key}: an add was applied twice"
        assert not set(history.failed.get(key, [])) & set(items), f"{key}: a failed add ran"
        unknown = len(history.unknown.get(key, []))
        assert len(acked) <= state["total"] <= len(acked) + unknown


async def test_acknowledged_writes_survive_kill_9_and_a_pause() -> None:
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        keys = [f"c{i}" for i in range(24)]
        history = History()
        stop = asyncio.Event()
        workers = [asyncio.create_task(workload(client, keys, history, stop, w))
                   for w in range(8)]
        await wait_until(lambda: history.counts()[0] > 200, timeout=30, what="warm-up")

        cluster.kill(2)  # a leader of about a third of the partitions, mid-write
        await wait_until(lambda: all(m.name != "node-2" or m.status == "dead"
                                     for m in client.members()), timeout=30,
                         what="node-2 declared dead")
        acked_at_death = history.counts()[0]
        await wait_until(lambda: history.counts()[0] > acked_at_death + 200, timeout=30,
                         what="writes continue after the failover")

        await cluster.restart(2)
        await cluster.wait_converged()
        cluster.pause(1)  # a GC-like pause of another leader
        await asyncio.sleep(1.0)
        cluster.resume(1)
        await cluster.wait_converged()
        acked = history.counts()[0]
        await wait_until(lambda: history.counts()[0] > acked + 200, timeout=30,
                         what="writes continue after the pause")
        stop.set()
        await asyncio.gather(*workers)
        await check(client, keys, history)
        ok, unknown, failed = history.counts()
        assert ok > 600


async def test_a_whole_cluster_restart_with_data_dir_keeps_every_committed_write(
    tmp_path: object,
) -> None:
    async with LocalCluster(3, IMPORTS, node_args=["--data-dir", str(tmp_path)]) as cluster:
        client = await cluster.client()
        keys = [f"d{i}" for i in range(20)]
        history = History()
        for i in range(200):
            key = keys[i % len(keys)]
            await client.ref(Counter, key).add(1, f"x{i}")
            history.record("ok", key, f"x{i}")
        for i in range(3):
            cluster.kill(i)
        for i in range(3):
            await cluster.wait(i)
        await asyncio.gather(*(cluster.start_node(i) for i in range(3)))
        await cluster.wait_converged()
        await check(client, keys, history)
