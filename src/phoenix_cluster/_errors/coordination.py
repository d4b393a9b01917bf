"""Errors of the coordination primitives: leases, semaphores, barriers, sagas, contracts.

Each says that nothing was done (nothing acquired, renewed, counted, started or
awarded) and why: the lease is held or no longer the caller's, a fencing token is stale,
a semaphore or barrier was used with another count than its users', a saga step is not
idempotent or failed (and was compensated), nobody bid. Imported from
``phoenix_cluster.errors``.
"""

from __future__ import annotations

from .base import DefiniteError

__all__ = [
    "BarrierMismatch",
    "LeaseHeld",
    "NoBids",
    "NotHolder",
    "NotIdempotent",
    "SagaAborted",
    "SemaphoreMismatch",
    "StaleToken",
]


class LeaseHeld(DefiniteError):
    """The lease is held by someone else (for a semaphore: every permit is held), and
    stayed so for as long as the caller was willing to wait; nothing was acquired.

    Attributes:
        holders: the holders at the last attempt (may be empty in a message that
            crossed the wire).
    """

    code = "lease_held"

    def __init__(self, message: str = "", *, holders: list[str] | None = None,
                 definite: bool | None = None, request_id: int | None = None) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.holders = holders or []


class NotHolder(DefiniteError):
    """A renewal or release came from a caller that does not hold the lease with that
    token (it never did, its lease expired, or a later token was issued); nothing
    changed. A holder that gets this has lost the lease and must stop acting on it."""

    code = "not_holder"


class StaleToken(DefiniteError):
    """A fenced resource refused a fencing token older than the newest it has seen:
    the caller's lease was lost and someone else has held it since. Nothing was done."""

    code = "stale_token"


class SemaphoreMismatch(DefiniteError):
    """A semaphore was acquired with another ``limit`` than the one its current holders
    use; nothing was acquired. Every user of one semaphore name must pass one limit."""

    code = "semaphore_mismatch"


class BarrierMismatch(DefiniteError):
    """A barrier was awaited with another party count than the one its current round
    waits for; the caller was not counted. Every party of one barrier name must pass
    the same count."""

    code = "barrier_mismatch"


class NotIdempotent(DefiniteError):
    """A saga step's action or compensation takes no ``step_id`` argument, so it could
    not recognise being called again after a failover; the saga was not started."""

    code = "not_idempotent"


class SagaAborted(DefiniteError):
    """A saga step failed, and every step that had run was compensated: the saga's net
    effect is nothing (as far as the compensations undo their steps).

    Attributes:
        failure: which step failed and why.
    """

    code = "saga_aborted"

    def __init__(self, message: str = "", *, failure: str = "", definite: bool | None = None,
                 request_id: int | None = None) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.failure = failure


class NoBids(DefiniteError):
    """No contractor bid for a task within the timeout, or every bidder refused the
    award; the task was not awarded to anyone."""

    code = "no_bids"
