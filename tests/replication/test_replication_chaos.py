"""Seeded chaos on the in-process cluster: no acknowledged write is ever lost.

Replicators (the real service: elections, catch-up, batching, fencing) run on the memory
network under virtual time while a seeded nemesis kills nodes, restarts them with an
empty memory, adds fresh ones, cuts one node off (its view frozen, so it keeps believing
it leads), pauses one, and heals.
Clients append write ids to a few keys through whichever node they believe is the
primary, the stale one included. Every acknowledged history must stay a prefix of every
later acknowledged one and of what the keys hold at the end.
"""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from phoenix_cluster._replication.service import ReplicationSettings, partition_for
from phoenix_cluster._replication.simulation import ReplicaCluster, SimClock, table_of
from phoenix_cluster._replication.types import Record
from phoenix_cluster.errors import PhoenixError

KIND = "log"
KEYS = [f"key{i}" for i in range(12)]
_decode = msgspec.msgpack.Decoder(list[int]).decode


class Chaos:
    def __init__(self, cluster: ReplicaCluster, rnd: random.Random) -> None:
        self.cluster = cluster
        self.rnd = rnd
        self.acked: dict[str, list[int]] = {}
        self.ids = 0
        self.cut: str | None = None
        self.paused: str | None = None
        self.joined = 0
        self.settled = True
        self.outcomes = {"ok": 0, "failed": 0}

    def view(self) -> list[str]:
        return [n for n in self.cluster.alive if n not in (self.cut, self.paused)]

    async def write(self, key: str, node: str) -> None:
        rep = self.cluster.nodes.get(node)
        if rep is None:
            return
        try:
            got = await rep.load(KIND, key)
            history = [] if got is None else _decode(got.state)
            self.ids += 1
            history = [*history, self.ids]
            await rep.commit(KIND, key, Record(msgspec.msgpack.encode(history)))
        except PhoenixError:
            self.outcomes["failed"] += 1
            return
        self.outcomes["ok"] += 1
        before = self.acked.get(key, [])
        assert history[:len(before)] == before, (key, before, history, node)
        self.acked[key] = history

    async def step(self) -> None:
        rnd, cluster = self.rnd, self.cluster
        action = rnd.choice(["write"] * 8 + ["kill", "restart", "join", "cut", "pause", "heal"])
        view = self.view()
        if action == "write":
            key = rnd.choice(KEYS)
            node = table_of(view).owner(partition_for(KIND, key))
            if self.cut is not None and rnd.random() < 0.3:
                node = self.cut  # a client that still talks to the cut-off node
            await self.write(key, node)
        elif action == "kill" and len(view) > 3 and self.settled and view == cluster.alive:
            # One failure at a time: the next kill waits until every key is back on a
            # full replica set (a second loss before that may legitimately lose data).
            victim = rnd.choice(view)
            await cluster.kill(victim)
            await self.settle()
        elif action == "restart" and self.settled and view == cluster.alive:
            # Same name, empty memory (no data_dir): it must be caught up, not trusted.
            victim = rnd.choice(view)
            await cluster.kill(victim)
            await cluster.start(victim)
            await self.settle()
            await self.settle()  # the first settle's confirmations start the catch-ups
        elif action == "join" and self.joined < 3:
            self.joined += 1
            await cluster.start(f"new{self.joined}")
            await self.settle()
        elif action == "cut" and self.cut is None and self.paused is None and len(view) > 3:
            self.cut = rnd.choice(view)
            cluster.net.isolate(self.cut, [n for n in cluster.alive if n != self.cut])
            await cluster.clock.sleep(2.0)  # until the others declare it dead
            cluster.update(nodes=self.view(), view=self.view())
        elif action == "pause" and self.paused is None and self.cut is None and len(view) > 3:
            self.paused = rnd.choice(view)
            cluster.net.pause(self.paused)
            await cluster.clock.sleep(2.0)  # until the others declare it dead
            cluster.update(nodes=self.view(), view=self.view())
        elif action == "heal":
            await self.heal()

    async def heal(self) -> None:
        self.cluster.net.heal()
        if self.paused is not None and self.paused in self.cluster.nodes:
            self.cluster.net.resume(self.paused)
        self.cut = self.paused = None
        await self.settle()

    async def settle(self) -> None:
        """Membership converged: every node gets the view; primaries take their keys
        over (catching the new replica sets up) before the next fault."""
        await self.cluster.clock.sleep(2.0)  # failure detection and convergence take time
        view = self.view()
        self.cluster.update(nodes=view, view=view)
        table = table_of(view)
        self.settled = True
        for key in KEYS:
            owner = table.owner(partition_for(KIND, key))
            for _ in range(3):
                try:
                    await self.cluster.nodes[owner].load(KIND, key)
                    break
                except PhoenixError:
                    await self.cluster.clock.sleep(0.5)
            else:
                self.settled = False


@pytest.mark.parametrize(("seed", "durable"), [(1, False), (2, False), (3, False), (4, True)])
async def test_no_acknowledged_write_is_lost_under_chaos(seed: int, durable: bool,
                                                         tmp_path: Path) -> None:
    """With ``durable``, every node keeps a SQLite file and a restart reloads it."""
    rnd = random.Random(seed)
    cluster = ReplicaCluster(SimClock(), seed=seed, data_dir=tmp_path if durable else None,
                             settings=ReplicationSettings(eager=False))
    chaos = Chaos(cluster, rnd)
    try:
        await cluster.start_all([f"n{i}" for i in range(5)])
        for _ in range(150):
            await chaos.step()
        await chaos.heal()
        table = table_of(chaos.view())
        for key, history in chaos.acked.items():
            rep = cluster.nodes[table.owner(partition_for(KIND, key))]
            got = await rep.load(KIND, key)
            final = [] if got is None else _decode(got.state)
            assert final[:len(history)] == history, (key, history, final)
        assert chaos.outcomes["ok"] > 30, chaos.outcomes
    finally:
        await cluster.aclose()
