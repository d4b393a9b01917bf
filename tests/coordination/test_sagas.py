"""Sagas on one embedded node: steps run in order, a failed step's predecessors are
compensated, a repeated call is recognised by its step id, and a step that could not
recognise a repeat is refused before anything runs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import phoenix_cluster as phx
from phoenix_cluster import coordination
from phoenix_cluster._coordination.saga_state import SagaState, StepLog, StepPlan


class Account(phx.Agent, kind="tests.coordination.account"):
    """A balance whose updates are idempotent per step id."""

    steps: coordination.StepLog   # annotated: typed again after a rollback

    def __init__(self) -> None:
        self.balance = 100
        self.steps = coordination.StepLog()

    async def withdraw(self, amount: int, step_id: str) -> None:
        if not self.steps.first_time(step_id):
            return
        if amount > self.balance:
            raise ValueError(f"insufficient funds: {self.balance} < {amount}")
        self.balance -= amount

    async def deposit(self, amount: int, step_id: str) -> None:
        if self.steps.first_time(step_id):
            self.balance += amount

    async def read(self) -> int:
        return self.balance

    async def blind_add(self, amount: int) -> None:
        self.balance += amount


def transfer(source: str, target: str, amount: int) -> list[coordination.SagaStep]:
    return [
        coordination.SagaStep(Account, source, "withdraw", {"amount": amount},
                              compensation="deposit", compensation_args={"amount": amount}),
        coordination.SagaStep(Account, target, "deposit", {"amount": amount},
                              compensation="withdraw", compensation_args={"amount": amount}),
    ]


async def balances(node: phx.Node, *keys: str) -> list[int]:
    return [await node.ref(Account, k).read() for k in keys]


async def test_a_transfer_runs_every_step_and_a_repeat_only_waits() -> None:
    async with phx.Node() as node:
        report = await coordination.run_saga(node, "t1", transfer("a", "b", 30))
        assert (report.status, report.done, report.steps) == ("committed", 2, 2)
        assert await balances(node, "a", "b") == [70, 130]
        again = await coordination.run_saga(node, "t1", transfer("a", "b", 30))
        assert again.status == "committed"
        assert await balances(node, "a", "b") == [70, 130]     # not applied twice
        with pytest.raises(phx.AgentError, match="other steps"):
            await coordination.run_saga(node, "t1", transfer("a", "b", 5))


async def test_a_failed_step_compensates_the_steps_before_it() -> None:
    async with phx.Node() as node:
        steps = [*transfer("a", "b", 60), *transfer("b", "c", 500)]  # b cannot pay 500
        with pytest.raises(phx.SagaAborted, match="insufficient funds") as aborted:
            await coordination.run_saga(node, "t2", steps)
        assert aborted.value.definite and "step 2" in aborted.value.failure
        assert await balances(node, "a", "b", "c") == [100, 100, 100]
        status = await coordination.saga_status(node, "t2")
        assert (status.status, status.done) == ("aborted", 2)


async def test_a_step_that_cannot_recognise_a_repeat_is_refused() -> None:
    with pytest.raises(phx.NotIdempotent, match="blind_add"):
        coordination.SagaStep(Account, "a", "blind_add", {"amount": 1},
                              compensation="withdraw")
    with pytest.raises(phx.ConfigError, match="no message"):
        coordination.SagaStep(Account, "a", "nope", compensation="withdraw")
    with pytest.raises(phx.ConfigError, match="agent class"):
        coordination.SagaStep(object, "a", "x", compensation="y")  # type: ignore[arg-type]


def _plan(n: int) -> list[StepPlan]:
    return [StepPlan("k", f"s{i}", "do", {}, "undo", {}) for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(steps=st.integers(0, 5),
       outcomes=st.lists(st.sampled_from(["ok", "refused", "unknown"]), max_size=40))
def test_every_step_that_may_have_run_is_compensated_exactly_when_the_saga_aborts(
    steps: int, outcomes: list[str],
) -> None:
    saga = SagaState()
    assert saga.start("s", _plan(steps))
    may_have_run: set[int] = set()
    compensated: set[int] = set()
    for outcome in outcomes:
        call = saga.next_call()
        if call is None:
            break
        index, direction = int(call.step_id.split("/")[1]), call.step_id.split("/")[2]
        if direction == "undo":
            assert index in may_have_run and index not in compensated
            compensated.add(index)
            saga.succeeded()          # compensations are retried until they succeed
            continue
        if outcome == "ok":
            may_have_run.add(index)
            saga.succeeded()
        elif outcome == "refused":
            saga.failed("no", definite=True)
        else:
            may_have_run.add(index)
            saga.failed("lost", definite=False)
    if saga.status == "committed":
        assert saga.done == steps and not compensated
    if saga.status == "aborted":
        assert compensated == may_have_run


def test_a_step_log_skips_repeats_late_steps_and_compensations_of_steps_never_run() -> None:
    log = StepLog()
    assert log.first_time("s/0/do")
    assert not log.first_time("s/0/do")        # a repeat after a failover
    assert log.first_time("s/0/undo")
    assert not log.first_time("s/1/undo")      # its step never ran here
    assert not log.first_time("s/1/do")        # arrived after its compensation
