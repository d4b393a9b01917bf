"""What a :class:`~phoenix_cluster._resilience.supervisor.Supervisor` is told and reports.

A :class:`ChildSpec` says how to run and restart one child (its restart policy, how long a
stop may take); :class:`ChildInfo` and :class:`SupervisorStatistics` are what the
supervisor reports; :class:`SupervisorEscalation` is the error it raises when it gives up.
Plain data and checks, no tasks: the supervision itself is ``supervisor.py``. Imports only
``errors`` (layer L0).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, get_args

from phoenix_cluster.errors import PhoenixError

__all__ = [
    "ChildInfo", "ChildSpec", "RestartPolicy", "Strategy", "SupervisorEscalation",
    "SupervisorState", "SupervisorStatistics",
]

RestartPolicy = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "rest_for_one", "one_for_all"]
SupervisorState = Literal["idle", "running", "stopping", "stopped", "failed"]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to run and restart one child.

    Args:
        name: unique within its supervisor; used in logs, events and ``terminate_child``.
        run: a coroutine function; the child is running while its coroutine runs. Returning
            is a normal exit, raising is a crash.
        restart: ``permanent`` is always restarted, ``transient`` only after a crash,
            ``temporary`` never (and is forgotten once it ends).
        shutdown_timeout_s: how long a stop waits after cancelling the task. A child that
            outlives it is abandoned (logged, still referenced) so shutdown cannot hang.
            For a nested supervisor, make it cover the sum of its children's timeouts.
    """

    name: str
    run: Callable[[], Awaitable[None]]
    restart: RestartPolicy = "permanent"
    shutdown_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.restart not in get_args(RestartPolicy):
            raise ValueError(f"child {self.name!r}: restart must be one of "
                             f"{get_args(RestartPolicy)}, got {self.restart!r}")
        if self.shutdown_timeout_s < 0:
            raise ValueError(f"child {self.name!r}: shutdown_timeout_s must be >= 0, "
                             f"got {self.shutdown_timeout_s!r}")


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of :meth:`Supervisor.which_children`; ``restarts`` counts every restart."""

    name: str
    restart: RestartPolicy
    running: bool
    restarts: int


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A snapshot of a supervisor for telemetry and tests; ``children`` is a count."""

    name: str
    strategy: Strategy
    children: int
    total_restarts: int
    state: SupervisorState


class SupervisorEscalation(PhoenixError):
    """A supervisor gave up: more than ``max_restarts`` restarts within ``max_seconds``.

    Raised by :meth:`Supervisor.wait` and :meth:`Supervisor.run` after every child has been
    stopped. Under a parent supervisor it is an ordinary crash of the child that ran
    ``run``, so the parent applies its own strategy (OTP escalation). ``__cause__`` is the
    last exception of the failing child, when it crashed rather than exited.

    Attributes:
        supervisor: name of the supervisor that gave up.
        child: name of the child whose exit exceeded the restart intensity.
        reason: what happened, in words.
    """

    code = "supervisor_escalation"

    def __init__(self, message: str = "", *, supervisor: str = "", child: str = "",
                 reason: str = "") -> None:
        super().__init__(message or reason)
        self.supervisor, self.child, self.reason = supervisor, child, reason
