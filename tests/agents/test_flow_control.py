"""Flow control of casts on one node: a cast waits for mailbox room; nothing is lost silently."""

from __future__ import annotations

import asyncio

import pytest

import phoenix_cluster as phx
from phoenix_cluster.testing import wait_until
from phoenix_cluster.testing._local_cluster import DROPPED_LINE


class Tally(phx.Agent, kind="tests.flow.tally"):
    def __init__(self) -> None:
        self.count = 0

    async def bump(self) -> None:
        self.count += 1

    async def read(self) -> int:
        return self.count


class Valve(phx.Agent, kind="tests.flow.valve", mailbox_limit=3):
    gates: dict[str, asyncio.Event] = {}  # noqa: RUF012 - test plumbing, not state

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def take(self, n: int) -> None:
        await Valve.gates.setdefault(self.key, asyncio.Event()).wait()
        self.seen.append(n)

    async def seen_list(self) -> list[int]:
        return self.seen


async def test_a_plain_cast_loop_is_paced_not_refused() -> None:
    """50,000 casts to one agent at the default mailbox limit (10,000): all accepted."""
    async with phx.Node() as node:
        ref = node.ref(Tally, "loop")
        for _ in range(50_000):
            await ref.bump.cast()
        assert await ref.read() == 50_000


async def test_a_cast_to_a_full_mailbox_waits_for_room_in_order() -> None:
    async with phx.Node() as node:
        ref = node.ref(Valve, "wait")
        for n in range(4):  # one running, three queued: the mailbox is full
            await ref.take.cast(n)
        await wait_until(lambda: node.statistics().agents.queued_messages == 3)
        sender = asyncio.ensure_future(ref.take.cast(4))
        await asyncio.sleep(0.05)
        assert not sender.done()  # waiting for room, not refused
        caller = asyncio.ensure_future(ref.take(5))  # a call waits for room as well
        await asyncio.sleep(0.05)
        assert not caller.done()
        Valve.gates["wait"].set()
        await sender
        await caller
        assert await ref.seen_list() == [0, 1, 2, 3, 4, 5]


async def test_a_cast_gives_up_with_overloaded_after_its_timeout() -> None:
    async with phx.Node() as node:
        ref = node.ref(Valve, "stuck")
        for n in range(4):
            await ref.take.cast(n)
        await wait_until(lambda: node.statistics().agents.queued_messages == 3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(phx.Overloaded, match=r"stayed full .* for 0\.2s") as info:
            await ref.options(timeout=0.2).take.cast(4)
        assert info.value.definite
        assert loop.time() - started >= 0.19
        with pytest.raises(phx.Overloaded, match=r"stayed full .* for 0\.1s"):
            await ref.options(timeout=0.1).take(5)
        Valve.gates["stuck"].set()
        assert await ref.seen_list() == [0, 1, 2, 3]  # the refused cast never ran


@pytest.mark.drops_messages
async def test_casts_still_queued_when_the_node_stops_are_counted_as_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dropped: list[tuple[float, dict[str, object]]] = []
    phx.telemetry.attach("flow-drops", [phx.telemetry.MESSAGE_DROPPED],
                         lambda _e, m, md: dropped.append((m["messages"], dict(md))))
    try:
        async with phx.Node(shutdown_timeout_s=0.05) as node:
            ref = node.ref(Valve, "stopping")
            for n in range(4):
                await ref.take.cast(n)
            await wait_until(lambda: node.statistics().agents.queued_messages == 3)
    finally:
        phx.telemetry.detach("flow-drops")
    assert dropped == [(3.0, {"node": node.name, "reason": "node_stopped",
                              "kind": "tests.flow.valve", "key": "stopping",
                              "method": "take"})]
    # One log line, the one LocalCluster's ClusterNode.dropped_messages() looks for.
    lines = [r.getMessage() for r in caplog.records if DROPPED_LINE.search(r.getMessage())]
    assert len(lines) == 1 and "tests.flow.valve/stopping.take (node_stopped)" in lines[0]


async def test_an_unacknowledged_cast_never_waits() -> None:
    async with phx.Node() as node:
        ref = node.ref(Valve, "nowait")
        await ref.take.cast_unacknowledged(0)
        await wait_until(lambda: node.statistics().agents.busy_agents == 1)
        await wait_until(lambda: node.statistics().agents.queued_messages == 0)
        for n in range(1, 4):
            await ref.take.cast_unacknowledged(n)
        await wait_until(lambda: node.statistics().agents.queued_messages == 3)
        with pytest.raises(phx.Overloaded, match="is full"):
            await ref.take.cast_unacknowledged(4)  # refused at once: it never waits
        Valve.gates["nowait"].set()
        assert await ref.seen_list() == [0, 1, 2, 3]
