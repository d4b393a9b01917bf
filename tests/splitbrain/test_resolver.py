"""The resolver: stability timer, flapping, pauses, the log line, telemetry, on_down, lease."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import pytest

from phoenix_cluster._foundation.env import Env, ManualClock
from phoenix_cluster._membership.snapshot import Member, MembershipSnapshot, MemberStatus
from phoenix_cluster._splitbrain import EXIT_DOWNED
from phoenix_cluster._splitbrain.resolver import SplitBrainResolver
from phoenix_cluster._splitbrain.settings import SplitBrainSettings
from phoenix_cluster._splitbrain.strategies import (
    KeepMajority,
    KeepOldest,
    LeaseMajority,
    StaticQuorum,
    Strategy,
)
from phoenix_cluster._splitbrain.view import Decision
from phoenix_cluster._telemetry.bus import EventName, TelemetryBus
from phoenix_cluster._telemetry.events import CLUSTER_PARTITION_DETECTED
from phoenix_cluster.errors import ConfigError

NAMES = "abcde"
ADDRESS = {n: f"10.0.0.{i}:7100" for i, n in enumerate(NAMES, start=1)}


class Snapshots:
    """Builds versioned snapshots of a..e (and extras); every member alive unless told."""

    def __init__(self) -> None:
        self.version = 0

    def __call__(self, statuses: Mapping[str, MemberStatus] | None = None, /, *,
                 incarnations: Mapping[str, int] | None = None,
                 **status: MemberStatus) -> MembershipSnapshot:
        self.version += 1
        inc = incarnations or {}
        status = {**(statuses or {}), **status}
        members = tuple(
            Member(n, ADDRESS[n], status.get(n, "alive"), inc.get(n, 1)) for n in NAMES
        )
        return MembershipSnapshot(self.version, members)


class Harness:
    """One resolver on a manual clock, recording callbacks and telemetry."""

    def __init__(self, strategy: Strategy | None = None, *, self_name: str = "a",
                 clock: ManualClock | None = None, **kwargs: object) -> None:
        self.clock = clock or ManualClock()
        self.bus = TelemetryBus()
        self.events: list[tuple[EventName, Mapping[str, float], Mapping[str, object]]] = []
        self.bus.attach("test", [CLUSTER_PARTITION_DETECTED],
                        lambda e, m, md: self.events.append((e, m, md)))
        self.downs: list[str] = []
        self.keeps: list[Decision] = []
        self.snap = Snapshots()

        async def on_down(reason: str) -> None:
            self.downs.append(reason)

        self.resolver = SplitBrainResolver(
            strategy or KeepMajority(),
            env=Env(clock=self.clock),
            bus=self.bus,
            self_name=self_name,
            on_down=on_down,
            on_keep=self.keeps.append,
            stable_after_s=7.0,
            **kwargs,  # type: ignore[arg-type]
        )


async def test_decides_only_after_the_unreachable_set_is_stable() -> None:
    h = Harness()
    h.resolver.update(h.snap(d="suspect", e="suspect"))
    assert h.resolver.state == "pending"
    h.clock.advance(6.9)
    assert await h.resolver.check() is None
    h.resolver.update(h.snap(d="dead", e="suspect"))  # suspect -> dead is no change
    h.clock.advance(0.1)
    decision = await h.resolver.check()
    assert decision is not None and decision.action == "keep"
    assert decision.down == {"d", "e"}
    assert h.keeps == [decision] and h.downs == []
    # d and e are removed now: nothing left to decide, even if the snapshot still lists them.
    h.clock.advance(60)
    assert await h.resolver.check() is None  # calm starts: they still count for now
    h.clock.advance(7)
    assert await h.resolver.check() is None  # calm for stable_after: they stop counting
    stats = h.resolver.statistics()
    assert stats.state == "idle"
    assert (stats.decisions, stats.removed_members, stats.unreachable) == (1, 2, 0)


async def test_nothing_unreachable_means_nothing_to_decide() -> None:
    h = Harness()
    assert await h.resolver.check() is None  # no snapshot yet
    h.resolver.update(h.snap())
    h.clock.advance(100)
    assert await h.resolver.check() is None
    assert h.events == [] and h.resolver.state == "idle"


async def test_a_flapping_link_resets_the_timer() -> None:
    h = Harness()
    h.resolver.update(h.snap(d="suspect"))          # t=0
    h.clock.advance(5)
    h.resolver.update(h.snap())                     # t=5: d refuted
    h.clock.advance(1)
    h.resolver.update(h.snap(d="suspect"))          # t=6: suspected again
    h.clock.advance(4)
    assert await h.resolver.check() is None         # t=10: only 4 s stable
    h.resolver.update(h.snap(d="suspect", e="suspect"))  # t=10: the set grows
    h.clock.advance(6.5)
    assert await h.resolver.check() is None         # t=16.5: 6.5 s stable
    h.clock.advance(0.5)
    decision = await h.resolver.check()             # t=17
    assert decision is not None and decision.down == {"d", "e"}
    assert h.resolver.statistics().timer_resets == 2


async def test_one_log_line_with_every_input(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(self_name="c")
    # 2|2 plus a removed-by-left e: the tie-break decides, a (10.0.0.1) is on the other side.
    h.resolver.update(h.snap(a="suspect", b="dead", e="left"))
    h.clock.advance(7)
    with caplog.at_level(logging.INFO, logger="phoenix_cluster.splitbrain"):
        decision = await h.resolver.check()
    assert decision is not None and decision.action == "down_self"
    records = [r for r in caplog.records if r.name == "phoenix_cluster.splitbrain"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert records[0].levelno == logging.WARNING
    for part in ("split-brain decision at c: DOWN_SELF by keep-majority",
                 "reachable=[c, d]", "unreachable=[a, b]", "broken_links=[]",
                 "tie_break=lowest address 10.0.0.1:7100 (a) is on the other side",
                 "lease_holder=None", "stable_for=7.0s",
                 "reason: keep-majority: 2 reachable [c, d] vs 2 unreachable [a, b]"):
        assert part in line, part
    assert "\n" not in line


async def test_telemetry_event_carries_the_decision_and_its_inputs() -> None:
    h = Harness()
    h.resolver.update(h.snap(e="suspect"))
    h.clock.advance(8)
    await h.resolver.check()
    [(event, measurements, metadata)] = h.events
    assert event == CLUSTER_PARTITION_DETECTED
    assert measurements == {"reachable": 4.0, "unreachable": 1.0, "stable_for_s": 8.0}
    assert {k: metadata[k] for k in ("node", "strategy", "decision", "reachable",
                                     "unreachable", "down")} == {
        "node": "a", "strategy": "keep-majority", "decision": "keep",
        "reachable": ("a", "b", "c", "d"), "unreachable": ("e",), "down": ("e",)}
    assert str(metadata["reason"]).startswith("keep-majority: 4 reachable")


async def test_on_down_is_called_exactly_once() -> None:
    h = Harness(self_name="a")
    h.resolver.update(h.snap(b="suspect", c="suspect", d="suspect"))  # a, e vs b, c, d
    h.clock.advance(7)
    decision = await h.resolver.check()
    assert decision is not None and decision.action == "down_self"
    assert h.downs == [decision.reason]
    # Later snapshots and checks change nothing: a downed node never decides again.
    h.resolver.update(h.snap(b="suspect", c="suspect", d="suspect", e="suspect"))
    h.clock.advance(30)
    assert await h.resolver.check() is None
    assert len(h.downs) == 1 and h.resolver.state == "downed"
    assert h.resolver.statistics().decisions == 1
    assert EXIT_DOWNED == 3


async def test_a_raising_on_down_is_logged_and_still_called_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def on_down(reason: str) -> None:
        calls.append(reason)
        raise RuntimeError("boom")

    clock = ManualClock()
    resolver = SplitBrainResolver(KeepMajority(), env=Env(clock=clock), bus=TelemetryBus(),
                                  self_name="a", on_down=on_down)
    resolver.update(Snapshots()(b="dead", c="dead", d="dead"))
    clock.advance(7)
    await resolver.check()
    await resolver.check()
    assert len(calls) == 1
    assert "on_down callback raised" in caplog.text


async def test_paused_node_waking_up_waits_then_downs_itself() -> None:
    # c was SIGSTOPped; when it wakes, its membership has every probe timed out.
    h = Harness(self_name="c")
    h.resolver.update(h.snap())
    h.clock.advance(45)  # the pause: nothing unreachable was pending, nothing to decide
    h.resolver.update(h.snap(a="suspect", b="suspect", d="suspect", e="suspect"))
    h.clock.advance(6)
    assert await h.resolver.check() is None
    h.clock.advance(1)
    decision = await h.resolver.check()
    assert decision is not None and decision.action == "down_self"
    assert "1 reachable [c] vs 4 unreachable [a, b, d, e]" in decision.reason
    assert len(h.downs) == 1


async def _run_for(clock: ManualClock, seconds: float, step: float = 0.25) -> None:
    """Advance the clock in small steps, letting the resolver's loop run after each."""
    for _ in range(round(seconds / step)):
        clock.advance(step)
        for _ in range(5):
            await asyncio.sleep(0)


