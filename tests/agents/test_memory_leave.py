"""Graceful leaves on the in-memory network, in virtual time: what is in flight to a
leaving node lands elsewhere, in order; a whole cluster stopping at once does not wait
for take-overs that will not come.
"""

from __future__ import annotations

import asyncio

from shared_cluster import key_hosted_by

import phoenix_cluster as phx
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual, wait_for


class Journal(phx.Agent, kind="tests.memory.journal"):
    def __init__(self) -> None:
        self.casts: list[int] = []
        self.calls: list[int] = []

    async def note(self, n: int) -> None:
        self.casts.append(n)

    async def record(self, n: int) -> None:
        self.calls.append(n)

    async def read(self) -> list[list[int]]:
        return [self.casts, self.calls]


def test_casts_and_calls_streaming_to_a_node_that_leaves_gracefully_all_land_in_order() -> None:
    """A leaving node's Goodbye says how many requests it read; the ones after those go
    to the key's next owner instead of failing with an unknown outcome."""
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            keys = [await key_hosted_by(n1, "n3", Journal, prefix=f"leave{i}-")
                    for i in range(6)]
            sent = {key: [0, 0] for key in keys}
            stop = asyncio.Event()

            async def stream(key: str) -> None:
                journal = n1.ref(Journal, key).options(timeout=10)
                counts = sent[key]
                while not stop.is_set():
                    await journal.note.cast(counts[0])
                    counts[0] += 1
                    await journal.record(counts[1])
                    counts[1] += 1
                    await asyncio.sleep(0.005)  # paced, so virtual time moves on

            async with asyncio.TaskGroup() as streams:
                for key in keys:
                    streams.create_task(stream(key))
                await wait_for(lambda: all(c[1] >= 5 for c in sent.values()), 10.0,
                               what="the streams under way")
                await cluster.node("n3").aclose()  # a graceful leave: agents handed off
                before = {key: list(c) for key, c in sent.items()}
                await wait_for(lambda: all(sent[k][1] > before[k][1] + 5 for k in keys),
                               30.0, what="the streams going on after the leave")
                stop.set()
            for key in keys:
                journal = n1.ref(Journal, key)
                assert await n1.where(journal) in ("n1", "n2")
                casts, calls = await journal.read()
                assert calls == list(range(sent[key][1])), key
                assert casts == list(range(sent[key][0])), key

    run_virtual(main())


def test_a_whole_cluster_stopping_at_once_does_not_wait_for_take_overs() -> None:
    """Every member answers the others' take-over asks that it is leaving too, so none
    waits its shutdown budget for a successor that will not come."""
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            for i in range(30):
                await n1.ref(Journal, f"all-{i}").record(i)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.gather(*(node.aclose() for node in cluster.nodes))
            # The shutdown budget is 10 s (half of it for the partitions): before the
            # members told each other they were leaving, each waited 5 s of it.
            assert loop.time() - started < 3.0

    run_virtual(main())
