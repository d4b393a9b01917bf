"""What the SWIM state machine returns: actions for its driver, and its statistics.

:class:`~.swim.SwimProtocol` does no I/O. Each input returns a list of :data:`Action`:
a datagram to send (:class:`Send`), a push-pull exchange to start (:class:`StartSync`)
or a membership change to report (:class:`MemberEvent`); the service (or a simulated
network) carries them out. :class:`SwimStatistics` is the protocol's counters and view.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from .messages import GossipMessage
from .snapshot import Member

__all__ = ["Action", "MemberEvent", "MemberEventKind", "Send", "StartSync", "SwimStatistics"]


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``body`` (the encoded ``message``, to be sealed) to UDP ``address``."""

    address: str
    message: GossipMessage
    body: bytes


@dataclass(frozen=True, slots=True)
class StartSync:
    """Run a push-pull exchange with the member at TCP ``address``.

    Send :meth:`SwimProtocol.local_state` and feed the answer to
    :meth:`SwimProtocol.merge_state`; a failed exchange needs no report.
    """

    address: str


MemberEventKind = Literal[
    "joined", "suspected", "alive", "updated", "dead", "left", "declared_dead"
]


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member changed.

    ``kind`` is ``joined`` (new, or back after dead/left as a newer incarnation),
    ``suspected``, ``alive`` (a suspicion was refuted), ``updated`` (a newer incarnation
    or a detail changed, status unchanged), ``dead`` or ``left``; ``declared_dead`` is
    about this node itself: the others declared its current life dead. Without
    ``downed`` only their failure detector did (it refutes; its keys may have moved
    meanwhile, so the node drops its stale agents); with ``downed`` a split-brain decision
    removed it, which no refutation undoes (the node must go, or rejoin as a new life).
    """

    kind: MemberEventKind
    member: Member
    previous: Member | None
    by: str = ""
    """Who suspected it or declared it dead (empty for other kinds)."""
    downed: bool = False
    """``declared_dead`` or ``dead`` by a split-brain decision, not only by detection."""


Action: TypeAlias = Send | StartSync | MemberEvent


@dataclass(frozen=True, slots=True)
class SwimStatistics:
    """Counters of a :class:`SwimProtocol` over its whole life, and its current view."""

    alive: int
    suspect: int
    dead: int
    left: int
    incarnation: int
    health_score: int
    probes_sent: int
    probes_acked: int
    probes_failed: int
    ping_reqs_sent: int
    nacks_received: int
    relays: int
    suspicions: int
    deaths_declared: int
    refutations: int
    updates_received: int
    syncs_merged: int
    misdirected_pings: int
    name_conflicts: int
    stale_verdicts: int
    """Deaths declared by a member held dead (or back from dead only lately), taken as
    suspicions: the verdicts of a node that was cut off."""
    queued_updates: int