async def test_a_pause_restarts_the_timer_of_a_pending_partition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    async with h.resolver:
        h.resolver.update(h.snap(e="suspect"))  # t=0: pending
        await _run_for(h.clock, 3)
        h.clock.advance(60)                     # the whole process stopped for 60 s
        await _run_for(h.clock, 0.25)           # first tick after waking: pause seen
        assert h.resolver.statistics().pauses_detected == 1
        assert h.keeps == []                    # not decided on pre-pause data
        await _run_for(h.clock, 6.5)
        assert h.keeps == []
        await _run_for(h.clock, 1)
        assert [d.down for d in h.keeps] == [frozenset({"e"})]
    assert "a did not run for 61.0s (paused or stuck loop)" in caplog.text
    assert h.resolver.state == "closed"


async def test_background_loop_decides_with_an_autojump_clock() -> None:
    h = Harness(self_name="e", clock=ManualClock(autojump=True))
    async with h.resolver:
        h.resolver.update(h.snap(a="dead", b="dead", c="dead"))
        for _ in range(200):
            if h.downs:
                break
            await h.clock.sleep(0.5)
    assert len(h.downs) == 1 and "this side is the minority" in h.downs[0]


async def test_left_members_and_removed_members_do_not_count() -> None:
    h = Harness(StaticQuorum(3))
    h.resolver.update(h.snap(e="dead"))
    h.clock.advance(7)
    decision = await h.resolver.check()
    assert decision is not None and decision.down == {"e"}
    h.resolver.update(h.snap(e="dead", d="left"))    # d leaves gracefully: no partition
    h.clock.advance(7)
    assert await h.resolver.check() is None          # calm starts (e still counts)
    h.clock.advance(7)
    assert await h.resolver.check() is None          # calm long enough: e stops counting
    h.resolver.update(h.snap(e="dead", d="left", c="dead"))
    h.clock.advance(7)
    decision = await h.resolver.check()              # a, b vs c: 2 < 3
    assert decision is not None and decision.action == "down_self"
    assert "quorum 3, 2 reachable [a, b] vs 1 unreachable [c]" in decision.reason


