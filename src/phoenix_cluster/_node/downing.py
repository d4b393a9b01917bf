"""Split-brain handling of one member: deciding, being downed, and members downed.

:class:`Downing` runs the member's split-brain resolver (and its lease, for the
``lease`` strategy), answers verdicts of this node's own death, and keeps the members a
decision downed: replication stops waiting for their memory once they are surely gone,
and answers for them again when they come back as a newer incarnation
(docs/design/splitbrain.md, docs/design/replication.md "Lost members").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .._agents.runtime import AgentRuntime
from .._foundation.env import Env
from .._foundation.settings import Settings
from .._membership.service import MembershipService
from .._membership.snapshot import MembershipSnapshot
from .._ring.partitions import PARTITIONS
from .._splitbrain.lease_spec import ClosableLease, checked_lease_spec, lease_from_spec
from .._splitbrain.resolver import SplitBrainResolver
from .._splitbrain.settings import SplitBrainSettings
from .._splitbrain.view import Decision
from .._telemetry.bus import TelemetryBus
from .stack import AgentStack

__all__ = ["DOWNED_PREFIX", "Downing"]

DOWNED_PREFIX = "downed by split-brain resolution: "
"""Start of ``stop_reason`` when this node was on the losing side of a partition."""

_log = logging.getLogger("phoenix_cluster.node")


class Downing:
    """The split-brain side of one member (built with the node; started with membership).

    Args:
        name: the node's name.
        settings: its settings (strategy, stable-after, quorum size, lease).
        env: its clock and randomness.
        bus: the telemetry bus the resolver reports to.
        stack: the node's started parts (the replicator hears of downed members).
        runtime: its agents (a refuted death verdict reloads them from their replicas).
        shut_down: asks the node to stop, with the reason (the losing side downs itself).
        snapshot: the node's latest membership view.
    """

    def __init__(self, name: str, settings: Settings, env: Env, bus: TelemetryBus,
                 stack: AgentStack, runtime: AgentRuntime, shut_down: Callable[[str], None],
                 snapshot: Callable[[], MembershipSnapshot | None]) -> None:
        self.name = name
        self.settings = settings
        self.env = env
        self.bus = bus
        self.stack = stack
        self.runtime = runtime
        self.shut_down = shut_down
        self.snapshot = snapshot
        self.resolver: SplitBrainResolver | None = None
        self.lease: ClosableLease | None = None
        self.membership: MembershipService | None = None
        self.downed_members: dict[str, int] = {}
        """Members a decision downed, by name: the incarnation that was downed."""
        self._declared_task: asyncio.Task[Any] | None = None

    def start(self, membership: MembershipService) -> None:
        """Start deciding on ``membership``'s views (a member with an address)."""
        s = self.settings
        settings = SplitBrainSettings(
            strategy=s.split_brain, stable_after_s=s.split_brain_stable_after_s,
            quorum_size=s.split_brain_quorum_size, lease_ttl_s=s.split_brain_lease_ttl_s,
        )
        spec = checked_lease_spec(s.split_brain, s.split_brain_lease)
        if spec is not None:
            self.lease = lease_from_spec(spec, env=self.env)
        self.resolver = SplitBrainResolver.from_settings(
            settings, env=self.env, bus=self.bus, self_name=self.name,
            on_down=self._downed, on_keep=self._kept, lease=self.lease,
        )
        self.membership = membership
        membership.subscribe(self.resolver.update)
        self.resolver.update(membership.snapshot())
        self.resolver.start()

    @property
    def last_decision(self) -> Decision | None:
        return None if self.resolver is None else self.resolver.last_decision

    def declared_dead(self, incarnation: int, by: str, downed: bool) -> None:
        """Membership's ``on_declared_dead``: another member declared this node dead."""
        if self.resolver is None:
            return  # split-brain handling has not started yet (it starts with the node)
        if not downed:
            # Only the others' failure detector: membership refutes and the node stays
            # (only a split-brain decision downs). Its keys may have moved meanwhile, so
            # its agents reload from their replicas, whose leaders confirm first.
            for partition in range(PARTITIONS):
                self.runtime.partition_lost(partition, "declared dead")
            return
        # A split-brain decision removed this life: its agents live elsewhere now.
        resolver = self.resolver
        if resolver is not None and self._declared_task is None:
            self._declared_task = asyncio.get_running_loop().create_task(
                resolver.declared_dead(incarnation=incarnation, by=by or None))

    def _kept(self, decision: Decision) -> None:
        # The downed members stop on their own clock: give them stable_after to be gone
        # (the losing side may decide that much later) before replication stops waiting
        # for their memory.
        replicator = self.stack.replicator
        if replicator is not None and decision.down:
            snapshot = self.snapshot()
            known = {m.name: m.incarnation for m in snapshot.members} if snapshot else {}
            for name in decision.down:
                self.downed_members[name] = known.get(name, 0)
            replicator.members_lost(
                decision.down, after_s=self.settings.split_brain_stable_after_s)
        if self.membership is not None and decision.down:
            self.membership.down(decision.down)  # they cannot refute their way back

    def _downed(self, reason: str) -> None:
        # The losing side of a partition stops serving at once and exits (DOWNED_PREFIX
        # tells ``phx node`` to use its distinct exit code).
        _log.error("node %s downs itself: %s", self.name, reason)
        self.shut_down(f"{DOWNED_PREFIX}{reason}")

    def on_membership(self, snapshot: MembershipSnapshot,
                      membership: MembershipService | None) -> None:
        """A new membership view: downed members back, and decisions taken elsewhere."""
        if self.downed_members:
            self._note_members_back(snapshot)
        self._note_downed_elsewhere(membership)

    def _note_members_back(self, snapshot: MembershipSnapshot) -> None:
        # A downed member back as a newer incarnation answers for itself again.
        for m in snapshot.members:
            downed = self.downed_members.get(m.name)
            if downed is not None and m.incarnation > downed and m.status == "alive":
                del self.downed_members[m.name]
                if self.stack.replicator is not None:
                    self.stack.replicator.member_back(m.name)

    def _note_downed_elsewhere(self, membership: MembershipService | None) -> None:
        # A split-brain decision another member took (gossiped, or in the state a join
        # pulled) counts here as if taken here: a member that joined after a peer was
        # downed never decides about it itself, and its elections would wait forever for
        # that peer's memory (replication.md, "Lost members"). The margin starts when this
        # node hears of it, which is after the decision.
        replicator = self.stack.replicator
        if membership is None or replicator is None:
            return
        heard = {name: life for name, life in membership.downed().items()
                 if name != self.name and name not in self.downed_members}
        if heard:
            self.downed_members.update(heard)
            replicator.members_lost(heard, after_s=self.settings.split_brain_stable_after_s)

    async def aclose(self) -> None:
        """Stop deciding (before membership leaves)."""
        if self.resolver is not None:
            await self.resolver.aclose()
        if self.lease is not None:
            await self.lease.aclose()
