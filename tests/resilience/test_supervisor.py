"""Tests for the OTP-style supervisor: strategies, policies, intensity, escalation, shutdown.

Synchronisation is by events on a shared log with 5-second deadlines, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping

import pytest

from phoenix_cluster._foundation.env import ManualClock
from phoenix_cluster._resilience.supervisor import (
    ChildInfo,
    ChildSpec,
    RestartPolicy,
    Supervisor,
    SupervisorEscalation,
    SupervisorStatistics,
)


class Log:
    """An append-only list whose readers can wait for a condition on it."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self._changed = asyncio.Event()

    def add(self, entry: str) -> None:
        self.entries.append(entry)
        # Wake everyone waiting on the old event; later waiters get a fresh one.
        self._changed.set()
        self._changed = asyncio.Event()

    def count(self, entry: str) -> int:
        return self.entries.count(entry)

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not predicate():
                await self._changed.wait()

    async def until_count(self, entry: str, n: int) -> None:
        await self.until(lambda: self.count(entry) >= n)


class Kids:
    """Children driven by commands: each waits for 'crash' or 'exit' and logs what it does."""

    def __init__(self) -> None:
        self.log = Log()
        self.events = Log()
        self.payloads: list[tuple[str, Mapping[str, object]]] = []
        self._commands: defaultdict[str, asyncio.Queue[str]] = defaultdict(asyncio.Queue)

    def spec(self, name: str, restart: RestartPolicy = "permanent") -> ChildSpec:
        async def run() -> None:
            self.log.add(f"start {name}")
            try:
                command = await self._commands[name].get()
            except asyncio.CancelledError:
                self.log.add(f"stop {name}")
                raise
            self.log.add(f"{command} {name}")
            if command == "crash":
                raise RuntimeError(f"{name} boom")

        return ChildSpec(name, run, restart)

    def specs(self, *names: str) -> list[ChildSpec]:
        return [self.spec(name) for name in names]

    def on_event(self, event: str, payload: Mapping[str, object]) -> None:
        self.payloads.append((event, payload))
        self.events.add(f"{event} {payload['child']}")

    def crash(self, name: str) -> None:
        self._commands[name].put_nowait("crash")

    def exit(self, name: str) -> None:
        self._commands[name].put_nowait("exit")


def always_crashing(log: Log, name: str) -> ChildSpec:
    async def run() -> None:
        log.add(f"start {name}")
        raise RuntimeError(f"{name} always fails")

    return ChildSpec(name, run)


@pytest.fixture
def kids() -> Kids:
    return Kids()


def after(log: Log, marker: str, occurrence: int = 1) -> list[str]:
    """The log entries after the n-th occurrence of ``marker``."""
    seen = 0
    for i, entry in enumerate(log.entries):
        if entry == marker:
            seen += 1
            if seen == occurrence:
                return log.entries[i + 1 :]
    raise AssertionError(f"{marker!r} not logged {occurrence} times: {log.entries}")


# ------------------------------------------------------------------------- strategies


async def test_one_for_one_restarts_only_the_crashed_child(kids: Kids) -> None:
    async with Supervisor(kids.specs("a", "b", "c"), strategy="one_for_one") as sup:
        await kids.log.until_count("start c", 1)
        assert kids.log.entries == ["start a", "start b", "start c"]
        kids.crash("b")
        await kids.log.until_count("start b", 2)
        assert after(kids.log, "crash b") == ["start b"]
        assert [(c.name, c.running, c.restarts) for c in sup.which_children()] == [
            ("a", True, 0), ("b", True, 1), ("c", True, 0)]


async def test_rest_for_one_restarts_the_child_and_those_after_it(kids: Kids) -> None:
    async with Supervisor(kids.specs("a", "b", "c", "d"), strategy="rest_for_one") as sup:
        await kids.log.until_count("start d", 1)
        kids.crash("b")
        await kids.log.until_count("start d", 2)
        assert after(kids.log, "crash b") == [
            "stop d", "stop c", "start b", "start c", "start d"]
        assert [c.restarts for c in sup.which_children()] == [0, 1, 1, 1]
        assert sup.statistics().total_restarts == 1


async def test_one_for_all_restarts_everyone_in_order(kids: Kids) -> None:
    async with Supervisor(kids.specs("a", "b", "c"), strategy="one_for_all") as sup:
        await kids.log.until_count("start c", 1)
        kids.crash("b")
        await kids.log.until_count("start c", 2)
        assert after(kids.log, "crash b") == [
            "stop c", "stop a", "start a", "start b", "start c"]
        assert all(c.running for c in sup.which_children())