async def test_a_cut_off_node_learning_its_losses_one_by_one_still_downs() -> None:
    # a is cut off from b, c, d, e but suspects them one at a time, each further apart
    # than stable_after (its probing slows down while it is unhealthy). Removed members
    # keep counting as the other side until things calm down, so a cannot win 4|1, 3|1,
    # 2|1 and a final 1|1 tie on its low address.
    h = Harness()
    h.resolver.update(h.snap(b="dead"))
    h.clock.advance(7)
    decision = await h.resolver.check()
    assert decision is not None and decision.action == "keep"
    h.resolver.update(h.snap(b="dead", c="dead"))
    h.clock.advance(7)
    decision = await h.resolver.check()  # 3|2
    assert decision is not None and decision.action == "keep"
    h.resolver.update(h.snap(b="dead", c="dead", d="dead"))
    h.clock.advance(7)
    decision = await h.resolver.check()                  # 2|3: the minority
    assert decision is not None and decision.action == "down_self"
    assert len(h.downs) == 1


async def test_a_removed_member_counts_again_as_a_new_incarnation() -> None:
    h = Harness()
    h.resolver.update(h.snap(e="dead"))
    h.clock.advance(7)
    await h.resolver.check()
    h.resolver.update(h.snap(e="alive"))                      # same incarnation: still gone
    assert h.resolver.statistics().reachable == 4
    h.resolver.update(h.snap(incarnations={"e": 2}))          # restarted: counts again
    assert h.resolver.statistics().reachable == 5
    assert h.resolver.statistics().removed_members == 0


