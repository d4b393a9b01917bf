"""Leader election per name, on top of a lease: the leader is the lease's holder, and
its term is the lease's fencing token.

Tokens are issued once each and only ever grow, so there is at most one leader per
term, and a later leader's term is larger: a leader hands its term to the resources it
writes to (:class:`~.leases.FencedResource`) and a deposed leader is refused there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable

from ..errors import IndefiniteError, LeaseHeld, NoQuorum, NotHolder, NotLeader, Overloaded
from .leases import Lease, Refs, acquire, check_name, check_seconds, keep_renewed, lock

__all__ = ["LeaderElection", "elect"]

Callback = Callable[[int], Awaitable[None] | None]

_RETRY_S = 0.2


def elect(node: Refs, name: str, candidate: str, *, ttl: float = 10.0,
          margin: float | None = None) -> contextlib.AbstractAsyncContextManager[Lease]:
    """Wait until ``candidate`` leads ``name``, lead for the ``async with`` block, then
    step down. The lease is renewed in the background; its ``token`` is the term, and
    ``lease.lost`` is set if leadership is lost before the block ends::

        async with coordination.elect(node, "scheduler", "worker-1") as term:
            await run_scheduler(fenced_by=term.token)
    """
    return lock(node, name, candidate, ttl=ttl, wait=None, margin=margin)


class LeaderElection:
    """A candidate that campaigns for ``name`` until stopped.

    :meth:`run` waits to be elected, calls ``on_elected(term)``, renews the lease while
    it leads, calls ``on_lost(term)`` when leadership ends (lost or given up at stop),
    and campaigns again. Callbacks may be plain or ``async`` functions; a callback that
    raises ends :meth:`run` with its exception (after ``on_lost`` for an elected one).

    Attributes:
        term: the current term while leading, else ``None``.
    """

    def __init__(self, node: Refs, name: str, candidate: str, *, ttl: float = 10.0,
                 margin: float | None = None, on_elected: Callback | None = None,
                 on_lost: Callback | None = None) -> None:
        self._node = node
        self.name = check_name("name", name)
        self.candidate = check_name("candidate", candidate)
        self.ttl = check_seconds("ttl", ttl)
        self.margin = margin
        self._on_elected = on_elected
        self._on_lost = on_lost
        self.term: int | None = None

    def __repr__(self) -> str:
        state = f"leading term {self.term}" if self.term is not None else "following"
        return f"<LeaderElection {self.name!r} {self.candidate!r} {state}>"

    @property
    def is_leader(self) -> bool:
        return self.term is not None

    async def run(self) -> None:
        """Campaign, lead, and campaign again, until cancelled (cancel the task to stop
        it: it releases the lease, so another candidate takes over at once)."""
        while True:
            lease = await self._campaign()
            await self._lead(lease)

    async def _campaign(self) -> Lease:
        while True:
            try:
                return await acquire(self._node, self.name, self.candidate, ttl=self.ttl,
                                     wait=self.ttl, margin=self.margin)
            except LeaseHeld:
                continue
            except (IndefiniteError, NotLeader, NoQuorum, Overloaded):
                await asyncio.sleep(_RETRY_S)  # the lease's node is failing over: ask again

    async def _lead(self, lease: Lease) -> None:
        self.term = lease.token
        try:
            async with asyncio.TaskGroup() as group:
                renewer = group.create_task(keep_renewed(lease))
                try:
                    await _call(self._on_elected, lease.token)
                    await lease.lost.wait()
                finally:
                    renewer.cancel()
        finally:
            self.term = None
            try:
                if lease.valid:
                    with contextlib.suppress(NotHolder, IndefiniteError):
                        await lease.release()
            finally:
                await _call(self._on_lost, lease.token)


async def _call(callback: Callback | None, term: int) -> None:
    if callback is None:
        return
    result = callback(term)
    if inspect.isawaitable(result):
        await result
