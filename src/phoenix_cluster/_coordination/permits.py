"""The rules of leases and counting semaphores, as a pure state machine.

A :class:`PermitTable` is the replicated state of one lease or semaphore name: up to
``limit`` holders, each with a fencing token and an expiry. Every operation takes
``now`` (the hosting node's monotonic clock) and returns an :class:`Outcome`; nothing
here does I/O, so the laws (a token is granted once, tokens strictly increase, never
more than ``limit`` live holders) are property-tested on this class directly.

A lease is a table with ``limit=1``; its tokens are the fencing tokens of the lock.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Outcome", "Permit", "PermitTable", "Status"]

Status = Literal["granted", "full", "not_holder", "mismatch", "released"]


class Permit(msgspec.Struct):
    """One live holder: its fencing token, its ttl and when it expires (monotonic time
    of the node hosting the table; :meth:`PermitTable.restart_clocks` rebases it)."""

    holder: str
    token: int
    ttl_s: float
    expires_at: float


class Outcome(msgspec.Struct):
    """The answer to one operation.

    ``token`` is the caller's token when granted (or kept), else the newest token
    issued; ``holders`` the live holders after the operation; ``wait_s`` how long until
    the earliest live permit expires (how long a refused caller may wait for room).
    """

    status: Status
    token: int
    holders: list[str]
    limit: int
    wait_s: float


class PermitTable(msgspec.Struct):
    """The permits of one name: ``last_token`` is the newest token ever issued for it,
    ``last_holder`` the holder it went to."""

    limit: int = 0
    last_token: int = 0
    last_holder: str = ""
    permits: list[Permit] = msgspec.field(default_factory=list)

    def acquire(self, holder: str, limit: int, ttl_s: float, now: float) -> Outcome:
        """Grant ``holder`` a permit with a fresh token, if one of ``limit`` is free.

        A holder that already holds a live permit keeps its token and gets its expiry
        extended: retrying an acquire whose answer was lost never mints a second
        token. ``limit`` must match the table's while any permit is live.
        """
        self._expire(now)
        if self.permits and limit != self.limit:
            return self._outcome("mismatch", self.last_token, now)
        self.limit = limit
        mine = self._find(holder)
        if mine is not None:
            mine.ttl_s, mine.expires_at = ttl_s, now + ttl_s
            return self._outcome("granted", mine.token, now)
        if len(self.permits) >= limit:
            return self._outcome("full", self.last_token, now)
        self.last_token += 1
        self.last_holder = holder
        self.permits.append(Permit(holder, self.last_token, ttl_s, now + ttl_s))
        return self._outcome("granted", self.last_token, now)

    def renew(self, holder: str, token: int, ttl_s: float, now: float) -> Outcome:
        """Extend the live permit ``(holder, token)`` by ``ttl_s`` from now.

        A permit that expired is gone, even if nobody took its place: its holder has
        already treated it as lost (holders give up before the ttl ends).
        """
        self._expire(now)
        mine = self._find(holder)
        if mine is None or mine.token != token:
            return self._outcome("not_holder", self.last_token, now)
        mine.ttl_s, mine.expires_at = ttl_s, now + ttl_s
        return self._outcome("granted", token, now)

    def release(self, holder: str, token: int, now: float) -> Outcome:
        """Give back the permit ``(holder, token)``.

        Releasing a permit that is already gone (released before, or expired) is fine
        as long as no later token was issued to anyone: a retried release succeeds. A
        caller that does not hold ``token`` while a later token exists gets
        ``not_holder`` and nothing changes.
        """
        self._expire(now)
        mine = self._find(holder)
        if mine is not None and mine.token == token:
            self.permits.remove(mine)
            return self._outcome("released", token, now)
        if mine is None and (holder, token) == (self.last_holder, self.last_token):
            return self._outcome("released", token, now)
        return self._outcome("not_holder", self.last_token, now)

    def status(self, now: float) -> Outcome:
        """The live holders, without changing anything."""
        live = [p for p in self.permits if p.expires_at > now]
        return Outcome("granted" if live else "released", self.last_token,
                       [p.holder for p in live], self.limit, self._wait_s(live, now))

    def restart_clocks(self, now: float) -> None:
        """Start every live permit's ttl again from ``now``.

        Called when the table is activated on a node (after a failover, a migration
        or a reactivation): the expiries were measured on another node's monotonic
        clock, which means nothing here. Restarting the ttl never ends a lease early;
        a dead holder's permit lasts up to one ttl longer.
        """
        for permit in self.permits:
            permit.expires_at = now + permit.ttl_s

    def _expire(self, now: float) -> None:
        if any(p.expires_at <= now for p in self.permits):
            self.permits = [p for p in self.permits if p.expires_at > now]

    def _find(self, holder: str) -> Permit | None:
        return next((p for p in self.permits if p.holder == holder), None)

    def _outcome(self, status: Status, token: int, now: float) -> Outcome:
        return Outcome(status, token, [p.holder for p in self.permits], self.limit,
                       self._wait_s(self.permits, now))

    @staticmethod
    def _wait_s(permits: list[Permit], now: float) -> float:
        return max(0.0, min((p.expires_at - now for p in permits), default=0.0))