async def test_older_snapshots_are_ignored() -> None:
    h = Harness()
    newer = h.snap(e="suspect")
    older = MembershipSnapshot(newer.version - 1, newer.members[:4])
    h.resolver.update(newer)
    h.resolver.update(older)
    assert h.resolver.statistics().unreachable == 1


async def test_broken_links_from_membership_down_the_junior_endpoint() -> None:
    ages = {n: float(i) for i, n in enumerate(NAMES)}
    older, younger = Harness(self_name="a"), Harness(self_name="b")
    for h in (older, younger):
        h.resolver.update(h.snap(), up_since=ages, broken_links=[("a", "b")])
        assert h.resolver.state == "pending"
        h.clock.advance(7)
        await h.resolver.check()
    assert older.downs == [] and [k.down for k in older.keeps] == [frozenset({"b"})]
    assert len(younger.downs) == 1 and "b is the junior endpoint" in younger.downs[0]


async def test_keep_oldest_uses_the_gossiped_ages() -> None:
    # By incarnation, a (1) would be oldest; the gossiped ages say e is.
    h = Harness(KeepOldest(), self_name="a")
    h.resolver.update(h.snap(d="suspect", e="suspect"), up_since={"e": 0.0, "a": 5.0})
    h.clock.advance(7)
    decision = await h.resolver.check()
    assert decision is not None and decision.action == "down_self"
    assert "oldest e (up since 0)" in decision.reason


def test_statistics_and_repr() -> None:
    h = Harness()
    assert repr(h.resolver) == "<SplitBrainResolver keep-majority at a [idle, 0 decisions]>"
    h.resolver.update(h.snap(d="suspect", e="suspect"))
    h.clock.advance(3)
    assert repr(h.resolver) == (
        "<SplitBrainResolver keep-majority at a [pending: 2 unreachable for 3.0/7.0s, "
        "0 decisions]>"
    )
    stats = h.resolver.statistics()
    assert (stats.strategy, stats.state, stats.reachable, stats.unreachable) == (
        "keep-majority", "pending", 3, 2)
    assert stats.last_decision is None and stats.stable_after_s == 7.0


def test_configuration_errors() -> None:
    env, bus = Env(clock=ManualClock()), TelemetryBus()
    with pytest.raises(ConfigError, match="needs a lease provider") as info:
        SplitBrainResolver(LeaseMajority(), env=env, bus=bus, self_name="a",
                           on_down=lambda r: None)
    assert info.value.key == "strategy"
    with pytest.raises(ConfigError) as info:
        SplitBrainResolver(KeepMajority(), env=env, bus=bus, self_name="a",
                           on_down=lambda r: None, stable_after_s=0)
    assert info.value.key == "stable_after_s"
    resolver = SplitBrainResolver.from_settings(
        SplitBrainSettings(strategy="static-quorum", quorum_size=2, stable_after_s=3),
        env=env, bus=bus, self_name="a", on_down=lambda r: None)
    assert resolver.strategy == StaticQuorum(2) and resolver.stable_after_s == 3


