"""Reminder firing lag after its owner is killed with SIGKILL (p50 / p95 over trials).

Each trial on one ``LocalCluster`` of 3 node processes: an agent registers a durable
reminder (every ``--every`` seconds) whose table lives on one node while the agent
lives on another; once two ticks arrived, the table's node is killed with SIGKILL at a
random point between two ticks. Two figures per trial:

- **lag**: from the kill until the next tick arrives at the agent (failure detection,
  the partition's election on a survivor, re-arming, delivery);
- **late by**: how much later than its schedule that tick arrived (ticks are due at
  ``first + n * every``; ticks that came due during the outage are folded into the
  newest, which is delivered at once).

The killed node is restarted between trials. Run:
``PYTHONPATH=src python benchmarks/reminder_failover.py [--trials 10] [--every 1]``
(the figures in ``docs/benchmarks.md`` come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Callable

import phoenix_cluster as phx
from phoenix_cluster._agents.reminders import TABLE_KIND, table_key
from phoenix_cluster.testing import LocalCluster

RETRYABLE = (phx.IndefiniteError, phx.NotLeader, phx.NoQuorum)


class BenchBeeper(phx.Agent, kind="bench.reminder_beeper"):
    """Records each tick that arrives: ``[tick, wall-clock time]``."""

    arrivals: list[tuple[int, float]]

    def __init__(self) -> None:
        self.arrivals = []

    async def start(self, every: float) -> None:
        await self.remind("beep", every=every, first=every)

    async def stop(self) -> bool:
        return await self.cancel_reminder("beep")

    async def read(self) -> list[tuple[int, float]]:
        return self.arrivals

    async def on_reminder(self, name: str, tick: int) -> None:
        self.arrivals.append((tick, time.time()))


async def _read(beeper: phx.AgentRef) -> list[tuple[int, float]]:
    while True:
        try:
            return [(int(t), float(at)) for t, at in await beeper.read()]
        except RETRYABLE:
            await asyncio.sleep(0.05)


async def _poll(beeper: phx.AgentRef,
                enough: Callable[[list[tuple[int, float]]], bool]) -> list[tuple[int, float]]:
    """The beeper's arrivals once ``enough`` holds for them (polled every 50 ms, 60 s)."""
    for _ in range(1200):
        arrivals = await _read(beeper)
        if enough(arrivals):
            return arrivals
        await asyncio.sleep(0.05)
    raise RuntimeError("no tick for 60 s")


async def _split_key(client: phx.Node, trial: int) -> tuple[str, str]:
    """A key whose reminder table and agent live on different nodes, and the table's node."""
    for i in range(1000):
        key = f"t{trial}-{i}"
        table = client.ref(TABLE_KIND, table_key(BenchBeeper._phx_spec.name, key))
        holder = await client.where(table)
        if await client.where(client.ref(BenchBeeper, key)) != holder:
            return key, holder
    raise RuntimeError("every key's table lives with its agent")


async def trial(cluster: LocalCluster, client: phx.Node, n: int,
                every: float) -> tuple[float, float, int]:
    key, holder = await _split_key(client, n)
    beeper = client.ref(BenchBeeper, key)
    await beeper.start(every)
    arrivals = await _poll(beeper, lambda a: len(a) >= 2)
    tick0, at0 = arrivals[0]
    await asyncio.sleep(random.uniform(0, every))
    killed_at = time.time()
    index = int(holder.rsplit("-", 1)[1])
    cluster.kill(index)
    arrivals = await _poll(beeper, lambda a: any(at > killed_at for _, at in a))
    tick, at = next(a for a in arrivals if a[1] > killed_at)
    due = at0 + (tick - tick0) * every  # tick 0 arrived on time, give or take a delivery
    await beeper.stop()
    return at - killed_at, at - due, index


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(trials: int, every: float) -> None:
    lags: list[float] = []
    lates: list[float] = []
    load = os.getloadavg()[0]
    async with LocalCluster(3, ["reminder_failover"]) as cluster:
        client = await cluster.client()
        for n in range(trials):
            lag, late, killed = await trial(cluster, client, n, every)
            lags.append(lag)
            lates.append(late)
            print(f"trial {n}: lag {lag:.2f} s, late by {late:.2f} s", flush=True)
            await cluster.restart(killed)
            await cluster.wait_converged()
    print(f"\nreminder firing after kill -9 of its owner, 3 nodes, every {every} s, "
          f"{trials} trials (load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end)")
    for label, values in (("kill -> next tick", lags), ("late by", lates)):
        print(f"  {label:18} p50 {_pct(values, 0.5):.2f} s  p95 {_pct(values, 0.95):.2f} s  "
              f"(min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--every", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.trials, args.every))
