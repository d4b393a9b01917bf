"""Task allocation, contract-net style: announce a task to contractors, collect their
bids within a timeout, award it to the cheapest, durably and once.

``allocate(node, task_id, task, contractors)`` calls ``bid(task_id=, task=)`` on every
contractor at once; each answers a cost (lower is better) or ``None`` to decline, and
one that fails or does not answer within ``timeout`` counts as declining. The cheapest
bid is recorded in the task's :class:`AwardAgent` (first record wins, committed to a
quorum), then the winner is told with ``award(task_id=, task=)``; a winner that refuses
(``False`` or an error) is struck off and the next bid is tried. Allocating a task id
again returns the recorded winner (and tells it again: ``award`` must accept a repeat),
so two allocators never award one task to two contractors.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from .._agents.agent import Agent
from .._agents.ref import AgentRef
from ..errors import DefiniteError, NoBids, PhoenixError
from .leases import Refs, check_name, check_seconds

__all__ = ["Award", "AwardAgent", "allocate"]


class Award(msgspec.Struct):
    """Who got the task: the contractor's kind and key, its bid, and how many bids
    came in (0 when the task had been awarded before this call)."""

    task_id: str
    kind: str
    key: str
    cost: float
    bids: int


class AwardAgent(Agent, kind="phoenix.coordination.award", idle_timeout=600):
    """The award of one task (the key): empty until the first allocator records one."""

    def __init__(self) -> None:
        self.winner: list[Any] = []   # [kind, key, cost] once awarded
        self.refused: list[str] = []

    async def record(self, kind: str, key: str, cost: float) -> list[Any]:
        """Record the award unless one is recorded; return the one that stands."""
        if not self.winner and f"{kind}/{key}" not in self.refused:
            self.winner = [kind, key, cost]
        return self.winner

    async def strike(self, kind: str, key: str) -> None:
        """The recorded winner refused: clear the award and never record it again."""
        self.refused.append(f"{kind}/{key}")
        if self.winner[:2] == [kind, key]:
            self.winner = []

    async def standing(self) -> list[Any]:
        return self.winner


async def _bid(ref: AgentRef, method: str, task_id: str, task: dict[str, Any],
               timeout: float) -> float | None:
    try:
        async with asyncio.timeout(timeout):
            cost = await getattr(ref.options(timeout=timeout), method)(task_id=task_id,
                                                                       task=task)
    except (PhoenixError, TimeoutError):
        return None  # a contractor that fails or is late declines
    if cost is None or isinstance(cost, bool) or not isinstance(cost, (int, float)):
        return None
    return float(cost)


async def _tell(node: Refs, kind: str, key: str, method: str, task_id: str,
                task: dict[str, Any]) -> bool:
    """Tell the winner; ``False`` if it refused (definitely)."""
    try:
        accepted = await getattr(node.ref(kind, key), method)(task_id=task_id, task=task)
    except DefiniteError:
        return False
    return accepted is not False


async def allocate(node: Refs, task_id: str, task: dict[str, Any],
                   contractors: list[AgentRef], *, bid: str = "bid", award: str = "award",
                   timeout: float = 1.0) -> Award:
    """Award ``task`` to the contractor with the lowest bid.

    Args:
        node: the node (or an agent's ``self.node``) to call from.
        task_id: names the task; allocating it again returns the same winner.
        task: what the contractors see (msgpack-serializable).
        contractors: references to the agents that may bid.
        bid, award: the contractors' methods: ``bid(task_id=, task=)`` returns a cost
            or ``None``; ``award(task_id=, task=)`` accepts (anything but ``False``),
            and must accept a repeat of the same task id.
        timeout: seconds to wait for bids.

    Raises:
        NoBids: no contractor bid in time, or every bidder refused the award.
        CallTimeout, NodeUnavailable: telling the winner had an unknown outcome; the
            award stands, and allocating the task id again tells it again.
    """
    check_name("task_id", task_id)
    wait = check_seconds("timeout", timeout)
    awards = node.ref(AwardAgent, task_id)
    standing = await awards.standing()
    if standing:
        kind, key, cost = standing
        if await _tell(node, kind, key, award, task_id, task):
            return Award(task_id, kind, key, cost, 0)
        await awards.strike(kind, key)
    costs = await asyncio.gather(*(_bid(ref, bid, task_id, task, wait) for ref in contractors))
    bids = sorted((c, ref.kind, ref.key) for c, ref in zip(costs, contractors, strict=True)
                  if c is not None)
    for offer, offer_kind, offer_key in bids:
        recorded = await awards.record(offer_kind, offer_key, offer)
        if not recorded:
            continue  # struck off before: a refusal stands
        kind, key, cost = recorded
        if await _tell(node, kind, key, award, task_id, task):
            return Award(task_id, kind, key, cost, len(bids))
        await awards.strike(kind, key)
    raise NoBids(f"task {task_id!r}: {len(bids)} of {len(contractors)} contractors bid "
                 f"within {wait} s, and none took the award")