# ------------------------------------------------------------------------------- lease

class FakeLease:
    """An in-memory lease on the test's clock: re-entrant per owner, held for ttl_s."""

    def __init__(self, clock: ManualClock, *, fail: Exception | None = None,
                 hang: bool = False) -> None:
        self.clock = clock
        self.holder: str | None = None
        self.until = 0.0
        self.fail = fail
        self.hang = hang
        self.calls: list[tuple[str, float, float]] = []

    async def acquire(self, owner: str, ttl_s: float) -> bool:
        self.calls.append((owner, ttl_s, self.clock.monotonic()))
        if self.fail is not None:
            raise self.fail
        if self.hang:
            await asyncio.Event().wait()
        now = self.clock.monotonic()
        if self.holder in (None, owner) or now >= self.until:
            self.holder, self.until = owner, now + ttl_s
            return True
        return False

    async def release(self, owner: str) -> None:
        if self.holder == owner:
            self.holder = None


async def test_lease_majority_wins_and_minority_downs() -> None:
    clock = ManualClock(autojump=True)
    lease = FakeLease(clock)
    # Side {a, b} (minority) and side {c, d, e}: every node runs its own resolver.
    sides = {"a": {"c", "d", "e"}, "b": {"c", "d", "e"}, "c": {"a", "b"}, "d": {"a", "b"},
             "e": {"a", "b"}}
    harnesses = {n: Harness(LeaseMajority(), self_name=n, clock=clock, lease=lease)
                 for n in sides}
    for n, h in harnesses.items():
        h.resolver.update(h.snap(dict.fromkeys(sides[n], "suspect")))
    clock.advance(7)
    decisions = await asyncio.gather(*(h.resolver.check() for h in harnesses.values()))
    actions = {n: d.action for n, d in zip(harnesses, decisions, strict=True) if d}
    assert actions == {"a": "down_self", "b": "down_self", "c": "keep", "d": "keep",
                       "e": "keep"}
    assert lease.holder == "c"  # the majority side's id: its lowest address
    # The majority tried at once; the minority waited its 2 s head start.
    assert sorted({(o, t) for o, _, t in lease.calls}) == [("a", 9.0), ("c", 7.0)]
    assert {o for o, ttl, _ in lease.calls} == {"a", "c"}
    assert all(ttl == 60.0 for _, ttl, _ in lease.calls)
    assert "lease holder None" in harnesses["a"].downs[0]


async def test_the_side_that_reaches_the_lease_survives_even_as_the_minority() -> None:
    """Akka's lease-majority: the referee decides, not the head count. The majority {c,
    d, e} cannot reach the lease service; the minority {a, b} gets it after its head
    start and keeps, the majority downs."""
    clock = ManualClock(autojump=True)
    lease = FakeLease(clock)

    class CutOffFromMajority:
        async def acquire(self, owner: str, ttl_s: float) -> bool:
            if owner == "c":
                raise OSError("lease service unreachable from c's side")
            return await lease.acquire(owner, ttl_s)

        async def release(self, owner: str) -> None:
            await lease.release(owner)

    sides = {"a": {"c", "d", "e"}, "b": {"c", "d", "e"}, "c": {"a", "b"}, "d": {"a", "b"},
             "e": {"a", "b"}}
    harnesses = {n: Harness(LeaseMajority(), self_name=n, clock=clock,
                            lease=CutOffFromMajority()) for n in sides}
    for n, h in harnesses.items():
        h.resolver.update(h.snap(dict.fromkeys(sides[n], "suspect")))
    clock.advance(7)
    decisions = await asyncio.gather(*(h.resolver.check() for h in harnesses.values()))
    actions = {n: d.action for n, d in zip(harnesses, decisions, strict=True) if d}
    assert actions == {"a": "keep", "b": "keep", "c": "down_self", "d": "down_self",
                       "e": "down_self"}
    assert lease.holder == "a"
    kept = harnesses["a"].resolver.last_decision
    assert kept is not None and kept.down == frozenset({"c", "d", "e"})
    assert "lease owner id a, lease holder a; this side holds the lease" in kept.reason
    assert "lease owner id c, lease holder None" in harnesses["c"].downs[0]


