"""The agent kinds that hold coordination state: one agent per lease, semaphore or
barrier name.

They are ordinary fenced agents (``consistency="fenced"``, ``durability="quorum"``):
every grant, renewal, release and arrival is committed to a quorum of the name's
replicas before its answer leaves, so a token, once issued, survives the hosting node's
death and is never issued again. Their handlers never wait: a caller that has to wait
(for a lease to free up, for a barrier to fill) polls from its own side
(``leases.py``, ``barriers.py``), so one name's agent never blocks on a caller.

Expiry runs on the hosting node's monotonic clock; on activation (a failover, a
migration, a reactivation) every live lease's ttl starts again, because the expiries
were measured on another clock (:meth:`PermitTable.restart_clocks`).
"""

from __future__ import annotations

import time

from .._agents.agent import Agent
from .barrier_state import Arrival, BarrierState
from .permits import Outcome, PermitTable

__all__ = ["BarrierAgent", "LeaseAgent", "SemaphoreAgent"]

# Coordination agents are small and consulted rarely: keep them active long enough that
# a lease's ttl is not restarted by a passivation between two renewals.
_IDLE_TIMEOUT_S = 600.0


def _now() -> float:
    return time.monotonic()


class _PermitHandlers:
    """The messages leases and semaphores share (a mixin: not a kind of its own)."""

    table: PermitTable

    def __init__(self) -> None:
        self.table = PermitTable()

    async def on_activate(self) -> None:
        self.table.restart_clocks(_now())

    async def renew(self, holder: str, token: int, ttl_s: float) -> Outcome:
        return self.table.renew(holder, token, ttl_s, _now())

    async def release(self, holder: str, token: int) -> Outcome:
        return self.table.release(holder, token, _now())

    async def status(self) -> Outcome:
        return self.table.status(_now())


class LeaseAgent(_PermitHandlers, Agent, kind="phoenix.coordination.lease",
                 idle_timeout=_IDLE_TIMEOUT_S):
    """One lease (lock) per key: one holder at a time, a fencing token per grant."""

    async def acquire(self, holder: str, ttl_s: float) -> Outcome:
        return self.table.acquire(holder, 1, ttl_s, _now())


class SemaphoreAgent(_PermitHandlers, Agent, kind="phoenix.coordination.semaphore",
                     idle_timeout=_IDLE_TIMEOUT_S):
    """One counting semaphore per key: up to ``limit`` holders, each with a token."""

    async def acquire(self, holder: str, limit: int, ttl_s: float) -> Outcome:
        return self.table.acquire(holder, limit, ttl_s, _now())


class BarrierAgent(Agent, kind="phoenix.coordination.barrier", idle_timeout=_IDLE_TIMEOUT_S):
    """One reusable barrier per key."""

    barrier: BarrierState

    def __init__(self) -> None:
        self.barrier = BarrierState()

    async def arrive(self, party: str, parties: int) -> Arrival:
        return self.barrier.arrive(party, parties)

    async def leave(self, party: str, generation: int) -> Arrival:
        return self.barrier.leave(party, generation)

    async def poll(self, generation: int) -> Arrival:
        return self.barrier.poll(generation)
