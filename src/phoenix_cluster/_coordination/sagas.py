"""Sagas: steps over several agents, each with a compensation, whose progress is durable.

``run_saga(node, saga_id, steps)`` hands the steps to the saga's agent
(:class:`SagaAgent`, one per saga id) and waits for the outcome. The agent runs one call
per message (a timer re-arms itself after each) and commits its progress to a quorum
of its replicas after each call, so when its node dies the agent resumes on a survivor
from the last committed step: forward, or backward through the compensations.

A call made just before the node died may run again on the survivor (its answer, and
the progress it caused, were lost). So every step and every compensation takes a
``step_id`` keyword argument, unique per saga, step and direction, and must do nothing
the second time it sees one (:class:`StepLog` keeps that record): steps are refused
with :class:`~..errors.NotIdempotent` when their methods do not accept ``step_id``. A
step whose outcome the saga could not learn is compensated too, so a compensation must
also do nothing when its step never ran (``StepLog.first_time`` says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from typing import Any

import msgspec

from .._agents.agent import Agent
from ..errors import (
    AgentError,
    AgentNotFound,
    CallTimeout,
    ConfigError,
    IndefiniteError,
    NoQuorum,
    NotIdempotent,
    NotLeader,
    PhoenixError,
    SagaAborted,
    SerializationError,
)
from .leases import Refs, check_name, check_seconds
from .saga_state import SagaState, SagaStatus, StepLog, StepPlan

__all__ = ["SagaAgent", "SagaReport", "SagaStep", "StepLog", "run_saga", "saga_status"]

# A step's handler refused it: it certainly did nothing, the saga compensates.
_REFUSED = (AgentError, AgentNotFound, SerializationError)
_FIRST_RETRY_S = 0.05
_MAX_RETRY_S = 2.0
_POLL_S = 0.02
_MAX_POLL_S = 0.5


class SagaReport(msgspec.Struct):
    """Where a saga stands: ``status`` (``idle``, ``running``, ``compensating``,
    ``committed``, ``aborted``), how many steps ran forward, and why it compensates."""

    status: SagaStatus
    done: int
    steps: int
    failure: str


class SagaStep:
    """One step of a saga: ``action`` on the agent ``kind``/``key``, undone by
    ``compensation``. Both methods must take a ``step_id`` keyword argument and do
    nothing when they see one again.

    Raises:
        NotIdempotent: a method does not accept ``step_id``.
        ConfigError: ``kind`` is not an agent class, or a method does not exist.
    """

    def __init__(self, kind: type[Agent], key: str, action: str,
                 args: dict[str, Any] | None = None, *, compensation: str,
                 compensation_args: dict[str, Any] | None = None) -> None:
        if not (isinstance(kind, type) and issubclass(kind, Agent)):
            raise ConfigError(f"a saga step needs an agent class, got {kind!r}", key="kind")
        for method in (action, compensation):
            fn = getattr(kind, check_name("method", method), None)
            if method.startswith("_") or not callable(fn):
                raise ConfigError(f"{kind.__name__} has no message {method!r}", key="method")
            if "step_id" not in inspect.signature(fn).parameters:
                raise NotIdempotent(
                    f"{kind.__name__}.{method} takes no step_id: a saga may call it again "
                    f"after a failover, and it must recognise the repeat")
        self.kind = kind
        self.key = check_name("key", key)
        self.action = action
        self.args = dict(args or {})
        self.compensation = compensation
        self.compensation_args = dict(compensation_args or {})

    def plan(self, node: Refs) -> StepPlan:
        kind_name = node.ref(self.kind, self.key).kind
        return StepPlan(kind_name, self.key, self.action, self.args, self.compensation,
                        self.compensation_args)


class SagaAgent(Agent, kind="phoenix.coordination.saga", idle_timeout=600):
    """One saga per key: its steps and its progress, committed after every call."""

    saga: SagaState

    def __init__(self) -> None:
        self.saga = SagaState()

    async def on_activate(self) -> None:
        if self.saga.status in ("running", "compensating"):
            self._arm(0.0)  # resume where the last committed progress left off

    async def start(self, steps: list[StepPlan]) -> SagaReport:
        began = self.saga.status == "idle"
        if not self.saga.start(self.key, steps):
            raise ConfigError(f"saga {self.key!r} was started with other steps", key="saga_id")
        if began and not self.saga.finished:
            self._arm(0.0)
        return self.report()

    def report(self) -> SagaReport:
        saga = self.saga
        return SagaReport(saga.status, saga.done, len(saga.steps), saga.failure)

    def _arm(self, delay_s: float) -> None:
        self.set_timer(max(delay_s, 0.001), self._advance)

    async def _advance(self) -> None:
        call = self.saga.next_call()
        if call is None:
            return
        try:
            ref = self.node.ref(call.kind, call.key)
            await getattr(ref, call.method)(**call.args, step_id=call.step_id)
        except _REFUSED as exc:
            self.saga.failed(str(exc), definite=True)
        except PhoenixError as exc:  # unknown outcome or a passing fault: try again
            self.saga.failed(str(exc), definite=False)
        else:
            self.saga.succeeded()
        if not self.saga.finished:
            attempts = self.saga.attempts
            self._arm(min(_FIRST_RETRY_S * 2 ** attempts, _MAX_RETRY_S) if attempts else 0.0)


async def saga_status(node: Refs, saga_id: str) -> SagaReport:
    """Where the saga ``saga_id`` stands."""
    report: SagaReport = await node.ref(SagaAgent, check_name("saga_id", saga_id)).report()
    return report


async def run_saga(node: Refs, saga_id: str, steps: list[SagaStep], *,
                   timeout: float = 30.0) -> SagaReport:
    """Run ``steps`` in order as the saga ``saga_id`` and wait for its outcome.

    Starting a saga id again with the same steps only waits for it (a retry after a
    lost answer is safe); with other steps it is refused. While the saga's node fails
    over, calls are repeated until ``timeout``. After a failover the saga resumes on
    a survivor at its agent's next message, which this function's polling sends (if
    the caller died too, :func:`saga_status` or ``run_saga`` from anywhere resumes it).

    Returns:
        The report of the committed saga: every step ran.

    Raises:
        SagaAborted: a step failed and every step that ran was compensated.
        CallTimeout: no outcome within ``timeout`` (indefinite): the saga goes on in
            its agent; ask :func:`saga_status`, or call ``run_saga`` again to wait.
        AgentError: ``saga_id`` was started with other steps (``ConfigError`` there).
    """
    ref = node.ref(SagaAgent, check_name("saga_id", saga_id))
    deadline = time.monotonic() + check_seconds("timeout", timeout)
    plans = [step.plan(node) for step in steps]
    report: SagaReport | None = None
    poll = _POLL_S
    while report is None or report.status not in ("committed", "aborted"):
        # the saga's node may be failing over; starting again with the same steps
        # only reports, so both calls are safe to repeat
        with contextlib.suppress(IndefiniteError, NotLeader, NoQuorum):
            report = await (ref.start(plans) if report is None else ref.report())
        if report is not None and report.status in ("committed", "aborted"):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            where = "not started" if report is None else (
                f"still {report.status} ({report.done} of {report.steps} steps ran)")
            raise CallTimeout(f"saga {saga_id!r}: {where} after {timeout} s")
        await asyncio.sleep(min(poll, left))
        poll = min(poll * 2, _MAX_POLL_S)
    assert report is not None
    if report.status == "aborted":
        raise SagaAborted(f"saga {saga_id!r} was compensated: {report.failure}",
                          failure=report.failure)
    return report
