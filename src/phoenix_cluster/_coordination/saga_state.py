"""The progress of a saga, as a pure state machine.

A saga is a list of steps, each a call to an agent with a compensation that undoes it.
:class:`SagaState` (the replicated state of the saga's agent) says which call comes
next and records what each call did: forward while every step succeeds, then backward
through the compensations of the steps that ran once one fails. Every call carries a
``step_id`` that names the saga, the step and the direction, so a call repeated after
a failover (its answer lost with the node) is recognised by its target.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["NextCall", "SagaState", "SagaStatus", "StepLog", "StepPlan"]

SagaStatus = Literal["idle", "running", "compensating", "committed", "aborted"]

# Attempts of a step whose outcome stayed unknown (a timeout, its node unreachable)
# before the saga gives up on it and compensates it too.
MAX_UNKNOWN_ATTEMPTS = 5


class StepPlan(msgspec.Struct):
    """One step: ``kind``/``key`` name the agent; ``action`` and ``compensation`` are
    its methods, called with their arguments and ``step_id=``."""

    kind: str
    key: str
    action: str
    args: dict[str, Any]
    compensation: str
    compensation_args: dict[str, Any]


class NextCall(msgspec.Struct):
    """The call the saga makes next."""

    kind: str
    key: str
    method: str
    args: dict[str, Any]
    step_id: str


class SagaState(msgspec.Struct):
    """``done`` counts the steps that ran forward; while compensating, ``undo`` is the
    index of the next step to compensate (down to 0). ``failure`` says why a saga
    compensates; ``attempts`` counts unknown outcomes of the current call."""

    saga_id: str = ""
    steps: list[StepPlan] = msgspec.field(default_factory=list)
    status: SagaStatus = "idle"
    done: int = 0
    undo: int = -1
    failure: str = ""
    attempts: int = 0

    def start(self, saga_id: str, steps: list[StepPlan]) -> bool:
        """Begin; ``False`` if this saga already began with other steps (nothing changes)."""
        if self.status != "idle":
            return self.steps == steps
        self.saga_id, self.steps = saga_id, steps
        self.status = "running" if steps else "committed"
        return True

    @property
    def finished(self) -> bool:
        return self.status in ("committed", "aborted")

    def next_call(self) -> NextCall | None:
        """The call to make now, or ``None`` once the saga is finished."""
        if self.status == "running":
            step = self.steps[self.done]
            return NextCall(step.kind, step.key, step.action, step.args,
                            f"{self.saga_id}/{self.done}/do")
        if self.status == "compensating":
            step = self.steps[self.undo]
            return NextCall(step.kind, step.key, step.compensation, step.compensation_args,
                            f"{self.saga_id}/{self.undo}/undo")
        return None

    def succeeded(self) -> None:
        """The current call succeeded."""
        self.attempts = 0
        if self.status == "running":
            self.done += 1
            if self.done == len(self.steps):
                self.status = "committed"
        elif self.status == "compensating":
            self.undo -= 1
            if self.undo < 0:
                self.status = "aborted"

    def failed(self, reason: str, *, definite: bool) -> None:
        """The current call failed: ``definite`` if it certainly had no effect.

        A step that failed definitely at its first attempt is not compensated (it did
        nothing); one that may have run (an attempt's outcome was unknown) is, and its
        compensation must do nothing if the step never ran (:class:`StepLog`). A
        compensation is retried until it succeeds: there is no way back from one.
        """
        if self.status != "running":
            self.attempts += 1
            return
        # an earlier attempt with an unknown outcome may have run the step
        may_have_run = not definite or self.attempts > 0
        if not definite:
            self.attempts += 1
            if self.attempts < MAX_UNKNOWN_ATTEMPTS:
                return
        self.failure = f"step {self.done} ({self.steps[self.done].action} on "\
                       f"{self.steps[self.done].key}): {reason}"
        self.undo = self.done if may_have_run else self.done - 1
        self.attempts = 0
        self.status = "compensating" if self.undo >= 0 else "aborted"


class StepLog(msgspec.Struct):
    """The saga step ids an agent has seen: keep one in the state of an agent that saga
    steps call, and ask :meth:`first_time` at the start of each step or compensation.

    Step ids look like ``<saga>/<step>/do`` and ``<saga>/<step>/undo``. Annotate the
    attribute at class level (``steps: StepLog``) so it is typed again after a rollback.
    """

    seen: list[str] = msgspec.field(default_factory=list)

    def first_time(self, step_id: str) -> bool:
        """Whether the call with ``step_id`` should take effect; records it either way.

        ``False`` for an id seen before (a repeat after a failover), for a step whose
        compensation already ran (a late duplicate), and for a compensation whose step
        never ran here (the saga compensates steps whose outcome it could not learn).
        """
        if step_id in self.seen:
            return False
        self.seen.append(step_id)
        base, _, direction = step_id.rpartition("/")
        if direction == "do":
            return f"{base}/undo" not in self.seen
        if direction == "undo":
            return f"{base}/do" in self.seen
        return True