async def test_lease_service_down_means_down_self() -> None:
    clock = ManualClock(autojump=True)
    h = Harness(LeaseMajority(), clock=clock, lease=FakeLease(clock, fail=OSError("etcd")))
    h.resolver.update(h.snap(e="dead"))
    clock.advance(7)
    decision = await h.resolver.check()
    assert decision is not None and decision.action == "down_self"
    assert len(h.downs) == 1


async def test_lease_acquire_that_hangs_times_out(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(autojump=True)
    h = Harness(LeaseMajority(), clock=clock, lease=FakeLease(clock, hang=True),
                lease_acquire_timeout_s=3.0)
    h.resolver.update(h.snap(e="dead"))
    clock.advance(7)
    decision = await h.resolver.check()
    assert decision is not None and decision.action == "down_self"
    assert clock.monotonic() == pytest.approx(10.0)
    assert "took longer than 3.0s" in caplog.text


async def test_lease_wait_is_abandoned_when_the_partition_changes() -> None:
    clock = ManualClock(autojump=True)
    lease = FakeLease(clock)
    h = Harness(LeaseMajority(), self_name="a", clock=clock, lease=lease)
    h.resolver.update(h.snap(c="dead", d="dead", e="dead"))  # minority: waits 2 s
    clock.advance(7)
    pending = asyncio.ensure_future(h.resolver.check())
    await asyncio.sleep(0)
    h.resolver.update(h.snap(c="dead", d="dead"))  # e came back during the wait
    assert await pending is None
    assert lease.calls == [] and h.downs == []


async def test_a_node_declared_dead_by_the_others_downs_itself_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The woken node sees nobody unreachable, but hears it was declared dead meanwhile.
    h = Harness(self_name="c")
    h.resolver.update(h.snap())
    decision = await h.resolver.declared_dead(incarnation=1, by="a")
    assert decision is not None and decision.action == "down_self"
    assert "declared c dead (incarnation 1, reported by a)" in decision.reason
    assert h.downs == [decision.reason]
    assert [md["decision"] for _, _, md in h.events] == ["down_self"]
    assert "split-brain decision at c: DOWN_SELF" in caplog.text
    assert await h.resolver.declared_dead(incarnation=1) is None
    h.resolver.update(h.snap(a="dead", b="dead", d="dead"))
    h.clock.advance(10)
    assert await h.resolver.check() is None
    assert len(h.downs) == 1
    # Also works before any snapshot arrived.
    fresh = Harness(self_name="z")
    assert await fresh.resolver.declared_dead(incarnation=7) is not None


async def test_declared_dead_while_waiting_for_the_lease_downs_once() -> None:
    clock = ManualClock(autojump=True)
    h = Harness(LeaseMajority(), self_name="a", clock=clock, lease=FakeLease(clock))
    h.resolver.update(h.snap(c="dead", d="dead", e="dead"))  # minority: waits 2 s
    clock.advance(7)
    pending = asyncio.ensure_future(h.resolver.check())
    await asyncio.sleep(0)
    assert await h.resolver.declared_dead(incarnation=1) is not None
    assert await pending is None
    assert len(h.downs) == 1 and len(h.events) == 1
