"""The lease as a referee: an external lease only one side of a partition can hold.

:class:`LeaseProvider` is what a referee must offer (an etcd lease, a Kubernetes
``Lease``: ``lease_etcd.py``, ``lease_k8s.py``). :class:`LeaseReferee` takes it for the
resolver's ``lease`` strategy: for the owner id of this node's side, after the delay the
strategy gives the side (so the larger side asks first), within a timeout; a lease that
failed or took too long counts as lost, and a partition that changed during the delay
calls for a new decision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from phoenix_cluster._foundation.env import Clock

from .strategies import LeaseMajority
from .view import PartitionView

__all__ = ["LeaseProvider", "LeaseReferee"]

_log = logging.getLogger("phoenix_cluster.splitbrain")


class LeaseProvider(Protocol):
    """An external lease used as the referee (an etcd lease, a Kubernetes ``Lease``).

    ``acquire`` must be re-entrant per owner: every node of one side acquires with the
    same owner id and all of them must get ``True`` while it holds; a different owner
    gets ``False`` until the hold expires after ``ttl_s``. The resolver never calls
    ``release``: a side's nodes share one owner id, so one node releasing could hand the
    lease to the other side while its peers still rely on it; the TTL ends the hold.
    """

    async def acquire(self, owner: str, ttl_s: float) -> bool:
        """Take or extend the lease for ``owner``; ``False`` if someone else holds it."""
        ...

    async def release(self, owner: str) -> None:
        """Give the lease up if ``owner`` holds it (operator tooling, cluster shutdown)."""
        ...


class LeaseReferee:
    """Acquires ``lease`` for this node's side, on ``clock``.

    Args:
        lease: the referee.
        clock: the node's clock (the strategy's delay, the timeout).
        ttl_s: how long an acquired lease holds.
        timeout_s: how long one acquire may take before it counts as lost.
    """

    def __init__(self, lease: LeaseProvider, clock: Clock, ttl_s: float,
                 timeout_s: float) -> None:
        self._lease = lease
        self._clock = clock
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s

    async def decide_holder(self, strategy: LeaseMajority, view: PartitionView,
                            changed: Callable[[], bool]) -> PartitionView | None:
        """``view`` with the lease holder set (``None`` if this side did not get it), or
        ``None`` when ``changed()`` says the partition changed during the delay."""
        owner = strategy.lease_owner(view)
        if owner is None:
            return view.with_lease_holder(None)
        delay = strategy.acquire_delay_s(view)
        if delay > 0:
            await self._clock.sleep(delay)
            if changed():
                return None  # the partition changed while we waited: start over
        return view.with_lease_holder(owner if await self._try_acquire(owner) else None)

    async def _try_acquire(self, owner: str) -> bool:
        acquire = asyncio.ensure_future(self._lease.acquire(owner, self._ttl_s))
        timer = asyncio.ensure_future(self._clock.sleep(self._timeout_s))
        try:
            await asyncio.wait((acquire, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (acquire, timer):
                task.cancel()
            await asyncio.gather(acquire, timer, return_exceptions=True)
        if acquire.cancelled():
            _log.warning(
                "split brain: lease acquire for %s took longer than %.1fs; counting it as lost",
                owner,
                self._timeout_s,
            )
            return False
        if (exc := acquire.exception()) is not None:
            _log.warning("split brain: lease acquire for %s failed: %r", owner, exc)
            return False
        return bool(acquire.result())
