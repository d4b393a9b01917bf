"""Durable reminders (``_agents/reminders.py``) on whole nodes in one process, in virtual
time: ticks in order, cancel, a passivated agent activated by its tick, a failing
handler retried on the next tick, bad registrations, and firing again after the node
holding the reminder is killed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from shared_cluster import SharedCluster as Shared
from shared_cluster import shared_cluster

import phoenix_cluster as phx
from phoenix_cluster._agents.reminders import TABLE_KIND, table_key
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual, wait_for

TICKS: dict[str, list[tuple[str, int, str]]] = {}
"""key -> (reminder name, tick, node that ran it), in order of arrival (one process)."""

FAILURES: dict[str, int] = {}
"""key -> ticks left to refuse (outside the agent's state, which a failure rolls back)."""


class Alarm(phx.Agent, kind="tests.reminders.alarm"):
    def __init__(self) -> None:
        self.seen = 0

    async def start(self, name: str, every: float, first: float) -> None:
        await self.remind(name, every=every, first=first)

    async def stop(self, name: str) -> bool:
        return await self.cancel_reminder(name)

    async def read(self) -> int:
        return self.seen

    async def on_reminder(self, name: str, tick: int) -> None:
        TICKS.setdefault(self.key, []).append((name, tick, str(self.node.name)))
        if FAILURES.get(self.key):
            FAILURES[self.key] -= 1
            self.seen += 1000  # rolled back with the failure
            raise RuntimeError(f"tick {tick} refused")
        self.seen += 1


class Silent(phx.Agent, kind="tests.reminders.silent"):
    async def start(self) -> None:
        await self.remind("x", every=1.0)


class Worker(phx.Agent, kind="tests.reminders.worker", placement="stateless"):
    async def start(self) -> None:
        await self.remind("x", every=1.0)

    async def on_reminder(self, name: str, tick: int) -> None:
        pass


def ticks(key: str, name: str = "r") -> list[int]:
    return [t for n, t, _ in TICKS.get(key, []) if n == name]


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    yield from shared_cluster(3)


def test_a_reminder_ticks_in_order_until_cancelled(shared: Shared) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        alarm = n1.ref(Alarm, "ordered")
        await alarm.start("r", 1.0, 0.5)
        await wait_for(lambda: len(ticks("ordered")) >= 3, 10.0, what="three ticks")
        assert ticks("ordered")[:3] == [0, 1, 2]
        assert await alarm.stop("r") is True
        seen = len(ticks("ordered"))
        await asyncio.sleep(3.0)
        assert len(ticks("ordered")) <= seen + 1  # at most one tick already on its way
        assert await alarm.stop("r") is False

    shared.run(main)


def test_a_passivated_agent_is_activated_by_its_tick(shared: Shared) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        alarm = n1.ref(Alarm, "sleepy")
        await alarm.start("r", 2.0, 2.0)
        host = cluster.node(await n1.where(alarm))
        act = host._runtime.activation(Alarm._phx_spec, "sleepy")
        assert act is not None
        host._runtime.passivate(act, reason="test")
        assert host._runtime.activation(Alarm._phx_spec, "sleepy") is None
        await wait_for(lambda: len(ticks("sleepy")) >= 1, 10.0, what="a tick")
        assert host._runtime.activation(Alarm._phx_spec, "sleepy") is not None
        assert await alarm.read() == 1

    shared.run(main)


def test_a_handler_that_raises_is_logged_rolled_back_and_runs_next_tick(
        shared: Shared, caplog: pytest.LogCaptureFixture) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        alarm = n1.ref(Alarm, "flaky")
        FAILURES["flaky"] = 1
        await alarm.start("r", 1.0, 1.0)
        await wait_for(lambda: len(ticks("flaky")) >= 2, 10.0, what="two ticks")
        assert ticks("flaky")[:2] == [0, 1]  # tick 0 raised; tick 1 came as planned
        assert await alarm.read() == 1  # the failed tick's change was rolled back
        await alarm.stop("r")

    with caplog.at_level(logging.WARNING, logger="phoenix_cluster.agents"):
        shared.run(main)
    assert any("reminder 'r' of tests.reminders.alarm/flaky (tick 0) failed" in r.getMessage()
               and "tick 0 refused" in r.getMessage() for r in caplog.records)


def test_bad_registrations_fail_with_a_typed_error_and_store_nothing(shared: Shared) -> None:
    async def main(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        with pytest.raises(phx.AgentError, match="no on_reminder"):
            await n1.ref(Silent, "s").start()
        with pytest.raises(phx.AgentError, match="is a stateless worker"):
            await n1.ref(Worker, "w").start()
        alarm = n1.ref(Alarm, "bad")
        with pytest.raises(phx.AgentError, match="every must be at least"):
            await alarm.start("r", 0.0, 1.0)
        with pytest.raises(phx.AgentError, match="first must be >= 0"):
            await alarm.start("r", 1.0, -1.0)
        table = n1.ref(TABLE_KIND, table_key("tests.reminders.alarm", "bad"))
        assert await table.names() == []

    shared.run(main)


def test_a_reminder_fires_again_after_its_holder_is_killed() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            # A reminder whose table lives on n3, for an agent living elsewhere.
            for i in range(1000):
                key = f"fo{i}"
                table = n1.ref(TABLE_KIND, table_key("tests.reminders.alarm", key))
                if await n1.where(table) == "n3":
                    break
            alarm = n1.ref(Alarm, key)
            await alarm.start("r", 1.0, 1.0)
            await wait_for(lambda: len(ticks(key)) >= 2, 10.0, what="two ticks")
            cluster.kill("n3")
            before = len(ticks(key))
            await wait_for(lambda: len(ticks(key)) >= before + 3, 30.0,
                           what="ticks after the kill")
            after = ticks(key)[before:]
            assert after == sorted(after)  # in order; a duplicate at most at the switch
            assert len(set(after)) >= 2
            assert await n1.where(table) in ("n1", "n2")
            await alarm.stop("r")

    run_virtual(main())
