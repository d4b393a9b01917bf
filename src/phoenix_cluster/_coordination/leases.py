"""Leases, locks and semaphore permits, from the holder's side.

``acquire`` asks the name's :class:`~.agents.LeaseAgent` for a lease and returns a
:class:`Lease`; ``lock`` holds one for a block of code and renews it in the background;
``acquire_permit`` does the same for a counting semaphore.

Time. The agent measures a lease's ttl on its own node's monotonic clock, from the
moment it grants the lease; the holder measures it on its own clock from the moment it
*sent* the request, which is earlier, and gives up ``margin`` seconds before the ttl
ends. So the holder stops believing in its lease before the agent lets anyone else
have it, whatever the wall clocks of the two nodes say, as long as their clocks
*run* at rates that differ by less than ``margin / ttl`` (10 % by default) and the
holder's process is not paused for longer than the margin between checking
:attr:`Lease.valid` and acting. A pause beyond that is what fencing tokens are for:
a resource that checks them (:func:`check_token`, :class:`FencedResource`) refuses a
holder whose lease has been given to someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

from .._agents.agent import Agent
from .._agents.ref import AgentRef
from ..errors import (
    ConfigError,
    LeaseHeld,
    NotHolder,
    PhoenixError,
    SemaphoreMismatch,
    StaleToken,
)
from .agents import LeaseAgent, SemaphoreAgent
from .permits import Outcome

__all__ = ["FencedResource", "Lease", "Refs", "acquire", "acquire_permit", "check_token",
           "lock"]

_FIRST_POLL_S = 0.02
_MAX_POLL_S = 0.5


class Refs(Protocol):
    """Anything that makes agent references: a ``phx.Node``, or ``self.node`` in an agent."""

    def ref(self, kind: type[Agent] | str, key: str) -> AgentRef: ...


def check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}", key=what)
    return value


def check_seconds(what: str, value: object, *, allow_zero: bool = False) -> float:
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and (value > 0 or (allow_zero and value == 0))):
        return float(value)
    bound = ">= 0" if allow_zero else "> 0"
    raise ConfigError(f"{what} must be a finite number of seconds {bound}, got {value!r}",
                      key=what)


def check_wait(wait: object) -> float | None:
    return None if wait is None else check_seconds("wait", wait, allow_zero=True)


def check_count(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} must be an int >= 1, got {value!r}", key=what)
    return value


class Lease:
    """A lease (or a semaphore permit) held by ``holder``.

    Attributes:
        name: the lease's name.
        holder: who holds it.
        token: its fencing token: larger than every token issued before for this name,
            never issued again. Hand it to the resources you use under the lease.
        ttl: seconds the lease lasts from each grant or renewal.
        margin: seconds before the ttl ends at which this side treats it as lost.
        lost: set once this side knows the lease is gone (a renewal refused, or the
            lease ran out while renewals failed); under :func:`lock` and elections.
    """

    def __init__(self, ref: AgentRef, name: str, holder: str, token: int, ttl: float,
                 margin: float, sent_at: float) -> None:
        self._ref = ref
        self.name = name
        self.holder = holder
        self.token = token
        self.ttl = ttl
        self.margin = margin
        self._valid_until = sent_at + ttl - margin
        self._released = False
        self.lost = asyncio.Event()

    def __repr__(self) -> str:
        return (f"<Lease {self.name!r} holder={self.holder!r} token={self.token} "
                f"{'valid' if self.valid else 'lost'}>")

    @property
    def valid(self) -> bool:
        """Whether this side may still act as the holder (not released, not expired
        by its own, earlier, reckoning)."""
        return not self._released and time.monotonic() < self._valid_until

    def remaining(self) -> float:
        """Seconds this side may still act as the holder (0 once lost or released)."""
        if self._released:
            return 0.0
        return max(0.0, self._valid_until - time.monotonic())

    async def renew(self, ttl: float | None = None) -> None:
        """Extend the lease by ``ttl`` (default: its ttl) from now; the token stays.

        Raises:
            NotHolder: the lease expired (by this side's reckoning, or the agent's) or
                was released; it is lost (nothing changed).
            CallTimeout, NodeUnavailable: the outcome is unknown; the lease's validity
                is not extended here (retrying is safe).
        """
        if not self.valid:
            self.lost.set()
            raise NotHolder(f"lease {self.name!r}: {self.holder!r} let token {self.token} "
                            f"run out (or released it); a lost lease is never renewed")
        if ttl is not None:
            self.ttl = check_seconds("ttl", ttl)
            self.margin = min(self.margin, self.ttl / 2)
        sent_at = time.monotonic()
        outcome: Outcome = await self._ref.renew(self.holder, self.token, self.ttl)
        if outcome.status != "granted":
            self._released = True
            self.lost.set()
            raise NotHolder(f"lease {self.name!r}: {self.holder!r} no longer holds token "
                            f"{self.token} (the newest token is {outcome.token})")
        self._valid_until = sent_at + self.ttl - self.margin

    async def release(self) -> None:
        """Give the lease back. Releasing twice is fine.

        Raises:
            NotHolder: the lease had expired and someone else holds it now (or held it
                since); nothing changed.
            CallTimeout, NodeUnavailable: the outcome is unknown; retry, or let it expire.
        """
        self._released = True
        outcome: Outcome = await self._ref.release(self.holder, self.token)
        if outcome.status != "released":
            raise NotHolder(f"lease {self.name!r}: {self.holder!r} does not hold token "
                            f"{self.token} (the newest token is {outcome.token})")


async def _acquire(ref: AgentRef, name: str, holder: str, ttl: float, wait: float | None,
                   margin: float | None, *args: int) -> Lease:
    margin_s = ttl / 10 if margin is None else check_seconds("margin", margin, allow_zero=True)
    if margin_s >= ttl:
        raise ConfigError(f"margin ({margin_s} s) must be shorter than ttl ({ttl} s)",
                          key="margin")
    deadline = math.inf if wait is None else time.monotonic() + wait
    poll = _FIRST_POLL_S
    while True:
        sent_at = time.monotonic()
        outcome: Outcome = await ref.acquire(holder, *args, ttl)
        if outcome.status == "granted":
            return Lease(ref, name, holder, outcome.token, ttl, margin_s, sent_at)
        if outcome.status == "mismatch":
            raise SemaphoreMismatch(f"semaphore {name!r} is held with limit {outcome.limit}, "
                                    f"not {args[0] if args else 1}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise LeaseHeld(f"{name!r} is held by {', '.join(outcome.holders)} "
                            f"(for up to {outcome.wait_s:.3g} s more)",
                            holders=list(outcome.holders))
        await asyncio.sleep(min(poll, left, outcome.wait_s + _FIRST_POLL_S))
        poll = min(poll * 2, _MAX_POLL_S)


async def acquire(node: Refs, name: str, holder: str, *, ttl: float = 10.0,
                  wait: float | None = 0.0, margin: float | None = None) -> Lease:
    """Acquire the lease (lock) ``name`` for ``holder``.

    Args:
        node: the node (or an agent's ``self.node``) to call from.
        name: the lease's name; one agent of the cluster holds its state.
        holder: who asks: a name unique to this process or task. Asking again while
            holding it renews it and returns the same token.
        ttl: seconds the lease lasts unless renewed.
        wait: seconds to keep trying while someone else holds it (0: one attempt;
            ``None``: until it is acquired).
        margin: seconds before the ttl at which this side treats the lease as lost
            (default ``ttl / 10``).

    Raises:
        LeaseHeld: someone else held it for the whole ``wait``.
        ConfigError: a bad name, holder, ttl, wait or margin.
        CallTimeout, NodeUnavailable: the outcome is unknown; asking again with the same
            holder is safe (it gets the same token if the first attempt won).
    """
    ref = node.ref(LeaseAgent, check_name("name", name))
    return await _acquire(ref, name, check_name("holder", holder), check_seconds("ttl", ttl),
                          check_wait(wait), margin)


async def acquire_permit(node: Refs, name: str, holder: str, *, limit: int,
                         ttl: float = 10.0, wait: float | None = 0.0,
                         margin: float | None = None) -> Lease:
    """Acquire one of the ``limit`` permits of the counting semaphore ``name``.

    Arguments and errors as for :func:`acquire`, plus:

    Raises:
        SemaphoreMismatch: the semaphore's holders use another ``limit``.
    """
    ref = node.ref(SemaphoreAgent, check_name("name", name))
    return await _acquire(ref, name, check_name("holder", holder), check_seconds("ttl", ttl),
                          check_wait(wait), margin,
                          check_count("limit", limit))


async def keep_renewed(lease: Lease) -> None:
    """Renew ``lease`` every third of its ttl until cancelled or lost (then it sets
    ``lease.lost``; a refused renewal sets it itself)."""
    while lease.valid:
        await asyncio.sleep(min(lease.ttl / 3, lease.remaining() / 2))
        try:
            await lease.renew()
        except NotHolder:
            return
        except PhoenixError:  # outcome unknown: try again while the lease lasts
            continue
    lease.lost.set()


@contextlib.asynccontextmanager
async def lock(node: Refs, name: str, holder: str, *, ttl: float = 10.0,
               wait: float | None = 30.0,
               margin: float | None = None) -> AsyncIterator[Lease]:
    """Hold the lease ``name`` for the ``async with`` block, renewing it in the
    background (every ``ttl / 3``), and release it at the end.

    The block should pass ``lease.token`` to the resources it writes to and check
    ``lease.valid`` before acting on the belief that it holds the lock: a renewal can
    fail (the agent unreachable for a whole ttl), and then the lease is lost.

    Raises:
        LeaseHeld: someone else held it for the whole ``wait`` (default 30 s).
    """
    lease = await acquire(node, name, holder, ttl=ttl, wait=wait, margin=margin)
    try:
        async with asyncio.TaskGroup() as group:
            renewer = group.create_task(keep_renewed(lease))
            try:
                yield lease
            finally:
                renewer.cancel()
    finally:
        with contextlib.suppress(NotHolder):
            await lease.release()


def check_token(newest: int, token: int, *, name: str = "resource") -> int:
    """Admit an operation fenced by ``token`` if it is not older than ``newest`` (the
    largest token this resource has admitted); return the new largest.

    Raises:
        StaleToken: ``token < newest``: its lease was lost and a later holder has
            been here. Do nothing for this caller.
    """
    if token < newest:
        raise StaleToken(f"{name}: fencing token {token} is stale (token {newest} "
                         f"has been seen)")
    return token


class FencedResource(msgspec.Struct):
    """The newest fencing token seen per lease name, for a resource guarded by leases.

    Keep one in an agent's state (it serializes; annotate the attribute at class level,
    ``fence: FencedResource``, so it is typed again after a rollback) or in any object
    standing for a resource, and call :meth:`admit` before each operation a lease
    holder asks for.
    """

    newest: dict[str, int] = msgspec.field(default_factory=dict)

    def admit(self, name: str, token: int) -> None:
        """Admit an operation under lease ``name`` with ``token``.

        Raises:
            StaleToken: a larger token of ``name`` was admitted before.
        """
        self.newest[name] = check_token(self.newest.get(name, 0), token, name=name)
