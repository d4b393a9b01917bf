"""Failure detection and recovery time on a LocalCluster of real node processes.

    python benchmarks/failure_detection.py [--nodes 5] [--trials 5]

Per trial: start the cluster, wait until it converged, SIGKILL one node, then measure
(1) detection: until every survivor's member table shows it dead and no suspects left,
(2) recovery: until a client can call every one of 200 keys again (the dead node's keys
re-homed on the survivors). Prints each trial and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster


class Probe(phx.Agent, kind="bench.probe"):
    async def ping(self) -> str:
        return str(self.node.name)


async def trial(nodes: int) -> tuple[float, float]:
    async with LocalCluster(nodes=nodes, imports=["benchmarks.failure_detection"]) as cluster:
        client = await cluster.client(listen=None)
        keys = [f"k{i}" for i in range(200)]
        await asyncio.gather(*(client.ref(Probe, k).ping() for k in keys))
        victim = nodes - 1
        cluster.kill(victim)
        killed = time.perf_counter()
        await cluster.wait(victim)
        await cluster.wait_converged(timeout_s=60)
        detected = time.perf_counter() - killed
        while True:
            results = await asyncio.gather(
                *(client.ref(Probe, k).options(timeout=1).ping() for k in keys),
                return_exceptions=True)
            if not any(isinstance(r, BaseException) for r in results):
                break
            await asyncio.sleep(0.05)
        recovered = time.perf_counter() - killed
        return detected, recovered


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    detections, recoveries = [], []
    for i in range(args.trials):
        detected, recovered = await trial(args.nodes)
        detections.append(detected)
        recoveries.append(recovered)
        print(f"trial {i + 1}: detected in {detected:.2f} s, every key answers after "
              f"{recovered:.2f} s")
    print(f"median over {args.trials} trials, {args.nodes} nodes: detection "
          f"{statistics.median(detections):.2f} s (max {max(detections):.2f}), recovery "
          f"{statistics.median(recoveries):.2f} s (max {max(recoveries):.2f})")


if __name__ == "__main__":
    asyncio.run(main())
