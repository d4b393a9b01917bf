"""Contract-net task allocation on one embedded node: the cheapest bid wins, decliners,
failures and late bidders are passed over, a refusal goes to the next bid, and a task
is awarded once however often it is allocated."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

import phoenix_cluster as phx
from phoenix_cluster import coordination


class Worker(phx.Agent, kind="tests.coordination.worker"):
    """Bids its key's cost from a table; takes each awarded task once."""

    costs: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.tasks: list[str] = []
        self.refuse = False

    async def set_refuse(self, refuse: bool) -> None:
        self.refuse = refuse

    async def bid(self, task_id: str, task: dict[str, Any]) -> float | None:
        plan = Worker.costs[self.key]
        if plan == "fail":
            raise RuntimeError("cannot price it")
        if plan == "slow":
            await asyncio.sleep(1.0)  # longer than the allocators' timeout
            return 0.0
        return None if plan is None else float(plan) * task["size"]

    async def award(self, task_id: str, task: dict[str, Any]) -> bool:
        if self.refuse:
            return False
        if task_id not in self.tasks:
            self.tasks.append(task_id)
        return True

    async def taken(self) -> list[str]:
        return self.tasks


@pytest.fixture(autouse=True)
def costs() -> None:
    Worker.costs = {"cheap": 1, "dear": 3, "decline": None, "broken": "fail", "late": "slow",
                    "mid": 2}


def refs(node: phx.Node, *keys: str) -> list[phx.AgentRef]:
    return [node.ref(Worker, k) for k in keys]


async def test_the_cheapest_bid_wins_and_failing_or_late_bidders_are_passed_over() -> None:
    async with phx.Node() as node:
        award = await coordination.allocate(
            node, "job-1", {"size": 2},
            refs(node, "dear", "decline", "broken", "late", "cheap"), timeout=0.3)
        assert (award.key, award.cost, award.bids) == ("cheap", 2.0, 2)
        assert await node.ref(Worker, "cheap").taken() == ["job-1"]
        again = await coordination.allocate(node, "job-1", {"size": 2},
                                            refs(node, "mid"), timeout=0.3)
        assert (again.key, again.bids) == ("cheap", 0)    # awarded once, told again
        assert await node.ref(Worker, "cheap").taken() == ["job-1"]
        assert await node.ref(Worker, "mid").taken() == []


async def test_a_refused_award_goes_to_the_next_bid() -> None:
    async with phx.Node() as node:
        await node.ref(Worker, "cheap").set_refuse(True)
        award = await coordination.allocate(node, "job-2", {"size": 1},
                                            refs(node, "cheap", "dear", "mid"))
        assert award.key == "mid"
        await node.ref(Worker, "cheap").set_refuse(False)
        again = await coordination.allocate(node, "job-2", {"size": 1},
                                            refs(node, "cheap"))
        assert again.key == "mid"                          # the refusal stands


async def test_concurrent_allocators_award_a_task_to_one_contractor() -> None:
    async with phx.Node() as node:
        awards = await asyncio.gather(*(
            coordination.allocate(node, "job-3", {"size": 1}, refs(node, *keys))
            for keys in (("dear", "mid"), ("mid", "cheap"), ("cheap",), ("dear",))))
        assert len({a.key for a in awards}) == 1
        takers = [k for k in ("cheap", "dear", "mid")
                  if await node.ref(Worker, k).taken() == ["job-3"]]
        assert takers == [awards[0].key]


async def test_no_bids_is_a_typed_definite_error() -> None:
    async with phx.Node() as node:
        with pytest.raises(phx.NoBids, match="0 of 2") as none:
            await coordination.allocate(node, "job-4", {"size": 1},
                                        refs(node, "decline", "broken"), timeout=0.3)
        assert none.value.definite
        with pytest.raises(phx.ConfigError):
            await coordination.allocate(node, "", {}, [])
