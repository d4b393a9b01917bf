"""The inputs and the output of a split-brain decision: :class:`PartitionView`, :class:`Decision`.

Pure data, I/O-free. A view is what one node knows at the moment it decides: every member
it still counts (with role, address and age), which of them it can reach, which it has
not reached for ``stable_after_s``, the broken links it knows of, and who holds the
external lease. Strategies turn a view into a decision; the resolver logs both.

Orders used by every strategy, so that two nodes with the same view decide the same:

- addresses compare as (IP address, port) when the host is an IP literal, else as
  (host name, port) — never as raw strings, where ``10.0.0.1:10000`` < ``10.0.0.1:7100``;
- seniority compares members before clients, then ``up_since`` (smaller is older), then
  the address, then the name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Action",
    "AddressKey",
    "Decision",
    "PartitionView",
    "ViewMember",
    "address_key",
    "format_names",
    "seniority_key",
]

Action = Literal["keep", "down_self"]


AddressKey = tuple[int, int | str, int, str]


def address_key(address: str) -> AddressKey:
    """A total order on ``host:port`` addresses that every node computes the same way.

    IP literals (``10.0.0.7:7100``, ``[::1]:7100``) sort numerically, IPv4 before IPv6,
    then host names; the port compares as a number. Unparsable addresses sort last, by text.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        return (3, address, 0, address)
    port = int(port_text)
    try:
        ip = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return (2, host.lower(), port, address)
    return (0 if ip.version == 4 else 1, int(ip), port, address)


def format_names(names: Iterable[str]) -> str:
    """``[a, b, c]``, sorted: how decisions and log lines list members."""
    return "[" + ", ".join(sorted(names)) + "]"


@dataclass(frozen=True, slots=True)
class ViewMember:
    """One member as a strategy sees it.

    Attributes:
        name: the member's node name.
        address: its ``host:port``; the keep-majority tie-break compares these.
        role: ``member`` counts in every strategy; ``client`` (routes, hosts no agents)
            never counts.
        up_since: age, smaller is older. Must be the same number on every node for
            keep-oldest to be consistent across sides: the membership service's
            gossiped start stamp, or the incarnation as a fallback.
    """

    name: str
    address: str
    role: Literal["member", "client"] = "member"
    up_since: float = 0.0

    @property
    def counts(self) -> bool:
        return self.role == "member"


def seniority_key(member: ViewMember) -> tuple[int, float, AddressKey, str]:
    """Sort key: most senior first (members before clients, oldest, lowest address, name)."""
    return (0 if member.counts else 1, member.up_since, address_key(member.address), member.name)


@dataclass(frozen=True, slots=True)
class PartitionView:
    """What this node knows when it decides. Frozen; validated on construction.

    Attributes:
        self_name: the deciding node; always in ``reachable``.
        members: every member this node still counts (not ``left``, not already downed),
            clients included.
        reachable: names on this side: this node and the members it reaches.
        unreachable: names this side has not reached for at least ``stable_after_s``.
        broken_links: pairs ``(a, b)`` that cannot reach each other although other members
            reach both (a failed direct probe whose indirect probe succeeded). The junior
            endpoint of each link downs itself; see the strategies.
        lease_holder: the lease owner this side acquired, or ``None`` when it did not try
            or failed; only the lease strategy reads it.

    Raises:
        ValueError: the sets do not partition ``members``, ``self_name`` is not reachable,
            names repeat, or a broken link names an unknown member.
    """

    self_name: str
    members: tuple[ViewMember, ...]
    reachable: frozenset[str]
    unreachable: frozenset[str]
    broken_links: frozenset[tuple[str, str]] = frozenset()
    lease_holder: str | None = None
    _by_name: dict[str, ViewMember] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {m.name: m for m in self.members}
        if len(by_name) != len(self.members):
            raise ValueError(f"member names repeat in {[m.name for m in self.members]}")
        if self.self_name not in self.reachable:
            raise ValueError(f"self {self.self_name!r} must be in reachable")
        if self.reachable & self.unreachable:
            raise ValueError(
                f"{format_names(self.reachable & self.unreachable)} both reachable and not"
            )
        if self.reachable | self.unreachable != by_name.keys():
            raise ValueError(
                f"reachable {format_names(self.reachable)} + unreachable "
                f"{format_names(self.unreachable)} must equal members {format_names(by_name)}"
            )
        for a, b in self.broken_links:
            if a == b or a not in by_name or b not in by_name:
                raise ValueError(f"broken link {(a, b)!r} must join two distinct members")
        object.__setattr__(self, "_by_name", by_name)

    @classmethod
    def of(
        cls,
        self_name: str,
        reachable: Iterable[ViewMember],
        unreachable: Iterable[ViewMember] = (),
        *,
        broken_links: Iterable[tuple[str, str]] = (),
        lease_holder: str | None = None,
    ) -> PartitionView:
        """Build a view from the members on each side (tests and simulations)."""
        here, there = tuple(reachable), tuple(unreachable)
        return cls(
            self_name=self_name,
            members=here + there,
            reachable=frozenset(m.name for m in here),
            unreachable=frozenset(m.name for m in there),
            broken_links=frozenset(broken_links),
            lease_holder=lease_holder,
        )

    def member(self, name: str) -> ViewMember:
        return self._by_name[name]

    def counted(self, names: Iterable[str]) -> list[ViewMember]:
        """The members among ``names`` that count (role ``member``), most senior first."""
        found = [self._by_name[n] for n in names if self._by_name[n].counts]
        return sorted(found, key=seniority_key)

    def juniors_of_broken_links(self) -> frozenset[str]:
        """For each broken link, the less senior endpoint: the one that must go."""
        return frozenset(
            max(self._by_name[a], self._by_name[b], key=seniority_key).name
            for a, b in self.broken_links
        )

    def with_lease_holder(self, holder: str | None) -> PartitionView:
        return PartitionView(
            self.self_name,
            self.members,
            self.reachable,
            self.unreachable,
            self.broken_links,
            holder,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What this side does about a partition.

    Attributes:
        action: ``keep``: this side survives and treats ``down`` as gone; ``down_self``:
            this node must stop serving (exit, or rejoin as a fresh incarnation).
        reason: one human-readable sentence naming the strategy and every input it used.
        down: on ``keep``, the members this side removes (the unreachable ones and the
            junior endpoints of broken links); empty on ``down_self``.
        tie_break: how a tie was broken, or ``""`` when there was none.
    """

    action: Action
    reason: str
    down: frozenset[str] = frozenset()
    tie_break: str = ""

    @property
    def survives(self) -> bool:
        return self.action == "keep"

    @classmethod
    def keep(cls, reason: str, down: Iterable[str] = (), tie_break: str = "") -> Decision:
        return cls("keep", reason, frozenset(down), tie_break)

    @classmethod
    def down_self(cls, reason: str, tie_break: str = "") -> Decision:
        return cls("down_self", reason, frozenset(), tie_break)
