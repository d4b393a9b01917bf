"""What an idle cluster costs: CPU per node and bytes per second of cluster traffic.

Starts a 3-node ``LocalCluster``, activates ``--agents`` agents of a replicated kind (the
default durability, ``quorum``: each change is on a majority of 3 replicas) through a
client node in this process, one update each, then lets the cluster sit idle: after
``--settle`` seconds it measures, over ``--seconds``:

- CPU per node: user + system time of each ``phx node`` process (``/proc``), as a share
  of one core: gossip, failure detection, heartbeats, anti-entropy, timers;
- cluster traffic: bytes each node sent over its TCP connections (every frame, from the
  transport's counters) plus its gossip datagrams (the membership counters), read
  through a probe agent on each node before and after;
- memory: the resident set of each node before and after the agents were activated;
  its growth summed over the 3 nodes per agent is what an idle replicated agent costs
  the cluster, its replicas' copies included.

Run: ``PYTHONPATH=src python benchmarks/idle_overhead.py --agents 10000`` (the figures in
docs/benchmarks.md come from it). The roadmap's budget: < 5 % of a core per node and
< 10 MB/s of cluster traffic with 100,000 agents per node.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import phoenix_cluster as phx
from phoenix_cluster._cli.bench_agents import BenchQuorum
from phoenix_cluster.testing import LocalCluster


class TrafficProbe(phx.Agent, kind="bench.idle.probe", durability="none"):
    """Reads its node's traffic counters (not replicated: probing adds no commits)."""

    async def sent(self) -> dict[str, Any]:
        node: Any = self.node
        transport = node._transport  # a benchmark reads the node's own counters
        connections = transport.connections() if hasattr(transport, "connections") else []
        tcp = sum(c.statistics().bytes_sent for c in connections)
        gossip = node._membership.statistics().bytes_sent
        return {"node": str(node.name), "tcp": tcp, "gossip": gossip}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _probes(client: phx.Node, names: list[str]) -> dict[str, phx.AgentRef]:
    """One probe key on each node (keys are placed by hash)."""
    found: dict[str, phx.AgentRef] = {}
    for i in range(10_000):
        ref = client.ref(TrafficProbe, f"probe-{i}")
        where = (await ref.sent())["node"]
        found.setdefault(where, ref)
        if len(found) == len(names):
            return found
    raise RuntimeError(f"probes reached {sorted(found)} of {names}")


async def _sent(probes: dict[str, phx.AgentRef]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, ref in probes.items():
        s = await ref.sent()
        out[name] = s["tcp"] + s["gossip"]
    return out


async def main(args: argparse.Namespace) -> None:
    async with LocalCluster(nodes=3, imports=("idle_overhead",
                                              "phoenix_cluster._cli.bench_agents")) as cluster:
        client = await cluster.client()
        names = [n.name for n in cluster.nodes]
        pids = {n.name: n.process.pid for n in cluster.nodes if n.process is not None}
        rss_before = {name: _rss(pid) for name, pid in pids.items()}
        started = time.monotonic()
        gate = asyncio.Semaphore(256)

        async def touch(i: int) -> None:
            async with gate:
                await client.ref(BenchQuorum, f"idle-{i}").inc(1)

        await asyncio.gather(*(touch(i) for i in range(args.agents)))
        activation_s = time.monotonic() - started
        probes = await _probes(client, names)
        await asyncio.sleep(args.settle)
        rss_after = {name: _rss(pid) for name, pid in pids.items()}
        cpu0 = {name: _cpu_s(pid) for name, pid in pids.items()}
        sent0 = await _sent(probes)
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        cpu1 = {name: _cpu_s(pid) for name, pid in pids.items()}
        sent1 = await _sent(probes)
    print(f"3 nodes, {args.agents:,} replicated agents in all ({args.agents / 3:,.0f} per "
          f"node as their primary, 3 replicas each), activated in {activation_s:.1f} s "
          f"({args.agents / activation_s:,.0f}/s through one client)")
    print(f"idle for {elapsed:.0f} s after {args.settle:.0f} s of settling:")
    for name in names:
        print(f"  {name}: {100 * (cpu1[name] - cpu0[name]) / elapsed:.2f} % of a core, "
              f"{(sent1[name] - sent0[name]) / elapsed / 1024:,.1f} KiB/s sent, "
              f"RSS {rss_before[name] / 2**20:,.0f} -> {rss_after[name] / 2**20:,.0f} MiB")
    total = sum(sent1[n] - sent0[n] for n in names) / elapsed
    grown = sum(rss_after[n] - rss_before[n] for n in names)
    print(f"cluster traffic {total / 1024:,.1f} KiB/s; memory per idle replicated agent "
          f"(3 replicas, RSS growth of the 3 nodes) {grown / args.agents:,.0f} B")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
