"""Lease failover after kill -9 on a 3-node cluster (p50 / p95 over a few trials).

Two failures, each ``--trials`` times on one ``LocalCluster`` of 3 node processes (the
killed node is restarted between trials):

- **holder killed**: a worker agent holds a lease (renewing it every ttl / 4) on one
  node; the lease's agent lives on another. The worker's node is killed with SIGKILL;
  the figure is the time from the kill (at a random point between two renewals) until a
  client's ``acquire(wait=...)`` gets the lease (with a larger token). It lies between
  3/4 of the ttl and the ttl plus a poll: nobody may take a lease before its holder's
  last renewal has run out.
- **lease agent's node killed**: a client holds the lease with ``coordination.lock``; the
  node hosting the lease's agent is killed; the figure is the time until the agent
  answers again from a survivor with its state (another caller is refused with
  ``LeaseHeld`` naming the holder): failure detection plus failover of the agent.

Run: ``PYTHONPATH=src python benchmarks/lease_failover.py [--trials 5] [--ttl 2]``
(the figures in ``docs/benchmarks.md`` come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import phoenix_cluster as phx
from phoenix_cluster import coordination
from phoenix_cluster.testing import LocalCluster

RETRYABLE = (phx.IndefiniteError, phx.NotLeader, phx.NoQuorum)


class FailoverWorker(phx.Agent, kind="bench.lease_failover_worker", idle_timeout=600):
    """Holds a lease from inside a node process, renewing it with a timer."""

    def __init__(self) -> None:
        self.token = 0

    async def hold(self, name: str, ttl: float) -> int:
        lease = await coordination.acquire(self.node, name, str(self.node.name), ttl=ttl)
        self.set_timer(ttl / 4, self._renew, name, ttl, repeat=True)
        self.token = lease.token
        return lease.token

    async def _renew(self, name: str, ttl: float) -> None:
        await coordination.acquire(self.node, name, str(self.node.name), ttl=ttl)


def _index(node_name: str) -> int:
    return int(node_name.rsplit("-", 1)[1])


async def _lease_hosted_off(client: phx.Node, prefix: str, node_name: str) -> str:
    for i in range(1000):
        name = f"{prefix}-{i}"
        if await client.where(client.ref(coordination.LeaseAgent, name)) != node_name:
            return name
    raise RuntimeError(f"no lease name off {node_name}")


async def holder_killed(cluster: LocalCluster, client: phx.Node, trial: int,
                        ttl: float) -> tuple[float, int]:
    worker = client.ref(FailoverWorker, f"worker-{trial}")
    worker_node = await client.where(worker)
    name = await _lease_hosted_off(client, f"held-{trial}", worker_node)
    token = await worker.hold(name, ttl)
    # the kill falls at a random point between two renewals, after a few of them
    await asyncio.sleep(random.uniform(ttl, 2 * ttl))
    killed_at = time.monotonic()
    cluster.kill(_index(worker_node))
    while True:
        try:
            lease = await coordination.acquire(client, name, "next", ttl=ttl, wait=60.0)
            break
        except RETRYABLE:
            continue
    took = time.monotonic() - killed_at
    if lease.token <= token:
        raise AssertionError(f"token {lease.token} after {token}")
    await lease.release()
    return took, _index(worker_node)


async def agent_node_killed(cluster: LocalCluster, client: phx.Node, trial: int,
                            ttl: float) -> tuple[float, int]:
    name = f"served-{trial}"
    host = await client.where(client.ref(coordination.LeaseAgent, name))
    async with coordination.lock(client, name, "holder", ttl=max(ttl, 8.0)) as lease:
        killed_at = time.monotonic()
        cluster.kill(_index(host))
        while True:
            try:
                await coordination.acquire(client, name, "other", ttl=ttl)
            except phx.LeaseHeld as held:
                if held.holders != ["holder"]:
                    raise AssertionError(f"state lost: held by {held.holders}") from None
                break
            except RETRYABLE:
                continue
            raise AssertionError("the lease was granted twice")
        took = time.monotonic() - killed_at
        if not lease.valid:
            raise AssertionError("the holder lost its lease in the failover")
    return took, _index(host)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(trials: int, ttl: float) -> None:
    figures: dict[str, list[float]] = {"holder killed": [], "lease agent's node killed": []}
    async with LocalCluster(3, ["lease_failover"]) as cluster:
        client = await cluster.client()
        for trial in range(trials):
            for label, scenario in (("holder killed", holder_killed),
                                    ("lease agent's node killed", agent_node_killed)):
                took, killed = await scenario(cluster, client, trial, ttl)
                figures[label].append(took)
                print(f"trial {trial}: {label}: {took:.2f} s", flush=True)
                await cluster.restart(killed)
                await cluster.wait_converged()
    print(f"\nlease failover after kill -9, 3 nodes, ttl {ttl} s, {trials} trials")
    for label, values in figures.items():
        print(f"  {label:28} p50 {_pct(values, 0.5):.2f} s  p95 {_pct(values, 0.95):.2f} s  "
              f"(min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--ttl", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(main(args.trials, args.ttl))
