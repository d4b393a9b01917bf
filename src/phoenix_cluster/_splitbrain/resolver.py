"""Apply a split-brain strategy to the membership this node sees, on the node's clock.

The :class:`SplitBrainResolver` is fed every :class:`MembershipSnapshot` (``update``). It
tracks since when the set of unreachable members (``suspect`` or ``dead``, not ``left``,
not already removed) has been unchanged; once a non-empty set has been stable for
``stable_after_s`` it builds a :class:`PartitionView`, acquires the lease if the strategy
needs one, asks the strategy, and acts:

- it logs ONE line at WARNING with the decision and every input (strategy, reachable,
  unreachable, broken links, tie-break, lease holder, reason);
- it emits ``CLUSTER_PARTITION_DETECTED`` with the same facts as metadata;
- on ``keep`` it removes the downed members from its own accounting (they count again
  only as a newer incarnation) and calls ``on_keep(decision)``, where the node marks them
  gone; on ``down_self`` it calls ``on_down(reason)`` exactly once and never decides again.

Any change of the reachable or unreachable set restarts the stability timer, so a
flapping link never produces a decision. The periodic check also watches its own
wake-ups: when it wakes far later than scheduled (the process was SIGSTOPped or the loop
was stuck) it restarts the timer, because the membership view it holds predates the gap.
And when the membership hears that the others' decision *downed* this node (not
merely that their failure detector declared it dead, which it refutes), it calls
``declared_dead``: the node downs itself rather than come back with stale agents.

Reachability is separate from downing (Akka's model): the failure detector only makes
members unreachable (``suspect``, ``dead``); nobody leaves the cluster but by a decision
taken here on a view stable for ``stable_after_s``. A partition that heals before that
downs nobody: each member refutes the deaths it hears of and carries on.

Contract with the membership service: ``dead`` members must stay in the snapshots (as
``dead``) until this resolver has decided; removing them is the resolver's ``keep``
decision, surfaced through ``on_keep``. A membership that silently forgot unreachable
members would let both sides of a partition see a healthy, smaller cluster.

Imports only L0-L3 pieces (``_foundation``, ``_telemetry``, ``_membership.snapshot``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._membership.snapshot import MembershipSnapshot
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster.errors import ConfigError

from .lease import LeaseProvider, LeaseReferee
from .report import ResolverState, SplitBrainStatistics, report_decision
from .settings import SplitBrainSettings, make_strategy
from .strategies import LeaseMajority, Strategy
from .tracker import PartitionTracker
from .view import Decision, PartitionView, ViewMember

__all__ = [
    "LeaseProvider",
    "OnDown",
    "OnKeep",
    "SplitBrainResolver",
]

_log = logging.getLogger("phoenix_cluster.splitbrain")

OnDown = Callable[[str], Awaitable[None] | None]
OnKeep = Callable[[Decision], Awaitable[None] | None]
_T = TypeVar("_T")


class SplitBrainResolver:
    """Decides, once a partition is stable, whether this node's side survives.

    Args:
        strategy: a pure strategy from :mod:`.strategies` (see :func:`make_strategy`).
        env: the node's clock (stability timer, lease delay and timeout, pause watch).
        bus: where ``CLUSTER_PARTITION_DETECTED`` goes.
        self_name: this node's name as it appears in the snapshots.
        stable_after_s: how long the unreachable set must stay unchanged.
        on_down: called exactly once with the reason when this node must down itself;
            may be a coroutine function. The node stops serving, then exits with
            ``EXIT_DOWNED`` or rejoins as a new incarnation.
        on_keep: called with every ``keep`` decision; the node marks ``decision.down`` as
            gone (ring, membership). Optional.
        lease: the referee for the ``lease`` strategy; required by it, ignored otherwise.
        lease_ttl_s: how long an acquired lease holds.
        lease_acquire_timeout_s: how long one acquire may take before it counts as lost.
        tick_interval_s: how often the background check runs; default
            ``min(1, stable_after_s / 4)``.

    Raises:
        ConfigError: a non-positive duration, or the lease strategy without a lease.
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        env: Env,
        bus: TelemetryBus,
        self_name: str,
        on_down: OnDown,
        stable_after_s: float = 7.0,
        on_keep: OnKeep | None = None,
        lease: LeaseProvider | None = None,
        lease_ttl_s: float = 60.0,
        lease_acquire_timeout_s: float = 5.0,
        tick_interval_s: float | None = None,
    ) -> None:
        for key, value in (
            ("stable_after_s", stable_after_s),
            ("lease_ttl_s", lease_ttl_s),
            ("lease_acquire_timeout_s", lease_acquire_timeout_s),
            ("tick_interval_s", 1.0 if tick_interval_s is None else tick_interval_s),
        ):
            if not value > 0:
                raise ConfigError(f"split-brain {key} must be > 0 seconds; got {value!r}", key=key)
        if isinstance(strategy, LeaseMajority) and lease is None:
            raise ConfigError(
                "split-brain strategy 'lease' needs a lease provider (etcd or Kubernetes); "
                "got none",
                key="strategy",
            )
        self.strategy = strategy
        self.self_name = self_name
        self.stable_after_s = stable_after_s
        self._clock = env.clock
        self._bus = bus
        self._on_down = on_down
        self._on_keep = on_keep
        self._referee = (None if lease is None else
                         LeaseReferee(lease, env.clock, lease_ttl_s, lease_acquire_timeout_s))
        self._tick_s = min(1.0, stable_after_s / 4) if tick_interval_s is None else tick_interval_s
        # A wake-up this late means the loop (or the whole process) did not run: the
        # membership view predates the gap, so stability must be measured again.
        self._pause_threshold_s = max(2 * self._tick_s, stable_after_s / 2)
        self._tracker = PartitionTracker(self_name, stable_after_s, self._clock.monotonic())
        self._state: ResolverState = "idle"
        self._task: asyncio.Task[None] | None = None
        self._pauses = 0
        self._decisions = 0
        self._last: Decision | None = None
        self._on_down_called = False

    @classmethod
    def from_settings(
        cls,
        settings: SplitBrainSettings,
        *,
        env: Env,
        bus: TelemetryBus,
        self_name: str,
        on_down: OnDown,
        on_keep: OnKeep | None = None,
        lease: LeaseProvider | None = None,
    ) -> SplitBrainResolver:
        """A resolver configured by ``settings`` (strategy, timings, lease)."""
        return cls(
            make_strategy(settings),
            env=env,
            bus=bus,
            self_name=self_name,
            on_down=on_down,
            on_keep=on_keep,
            stable_after_s=settings.stable_after_s,
            lease=lease,
            lease_ttl_s=settings.lease_ttl_s,
            lease_acquire_timeout_s=settings.lease_acquire_timeout_s,
        )

    # ------------------------------------------------------------------ inputs

    def update(
        self,
        snapshot: MembershipSnapshot,
        *,
        up_since: Mapping[str, float] | None = None,
        broken_links: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Take the membership's latest view. Cheap; call it on every snapshot.

        Args:
            snapshot: the membership snapshot; older versions than the last one are ignored.
            up_since: members' ages (smaller is older) as gossiped by membership, the
                same on every node; members missing here fall back to their incarnation.
            broken_links: pairs of members known not to reach each other while others
                reach both (direct probe failed, indirect probe succeeded).
        """
        self._tracker.update(snapshot, up_since, broken_links, self._clock.monotonic())

    # ------------------------------------------------------------------ deciding

    async def check(self) -> Decision | None:
        """Decide now if a non-empty unreachable set has been stable long enough.

        The background loop calls this every tick; tests may call it directly. Returns
        the decision taken, or ``None`` (nothing to decide, not yet stable, already
        downed, or the inputs changed while the lease was being acquired).
        """
        if self._state in ("downed", "closed", "deciding"):
            return None
        tracker = self._tracker
        if tracker.settle(self._clock.monotonic()):
            return None
        inputs, view = tracker.inputs, tracker.view
        if inputs is None or view is None or not inputs.troubled:
            return None
        tracker.calm_since = None
        stable_for = self._clock.monotonic() - tracker.changed_at
        if stable_for < self.stable_after_s:
            return None
        self._state = "deciding"
        try:
            if isinstance(self.strategy, LeaseMajority):
                assert self._referee is not None  # checked in __init__
                leased = await self._referee.decide_holder(
                    self.strategy, view, lambda: tracker.inputs != inputs)
                if leased is None or self._state != "deciding":
                    return None  # the inputs changed, or we were downed or closed meanwhile
                view = leased
            decision = self.strategy.decide(view)
            self._record(decision, view, stable_for)
        finally:
            if self._state == "deciding":
                self._state = "idle"
        if decision.survives:
            await self._kept(decision)
        else:
            await self._downed(decision)
        return decision

    def _record(self, decision: Decision, view: PartitionView, stable_for: float) -> None:
        self._decisions += 1
        self._last = decision
        report_decision(self._bus, self.self_name, self.strategy.name, decision, view,
                        stable_for)

    async def declared_dead(self, *, incarnation: int, by: str | None = None) -> Decision | None:
        """Down this node because the others' split-brain decision removed it; the
        membership calls this when it hears it was *downed* (not merely declared dead by
        the failure detector: that one it refutes, and nobody downs).

        A node that was paused (SIGSTOP, a stuck loop) or cut off while the others
        decided has been removed by them: its agents live elsewhere now. When it wakes it
        usually does not see a partition at all, and it cannot refute its way back (the
        others refuse this life). It downs itself (exit, or rejoin as a fresh
        incarnation), with the same log line, event and ``on_down`` (still at most once)
        as a ``down_self`` decision. Returns that decision, or ``None`` if this node was
        already downed or the resolver is closed.
        """
        if self._state in ("downed", "closed"):
            return None
        source = f", reported by {by}" if by else ""
        decision = Decision.down_self(
            f"{self.strategy.name}: the cluster declared {self.self_name} dead (incarnation "
            f"{incarnation}{source}) and a split-brain decision removed it while it could "
            f"not answer, so it downs itself rather than come back with stale agents"
        )
        view = self._tracker.view or PartitionView(
            self.self_name,
            (ViewMember(self.self_name, ""),),
            frozenset({self.self_name}),
            frozenset(),
        )
        self._record(decision, view, self._clock.monotonic() - self._tracker.changed_at)
        await self._downed(decision)
        return decision

    async def _kept(self, decision: Decision) -> None:
        self._tracker.remove(decision.down, self._clock.monotonic())
        if self._on_keep is not None:
            await _call(self._on_keep, decision, "on_keep")

    async def _downed(self, decision: Decision) -> None:
        self._state = "downed"
        if not self._on_down_called:
            self._on_down_called = True
            await _call(self._on_down, decision.reason, "on_down")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the periodic check (owned by this resolver; stopped by :meth:`aclose`)."""
        if self._state == "closed":
            raise RuntimeError("this SplitBrainResolver is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"splitbrain-{self.self_name}"
            )

    async def _run(self) -> None:
        last = self._clock.monotonic()
        while self._state not in ("downed", "closed"):
            await self._clock.sleep(self._tick_s)
            now = self._clock.monotonic()
            gap, last = now - last, now
            if gap > self._pause_threshold_s:
                self._pause_detected(gap)
            try:
                await self.check()
            except Exception:
                _log.exception("split brain: the check at %s failed", self.self_name)

    def _pause_detected(self, gap: float) -> None:
        self._pauses += 1
        self._tracker.restart(self._clock.monotonic())
        _log.warning(
            "split brain: %s did not run for %.1fs (paused or stuck loop); its membership "
            "view predates the gap, so the stability timer restarts (%.1fs)",
            self.self_name,
            gap,
            self.stable_after_s,
        )

    async def aclose(self) -> None:
        """Stop the periodic check. Idempotent."""
        if self._state != "downed":
            self._state = "closed"
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> SplitBrainResolver:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ introspection

    @property
    def state(self) -> ResolverState:
        """``idle``, ``pending`` (unreachable members, not yet stable), ``deciding``,
        ``downed`` (this node lost) or ``closed``."""
        if self._state == "idle" and self._tracker.troubled:
            return "pending"
        return self._state

    @property
    def last_decision(self) -> Decision | None:
        return self._last

    def statistics(self) -> SplitBrainStatistics:
        tracker = self._tracker
        inputs = tracker.inputs
        return SplitBrainStatistics(
            strategy=self.strategy.name,
            state=self.state,
            reachable=len(inputs.reachable) if inputs else 0,
            unreachable=len(inputs.unreachable) if inputs else 0,
            broken_links=len(inputs.broken_links) if inputs else 0,
            stable_for_s=self._clock.monotonic() - tracker.changed_at,
            stable_after_s=self.stable_after_s,
            timer_resets=tracker.timer_resets,
            pauses_detected=self._pauses,
            decisions=self._decisions,
            removed_members=len(tracker.removed),
            last_decision=self._last,
        )

    def __repr__(self) -> str:
        stats = self.statistics()
        detail = f"{stats.state}"
        if stats.state == "pending":
            detail += (
                f": {stats.unreachable} unreachable for "
                f"{stats.stable_for_s:.1f}/{self.stable_after_s:.1f}s"
            )
        return (
            f"<SplitBrainResolver {self.strategy.name} at {self.self_name} "
            f"[{detail}, {stats.decisions} decisions]>"
        )


async def _call(fn: Callable[[_T], Awaitable[None] | None], arg: _T, what: str) -> None:
    try:
        result = fn(arg)
        if inspect.isawaitable(result):
            await result
    except Exception:
        _log.exception("split brain: %s callback raised", what)