async def test_one_for_all_drops_stopped_temporary_and_leaves_ended_transient(
    kids: Kids,
) -> None:
    specs = [kids.spec("t", "transient"), kids.spec("tmp", "temporary"), kids.spec("p")]
    sup = Supervisor(specs, strategy="one_for_all", on_event=kids.on_event)
    async with sup:
        await kids.log.until_count("start p", 1)
        kids.exit("t")  # transient, normal exit: stays ended, even when siblings restart
        await kids.events.until_count("child_stopped t", 1)
        kids.crash("p")
        await kids.log.until_count("start p", 2)
        assert after(kids.log, "crash p") == ["stop tmp", "start p"]
        assert [(c.name, c.running) for c in sup.which_children()] == [
            ("t", False), ("p", True)]


# ------------------------------------------------------------------------- restart policies


async def test_permanent_child_is_restarted_after_normal_exit(kids: Kids) -> None:
    async with Supervisor([kids.spec("a", "permanent")], on_event=kids.on_event):
        await kids.log.until_count("start a", 1)
        kids.exit("a")
        await kids.log.until_count("start a", 2)
        assert kids.events.entries == [
            "child_started a", "child_stopped a", "child_restarted a"]


async def test_transient_child_is_not_restarted_after_normal_exit(kids: Kids) -> None:
    async with Supervisor([kids.spec("a", "transient")], on_event=kids.on_event) as sup:
        await kids.log.until_count("start a", 1)
        kids.exit("a")
        await kids.events.until_count("child_stopped a", 1)
        assert sup.which_children() == [ChildInfo("a", "transient", running=False, restarts=0)]
        assert kids.log.count("start a") == 1


async def test_transient_child_is_restarted_after_crash(kids: Kids) -> None:
    async with Supervisor([kids.spec("a", "transient")], on_event=kids.on_event) as sup:
        await kids.log.until_count("start a", 1)
        kids.crash("a")
        await kids.log.until_count("start a", 2)
        assert sup.which_children() == [ChildInfo("a", "transient", running=True, restarts=1)]
        assert kids.events.entries == [
            "child_started a", "child_crashed a", "child_restarted a"]


@pytest.mark.parametrize("command", ["exit", "crash"])
async def test_temporary_child_is_never_restarted_and_is_removed(
    kids: Kids, command: str
) -> None:
    specs = [kids.spec("tmp", "temporary"), kids.spec("other")]
    async with Supervisor(specs, on_event=kids.on_event) as sup:
        await kids.log.until_count("start other", 1)
        if command == "crash":
            kids.crash("tmp")
        else:
            kids.exit("tmp")
        await kids.events.until(lambda: any(e.endswith(" tmp") for e in kids.events.entries[2:]))
        assert [c.name for c in sup.which_children()] == ["other"]
        assert kids.log.count("start tmp") == 1
        assert sup.statistics().total_restarts == 0


# ------------------------------------------------------------------------- intensity


async def test_restart_intensity_exceeded_escalates_and_stops_children(kids: Kids) -> None:
    sup = Supervisor([kids.spec("steady"), always_crashing(kids.log, "bad")],
                     max_restarts=2, max_seconds=60, name="node", on_event=kids.on_event)
    await sup.start()
    with pytest.raises(SupervisorEscalation) as info:
        async with asyncio.timeout(5):
            await sup.wait()
    esc = info.value
    assert (esc.supervisor, esc.child) == ("node", "bad")
    assert "3 restarts" in esc.reason
    assert "max_restarts=2" in esc.reason
    assert "bad always fails" in esc.reason
    assert isinstance(esc.__cause__, RuntimeError)
    assert kids.log.count("start bad") == 3  # first start + 2 restarts, then it gave up
    assert "stop steady" in kids.log.entries
    assert not any(c.running for c in sup.which_children())
    assert sup.statistics().state == "failed"
    assert "escalated bad" in kids.events.entries
    await sup.aclose()  # closing a failed supervisor is a quiet no-op
    with pytest.raises(SupervisorEscalation):
        await sup.wait()


