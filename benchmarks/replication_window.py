"""Quorum commits per (virtual) second with one or two batches in flight per replica.

Three replicators in one process on the memory network with a one-way latency, under
:class:`~phoenix_cluster._replication.simulation.SimClock`: time moves only when every
task waits, so the figures count round trips and the writes waiting for them, not CPU,
and the load of the machine does not enter. ``--writers`` agents write sequentially on
the leader, their starts spread over one round trip (as calls reaching the leader at
different moments); each configuration runs on a fresh event loop. Each line also
counts the event loop's turns per commit (every task wake-up and callback of the three
nodes together) and runs once with batches leaving from the end of the loop turn and
answered from the delivery (``direct``, as on a node's open connections) and once
through a pump task per batch (``pump``, the path before; a transport with no
``start_request`` still takes it).

Run: ``PYTHONPATH=src python benchmarks/replication_window.py`` (a few seconds).
"""

from __future__ import annotations

import argparse
import asyncio

from phoenix_cluster._replication.service import ReplicationSettings
from phoenix_cluster._replication.simulation import ReplicaCluster, SimClock
from phoenix_cluster._replication.types import Record


async def _run(window: int, writers: int, latency_s: float, commits: int,
               direct: bool) -> tuple[float, float, float, float, float]:
    """Commits per virtual second, p50 and p95 in ms, accepts per batch, loop turns
    per commit."""
    clock = SimClock()
    cluster = ReplicaCluster(clock, latency_s=latency_s, direct=direct,
                             settings=ReplicationSettings(eager=False,
                                                          batches_in_flight=window))
    await cluster.start_all("abc")
    leader = cluster.nodes["a"]
    keys = [f"k{i}" for i in range(writers)]
    for key in keys:
        await leader.load("bench", key)
    before = leader.statistics()
    took: list[float] = []

    async def writer(i: int) -> None:
        await clock.sleep(i * 4 * latency_s / writers)
        for _ in range(commits // writers):
            started = clock.monotonic()
            await leader.commit("bench", keys[i], Record(b"x" * 100))
            took.append(clock.monotonic() - started)

    loop = asyncio.get_running_loop()
    run_once = loop._run_once  # type: ignore[attr-defined]
    turns = 0

    def counted() -> None:
        nonlocal turns
        turns += 1
        run_once()

    loop._run_once = counted  # type: ignore[attr-defined]
    started = clock.monotonic()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    elapsed = clock.monotonic() - started
    loop._run_once = run_once  # type: ignore[attr-defined]
    after = leader.statistics()
    await cluster.aclose()
    took.sort()
    per_batch = (after.items_sent - before.items_sent) / (after.batches_sent - before.batches_sent)
    return (len(took) / elapsed, took[len(took) // 2] * 1e3,
            took[int(len(took) * 0.95)] * 1e3, per_batch, turns / len(took))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=0.2, help="one way")
    parser.add_argument("--writers", type=int, nargs="+", default=[16, 100, 256])
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paths", nargs="+", choices=["pump", "direct"],
                        default=["pump", "direct"])
    args = parser.parse_args()
    for writers in args.writers:
        for window in args.windows:
            for path in args.paths:
                rate, p50, p95, per_batch, turns = asyncio.run(_run(
                    window, writers, args.latency_ms / 1000, args.commits, path == "direct"))
                print(f"{writers:4d} writers, {window} in flight, {path:6s}: "
                      f"{rate:9,.0f} commits/s, p50 {p50:.2f} ms, p95 {p95:.2f} ms, "
                      f"{per_batch:.1f} accepts per batch, {turns:.2f} loop turns per commit")


if __name__ == "__main__":
    main()
