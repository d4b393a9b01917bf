"""A durable reminder on real node processes: the node holding it is killed with
SIGKILL, and the reminder fires again on the new leader of its partition within the
failover time (docs/reminders.md)."""

from __future__ import annotations

import asyncio
import time

import pytest
from reminder_agents import Beeper

import phoenix_cluster as phx
from phoenix_cluster._agents.reminders import TABLE_KIND, table_key
from phoenix_cluster.testing import LocalCluster

pytestmark = pytest.mark.slow

EVERY_S = 1.0
RECOVERY_S = 12.0
"""Failure detection plus the election of the partition (≈ 3 s on an idle machine,
docs/benchmarks.md), with room for a loaded one."""


async def _read(beeper: phx.AgentRef, deadline: float) -> list[tuple[int, float, str]]:
    while True:
        try:
            return [tuple(a) for a in await beeper.read()]
        except (phx.IndefiniteError, phx.NotLeader, phx.NoQuorum):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_reminder_fires_again_after_its_holder_is_killed() -> None:
    async with LocalCluster(3, ["reminder_agents"]) as cluster:
        client = await cluster.client()
        # A reminder held on one node, for an agent living on another one.
        for i in range(200):
            key = f"beeper-{i}"
            table = client.ref(TABLE_KIND, table_key("cluster.reminder_beeper", key))
            holder = await client.where(table)
            if await client.where(client.ref(Beeper, key)) != holder:
                break
        beeper = client.ref(Beeper, key)
        await beeper.start(EVERY_S, 0.2)
        deadline = time.monotonic() + 20.0
        while len(await _read(beeper, deadline)) < 2:
            assert time.monotonic() < deadline, "no ticks before the kill"
            await asyncio.sleep(0.1)
        killed_at = time.time()
        cluster.kill(int(holder.rsplit("-", 1)[1]))
        deadline = time.monotonic() + RECOVERY_S + 3 * EVERY_S
        while True:
            arrivals = await _read(beeper, deadline)
            after = [a for a in arrivals if a[1] > killed_at]
            if len(after) >= 2:
                break
            assert time.monotonic() < deadline, f"no ticks after the kill: {arrivals}"
            await asyncio.sleep(0.1)
        ticks = [a[0] for a in arrivals]
        assert ticks == sorted(ticks)  # in order; the one at the switch may come twice
        assert after[0][1] - killed_at < RECOVERY_S + EVERY_S
        assert after[1][0] > after[0][0]  # and it keeps firing
        await beeper.stop()