async def test_intensity_window_uses_injected_clock(kids: Kids) -> None:
    clock = ManualClock()
    sup = Supervisor([kids.spec("a")], max_restarts=1, max_seconds=10, clock=clock)
    await sup.start()
    await kids.log.until_count("start a", 1)
    for n in (2, 3, 4):  # one restart per window: never more than max_restarts
        kids.crash("a")
        await kids.log.until_count("start a", n)
        clock.advance(11)
    assert sup.statistics().state == "running"
    assert sup.statistics().total_restarts == 3
    kids.crash("a")
    await kids.log.until_count("start a", 5)
    kids.crash("a")  # second restart within the same 10 s: too many
    with pytest.raises(SupervisorEscalation, match="2 restarts"):
        async with asyncio.timeout(5):
            await sup.wait()


async def test_max_restarts_zero_escalates_on_first_restart(kids: Kids) -> None:
    sup = Supervisor([kids.spec("a")], max_restarts=0)
    await sup.start()
    await kids.log.until_count("start a", 1)
    kids.exit("a")  # permanent: even a normal exit needs a restart
    with pytest.raises(SupervisorEscalation, match="exited normally"):
        async with asyncio.timeout(5):
            await sup.wait()


async def test_aclose_during_restart_storm_is_safe() -> None:
    log = Log()
    sup = Supervisor([always_crashing(log, "bad")], max_restarts=10_000)
    await sup.start()
    await log.until_count("start bad", 20)
    async with asyncio.timeout(5):
        await sup.aclose()
        await sup.aclose()
    assert sup.statistics().state == "stopped"
    assert not any(c.running for c in sup.which_children())


# ------------------------------------------------------------------------- nesting


async def test_parent_restarts_an_escalating_child_supervisor(kids: Kids) -> None:
    sub = Supervisor([kids.spec("x")], max_restarts=0, name="sub")
    events = Log()
    parent = Supervisor([ChildSpec("sub", sub.run), kids.spec("p1")], name="parent",
                        on_event=lambda e, p: events.add(f"{e} {p['child']}"))
    async with parent:
        await kids.log.until(lambda: {"start x", "start p1"} <= set(kids.log.entries))
        kids.crash("x")  # sub may not restart anything: it escalates to the parent
        await kids.log.until_count("start x", 2)
        assert "child_crashed sub" in events.entries
        assert "child_restarted sub" in events.entries
        assert kids.log.count("start p1") == 1  # one_for_one: the sibling is untouched
        assert [(c.name, c.restarts) for c in parent.which_children()] == [
            ("sub", 1), ("p1", 0)]
        assert sub.statistics().state == "running"
    assert sub.statistics().state == "stopped"
    assert kids.log.count("stop x") == 1


async def test_escalation_up_the_tree_stops_everything() -> None:
    log = Log()
    sub = Supervisor([always_crashing(log, "x")], max_restarts=0, name="sub")
    sibling_stopped = asyncio.Event()

    async def sibling() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            sibling_stopped.set()

    parent = Supervisor([ChildSpec("sibling", sibling), ChildSpec("sub", sub.run)],
                        max_restarts=1, name="parent")
    await parent.start()
    with pytest.raises(SupervisorEscalation) as info:
        async with asyncio.timeout(5):
            await parent.wait()
    assert (info.value.supervisor, info.value.child) == ("parent", "sub")
    cause = info.value.__cause__
    assert isinstance(cause, SupervisorEscalation)
    assert (cause.supervisor, cause.child) == ("sub", "x")
    assert log.count("start x") == 2  # sub ran twice: once, and once after the restart
    assert sibling_stopped.is_set()
    assert sub.statistics().state == "failed"
    assert parent.statistics().state == "failed"


async def test_cancelling_run_stops_the_children(kids: Kids) -> None:
    sup = Supervisor(kids.specs("a", "b"))
    runner = asyncio.create_task(sup.run())
    await kids.log.until_count("start b", 1)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await runner
    assert kids.log.entries[-2:] == ["stop b", "stop a"]
    assert sup.statistics().state == "stopped"


# ------------------------------------------------------------------------- shutdown


async def test_aclose_stops_children_in_reverse_order(kids: Kids) -> None:
    sup = Supervisor(kids.specs("a", "b", "c"), on_event=kids.on_event)
    await sup.start()
    await kids.log.until_count("start c", 1)
    await sup.aclose()
    assert kids.log.entries[3:] == ["stop c", "stop b", "stop a"]
    assert kids.events.entries[3:] == ["child_stopped c", "child_stopped b", "child_stopped a"]
    assert sup.statistics().state == "stopped"
    await sup.aclose()  # idempotent
    async with asyncio.timeout(5):
        await sup.wait()  # a plain stop is not an escalation


