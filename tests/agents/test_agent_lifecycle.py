"""Agent lifecycle: activation, passivation, timers, overload, timeouts, shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import phoenix_cluster as phx
from phoenix_cluster.testing import Env, ManualClock, wait_until

LOG: list[tuple[str, str]] = []


class Sleepy(phx.Agent, kind="tests.sleepy", idle_timeout=10):
    def __init__(self) -> None:
        self.count = 0
        self.activations = 0

    async def on_activate(self) -> None:
        self.activations += 1
        LOG.append(("activate", self.key))

    async def on_deactivate(self) -> None:
        LOG.append(("deactivate", self.key))

    async def bump(self) -> list[int]:
        self.count += 1
        return [self.count, self.activations]


class Plain(phx.Agent, kind="tests.plain", idle_timeout=5):
    def __init__(self) -> None:
        self.count = 0

    async def bump(self) -> int:
        self.count += 1
        return self.count


class Ticker(phx.Agent, kind="tests.ticker", idle_timeout=100):
    failures = 0

    def __init__(self) -> None:
        self.ticks = 0
        self.once = 0

    async def start(self, every: float) -> None:
        self.set_timer(every, self._tick, repeat=True)
        self.set_timer(every * 2.5, self._once)

    async def _tick(self) -> None:
        self.ticks += 1
        if self.ticks == 2 and Ticker.failures == 0:
            Ticker.failures += 1
            raise RuntimeError("second tick fails and rolls back")

    async def _once(self) -> None:
        self.once += 1

    async def read(self) -> list[int]:
        return [self.ticks, self.once]


class Gate(phx.Agent, kind="tests.gate", mailbox_limit=2):
    opened: dict[str, asyncio.Event] = {}  # noqa: RUF012 - test plumbing, not state

    def __init__(self) -> None:
        self.done: list[int] = []

    async def wait(self, n: int) -> int:
        await Gate.opened.setdefault(self.key, asyncio.Event()).wait()
        self.done.append(n)
        return n

    async def finished(self) -> list[int]:
        return self.done


class BrokenInit(phx.Agent, kind="tests.broken_init"):
    def __init__(self) -> None:
        raise RuntimeError("cannot construct")

    async def ping(self) -> str:
        return "pong"


async def tick(clock: ManualClock, seconds: float, steps: int = 10) -> None:
    """Advance a manual clock in steps, letting the loop run in between."""
    for _ in range(steps):
        clock.advance(seconds / steps)
        for _ in range(5):
            await asyncio.sleep(0)


async def test_passivation_keeps_state_and_reactivates_transparently() -> None:
    LOG.clear()
    clock = ManualClock()
    async with phx.Node(env=Env(clock=clock)) as node:
        ref = node.ref(Sleepy, "s1")
        assert await ref.bump() == [1, 1]
        assert await ref.bump() == [2, 1]
        await tick(clock, 4)
        assert node.statistics().agents.active_agents == 1  # not idle long enough
        await tick(clock, 8)
        await wait_until(lambda: node.statistics().agents.passive_agents == 1)
        assert node.statistics().agents.active_agents == 0
        assert LOG == [("activate", "s1"), ("deactivate", "s1")]
        # Reactivation restores the state, then runs on_activate again.
        assert await ref.bump() == [3, 2]
        assert LOG[-1] == ("activate", "s1")
        assert node.statistics().agents.passive_agents == 0


async def test_passivation_without_hooks_is_synchronous() -> None:
    clock = ManualClock()
    async with phx.Node(env=Env(clock=clock)) as node:
        refs = [node.ref(Plain, f"p{i}") for i in range(50)]
        for r in refs:
            await r.bump()
        await tick(clock, 6)
        await wait_until(lambda: node.statistics().agents.passive_agents == 50)
        assert [await r.bump() for r in refs[:3]] == [2, 2, 2]


async def test_messages_queued_behind_passivation_are_not_lost() -> None:
    LOG.clear()
    async with phx.Node() as node:
        ref = node.ref(Sleepy, "race")
        await ref.bump()
        act = node._runtime.activation(Sleepy._phx_spec, "race")
        assert act is not None
        node._runtime.passivate(act, reason="test")  # queued, runs on_deactivate
        results = await asyncio.gather(*(ref.bump() for _ in range(5)))
        assert [r[0] for r in results] == [2, 3, 4, 5, 6]
        assert results[-1][1] == 2  # reactivated once, after the passivation


async def test_timers_run_as_messages_and_die_with_the_activation() -> None:
    clock = ManualClock()
    async with phx.Node(env=Env(clock=clock)) as node:
        ref = node.ref(Ticker, "t")
        await ref.start(1.0)
        await tick(clock, 1.05, steps=1)
        await wait_until(lambda: node._runtime.statistics().messages_handled >= 2)
        assert await ref.read() == [1, 0]
        await tick(clock, 1.0, steps=1)  # second tick raises: rolled back
        await tick(clock, 1.0, steps=1)  # third tick, and the one-shot at 2.5 s

        def idle() -> bool:  # no message running
            act = node._runtime.activation(Ticker._phx_spec, "t")
            assert act is not None
            return act.task is None

        await wait_until(idle)
        assert await ref.read() == [2, 1]
        act = node._runtime.activation(Ticker._phx_spec, "t")
        assert act is not None and act.timers is not None and len(act.timers) == 1
        node._runtime.passivate(act, reason="test")
        assert act.timers is None
        await tick(clock, 10, steps=10)
        # Reactivated from the passive state; no timer survived the passivation.
        assert await ref.read() == [2, 1]
        again = node._runtime.activation(Ticker._phx_spec, "t")
        assert again is not None and again is not act and again.timers is None


async def test_call_timeout_is_indefinite_and_late_messages_are_skipped() -> None:
    async with phx.Node() as node:
        ref = node.ref(Gate, "slow")
        first = asyncio.ensure_future(ref.options(timeout=5).wait(1))
        await wait_until(lambda: node.statistics().agents.busy_agents == 1)
        with pytest.raises(phx.CallTimeout) as info:
            await ref.options(timeout=0.05).wait(2)  # queued behind the blocked one
        assert isinstance(info.value, TimeoutError)
        assert not info.value.definite
        Gate.opened["slow"].set()
        assert await first == 1
        # The timed-out message's deadline passed while it waited: it never ran.
        assert await ref.finished() == [1]


async def test_overload_refuses_after_the_timeout_and_drops_nothing() -> None:
    seen: list[tuple[str, ...]] = []
    phx.telemetry.attach("overload-test", [phx.telemetry.AGENT_OVERLOADED],
                         lambda e, m, md: seen.append(e))
    try:
        async with phx.Node() as node:
            ref = node.ref(Gate, "full")
            running = asyncio.ensure_future(ref.wait(0))
            await wait_until(lambda: node.statistics().agents.busy_agents == 1)
            await wait_until(lambda: node.statistics().agents.queued_messages == 0)
            queued = [asyncio.ensure_future(ref.wait(i)) for i in (1, 2)]
            await asyncio.sleep(0)
            with pytest.raises(phx.Overloaded, match="mailbox_limit 2") as info:
                await ref.options(timeout=0.05).wait(3)  # waits for room, then gives up
            assert info.value.definite
            with pytest.raises(phx.Overloaded, match="stayed full"):
                # A cast waits for room, up to its timeout, before it gives up.
                await ref.options(timeout=0.05).wait.cast(4)
            assert len(seen) == 2
            Gate.opened["full"].set()
            assert await asyncio.gather(running, *queued) == [0, 1, 2]
            assert await ref.finished() == [0, 1, 2]
    finally:
        phx.telemetry.detach("overload-test")


@pytest.mark.drops_messages  # the cast queued behind the failed activation
async def test_failed_activation_fails_callers_and_keeps_nothing_half_made() -> None:
    async with phx.Node() as node:
        ref = node.ref(BrokenInit, "b")
        with pytest.raises(phx.AgentError, match="cannot construct"):
            await ref.ping()
        assert node.statistics().agents.active_agents == 0
        await ref.ping.cast()  # queued; a failing activation is logged, not reported here
        with pytest.raises(phx.AgentError):
            await ref.ping()


async def test_graceful_shutdown_finishes_in_flight_work_then_refuses_new() -> None:
    LOG.clear()
    node = phx.Node(shutdown_timeout_s=5)
    await node.start()
    ref = node.ref(Gate, "inflight")
    await node.ref(Sleepy, "d").bump()
    pending = asyncio.ensure_future(ref.wait(7))
    await wait_until(lambda: node.statistics().agents.busy_agents == 1)
    closing = asyncio.ensure_future(node.aclose())
    await wait_until(lambda: node.state.value == "stopping")
    with pytest.raises(phx.NodeClosed):
        await node.ref(Plain, "late").bump()
    Gate.opened["inflight"].set()
    assert await pending == 7  # in-flight work finished
    await closing
    assert node.state.value == "stopped"
    assert ("deactivate", "d") in LOG  # agents were deactivated
    assert node.stop_reason == "shutdown"


async def test_shutdown_timeout_cancels_stuck_handlers() -> None:
    node = phx.Node(shutdown_timeout_s=0.1)
    await node.start()
    stuck = asyncio.ensure_future(node.ref(Gate, "stuck").wait(1))
    await wait_until(lambda: node.statistics().agents.busy_agents == 1)
    await node.aclose()
    with pytest.raises(phx.NodeClosed):
        await stuck


async def test_telemetry_events_and_a_broken_handler(caplog: pytest.LogCaptureFixture) -> None:
    got: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def good(event: tuple[str, ...], m: Any, md: Any) -> None:
        got.append((event, dict(md)))

    def broken(event: tuple[str, ...], m: Any, md: Any) -> None:
        raise RuntimeError("handler bug")

    names = [phx.telemetry.AGENT_STARTED, phx.telemetry.AGENT_CALL_STOP]
    phx.telemetry.attach("good", names, good)
    phx.telemetry.attach("broken", names, broken)
    try:
        async with phx.Node(name="tele") as node:
            assert await node.ref(Plain, "x").bump() == 1  # the caller never notices
            assert await node.ref(Plain, "x").bump() == 2
        assert "broken" not in phx.telemetry.handlers(phx.telemetry.AGENT_CALL_STOP)
        assert "handler bug" in caplog.text or "broken" in caplog.text
        assert [e for e, _ in got] == [names[0], names[1], names[1]]
        assert got[1][1] == {"node": "tele", "kind": "tests.plain", "method": "bump"}
    finally:
        phx.telemetry.detach("good")
        phx.telemetry.detach("broken")


async def test_node_shuts_down_when_its_services_escalate() -> None:
    crashes = 0

    async def flaky() -> None:
        nonlocal crashes
        crashes += 1
        raise RuntimeError("service broke")

    node = phx.Node(name="esc")
    await node.start()
    await node.supervise(phx.ChildSpec("flaky", flaky))
    reason = await asyncio.wait_for(node.wait_stopped(), 5)
    assert "services failed" in reason and "flaky" in reason
    assert crashes == 6  # max_restarts 5, then escalation
    with pytest.raises(phx.NodeClosed):
        await node.ref(Plain, "after").bump()


async def test_node_lifecycle_errors_and_members() -> None:
    node = phx.Node(name="m1")
    async with node:
        [me] = node.members()
        assert (me.name, me.status, me.role) == ("m1", "alive", "member")
        assert me.incarnation > 0
        with pytest.raises(RuntimeError, match="starts once"):
            await node.start()
    await node.aclose()  # idempotent
    assert node.members()[0].status == "left"


def test_bad_kind_options_are_config_errors() -> None:
    with pytest.raises(phx.ConfigError, match="durability"):
        class A(phx.Agent, durability="sometimes"):  # type: ignore[arg-type]
            pass
    with pytest.raises(phx.ConfigError, match="idle_timeout"):
        class B(phx.Agent, idle_timeout=-1):
            pass
    with pytest.raises(phx.ConfigError, match="mailbox_limit"):
        class C(phx.Agent, mailbox_limit=0):
            pass
    for count in (0, 6, -1, True, 3.0, "3"):  # never silently given 3 replicas instead
        with pytest.raises(phx.ConfigError,
                           match=f"replicas must be an int from 1 to 5, got {count!r}"):
            class R(phx.Agent, replicas=count):  # type: ignore[arg-type]
                pass
    for count in (1, 2, 3, 4, 5):
        class Ok(phx.Agent, kind=f"test.replicas{count}", replicas=count):
            pass
        assert Ok._phx_spec.replicas == count
    with pytest.raises(phx.ConfigError, match="a crdt kind has 3 replicas"):
        class Merged(phx.Agent, consistency="crdt", replicas=5):
            pass
    with pytest.raises(phx.ConfigError, match="cannot be named 'options'"):
        class D(phx.Agent):
            async def options(self) -> None: ...
