"""Immutable views of cluster membership that other layers consume.

Layers never share the membership's mutable tables; they read a versioned
:class:`MembershipSnapshot` and compare versions.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Member", "MemberStatus", "MembershipSnapshot"]

MemberStatus = Literal["alive", "suspect", "dead", "left"]


class Member(msgspec.Struct, frozen=True):
    """One node as this node sees it.

    Attributes:
        name: the node's name.
        address: where peers reach it (``host:port``).
        status: ``alive``, ``suspect``, ``dead`` or ``left``.
        incarnation: grows each time the node restarts or refutes a suspicion; a restarted
            node is a new incarnation, never the old one resurrected.
        role: ``member`` (hosts agents) or ``client`` (routes only).
    """

    name: str
    address: str
    status: MemberStatus
    incarnation: int
    role: Literal["member", "client"] = "member"


class MembershipSnapshot(msgspec.Struct, frozen=True):
    """The members at one version of the membership view."""

    version: int
    members: tuple[Member, ...]

    def alive(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.status == "alive")