async def test_child_ignoring_cancellation_does_not_hang_aclose(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = Log()
    release = asyncio.Event()

    async def stubborn() -> None:
        log.add("start")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log.add("ignoring cancel")
            await release.wait()
            log.add("finished")

    sup = Supervisor([ChildSpec("stubborn", stubborn, shutdown_timeout_s=0.05)])
    await sup.start()
    await log.until_count("start", 1)
    async with asyncio.timeout(5):
        await sup.aclose()
    assert sup.statistics().state == "stopped"
    assert "did not stop within 0.05s" in caplog.text
    release.set()  # let the abandoned task finish so the test leaves nothing behind
    await log.until_count("finished", 1)


async def test_add_child_and_terminate_child_at_runtime(kids: Kids) -> None:
    async with Supervisor(kids.specs("a"), strategy="rest_for_one") as sup:
        await sup.add_child(kids.spec("b"))
        await kids.log.until_count("start b", 1)
        with pytest.raises(ValueError, match="already has a child named 'b'"):
            await sup.add_child(kids.spec("b"))
        kids.crash("a")  # appended at the end, so rest_for_one restarts it too
        await kids.log.until_count("start b", 2)
        await sup.terminate_child("b")
        assert kids.log.entries[-1] == "stop b"
        assert [c.name for c in sup.which_children()] == ["a"]
        with pytest.raises(KeyError, match="no child 'b'"):
            await sup.terminate_child("b")
    with pytest.raises(RuntimeError, match="cannot add child 'c'"):
        await sup.add_child(kids.spec("c"))


async def test_start_twice_is_an_error(kids: Kids) -> None:
    async with Supervisor(kids.specs("a")) as sup:
        with pytest.raises(RuntimeError, match="already running"):
            await sup.start()


async def noop() -> None:
    pass


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="strategy"):
        Supervisor(strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_restarts"):
        Supervisor(max_restarts=-1)
    with pytest.raises(ValueError, match="already has a child"):
        Supervisor([ChildSpec("a", noop), ChildSpec("a", noop)])
    with pytest.raises(ValueError, match="shutdown_timeout_s"):
        ChildSpec("a", noop, shutdown_timeout_s=-1)


# ------------------------------------------------------------------------- observability


async def test_crash_is_logged_and_reported(
    kids: Kids, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="phoenix_cluster.supervisor")
    async with Supervisor([kids.spec("a")], name="node", on_event=kids.on_event):
        await kids.log.until_count("start a", 1)
        kids.crash("a")
        await kids.log.until_count("start a", 2)
    crash_lines = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crash_lines) == 1
    assert crash_lines[0].getMessage() == (
        "supervisor 'node': child 'a' crashed: RuntimeError('a boom')")
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)
    crashed = [p for e, p in kids.payloads if e == "child_crashed"]
    assert crashed == [{"supervisor": "node", "child": "a", "reason": "RuntimeError('a boom')"}]


async def test_on_event_raising_is_tolerated(
    kids: Kids, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: str, payload: Mapping[str, object]) -> None:
        raise ValueError("observer bug")

    async with Supervisor([kids.spec("a")], on_event=broken) as sup:
        await kids.log.until_count("start a", 1)
        kids.crash("a")
        await kids.log.until_count("start a", 2)
        assert sup.statistics().total_restarts == 1
    assert "on_event('child_crashed') raised" in caplog.text
    assert "observer bug" in caplog.text


async def test_which_children_statistics_and_repr(kids: Kids) -> None:
    sup = Supervisor([kids.spec("a"), kids.spec("b", "transient"), kids.spec("c", "temporary")],
                     name="node", strategy="one_for_one")
    assert repr(sup) == "<Supervisor node one_for_one [3 children, 0 restarts]>"
    assert sup.statistics() == SupervisorStatistics("node", "one_for_one", 3, 0, "idle")
    assert not any(c.running for c in sup.which_children())
    async with sup:
        await kids.log.until_count("start c", 1)
        kids.crash("a")
        await kids.log.until_count("start a", 2)
        assert sup.which_children() == [
            ChildInfo("a", "permanent", running=True, restarts=1),
            ChildInfo("b", "transient", running=True, restarts=0),
            ChildInfo("c", "temporary", running=True, restarts=0),
        ]
        assert repr(sup) == "<Supervisor node one_for_one [3 children, 1 restarts]>"
        assert sup.statistics() == SupervisorStatistics("node", "one_for_one", 3, 1, "running")
    assert sup.statistics().state == "stopped"
