"""Registrations, where they live, and which of two conflicting ones wins.

A registration (:class:`Entry`) binds a name to an agent (kind, key) or to a msgpack
value, and records its *holder*: the node that registered it. It is stored on the ring
owners of the name: the first ``replicas`` distinct members clockwise from
``name_hash(name)`` (:func:`replica_set`).

The conflict rule: when two different registrations of one name meet (both sides of a
healed partition, or two coordinators during a membership change), the one with the
smallest ``(ts, holder, rid)`` wins: the earliest registration time on the registering
node's wall clock, then the holder's name, then the random registration id. The rule is a total
order, so every node picks the same winner whatever order it sees the registrations in
(:func:`resolve` is commutative, associative and idempotent).

Pure: no I/O, no clock, no asyncio.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .._ring.hashing import key_hash
from .._ring.ring import HashRing

__all__ = [
    "DEFAULT_REPLICAS",
    "MAX_NAME_BYTES",
    "Entry",
    "Lifetime",
    "NameConflict",
    "Registration",
    "check_name",
    "describe",
    "majority",
    "name_hash",
    "order",
    "registration",
    "replica_set",
    "resolve",
    "same_claim",
]

DEFAULT_REPLICAS = 3
"""Copies of each registration (fewer when the ring has fewer members)."""

MAX_NAME_BYTES = 1024
"""Longest name accepted, in UTF-8 bytes: names are index keys, not payloads."""

_NAME_KIND = "$name"
"""The reserved kind under which names are hashed (no agent kind starts with ``$``)."""

Lifetime = Literal["node", "cluster"]


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One registration of a name, as the owners store it and the wire carries it.

    Attributes:
        name: the registered name.
        holder: the node that registered it.
        boot: the holder's incarnation when it started (a restarted holder has another).
        ts: registration time in ms on the registering node's wall clock.
        rid: random registration id, unique per registration; a retry reuses it (with
            the whole entry: one ``rid`` never names two different entries).
        kind: the agent kind for agent registrations, ``""`` for values.
        key: the agent key (agent registrations).
        value: the msgpack encoding of the value (value registrations).
        linked: released when the holder dies or leaves (``lifetime="node"``);
            ``False`` keeps it until unregistered (``lifetime="cluster"``).
    """

    name: str
    holder: str
    boot: int
    ts: int
    rid: int
    kind: str = ""
    key: str = ""
    value: bytes = b""
    linked: bool = True

    @property
    def is_agent(self) -> bool:
        return bool(self.kind)


def order(entry: Entry) -> tuple[int, str, int, int, str, str, bytes, bool]:
    """The conflict order: the smallest wins. Past ``(ts, holder, rid)`` the remaining
    fields only matter should two different entries ever share a random ``rid``: they
    keep the order total, so every node still picks the same one."""
    return (entry.ts, entry.holder, entry.rid, entry.boot, entry.kind, entry.key,
            entry.value, entry.linked)


def resolve(a: Entry, b: Entry) -> Entry:
    """The winner of two registrations of one name (see the module docstring)."""
    return a if order(a) <= order(b) else b


def name_hash(name: str) -> int:
    """Where ``name`` sits on the ring (stable across processes; never ``hash()``)."""
    return key_hash(_NAME_KIND, name)


def replica_set(ring: HashRing, name: str, replicas: int = DEFAULT_REPLICAS) -> list[str]:
    """The members that store ``name``, coordinator first (empty for an empty ring)."""
    if len(ring) == 0:
        return []
    return ring.replicas(name_hash(name), replicas)


def majority(n: int) -> int:
    """Acknowledgements a write needs from a replica set of ``n``."""
    return n // 2 + 1


def check_name(name: object, what: str = "registry name") -> str:
    """Validate a name (of a registration, a group or a topic) from a user or a peer.

    Raises:
        TypeError: not a str.
        ValueError: empty, or longer than :data:`MAX_NAME_BYTES` in UTF-8.
    """
    if not isinstance(name, str):
        raise TypeError(f"a {what} is a str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"a {what} must not be empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ValueError(f"{what} longer than {MAX_NAME_BYTES} bytes: {name[:40]!r}...")
    return name


def same_claim(a: Entry, b: Entry) -> bool:
    """The same holder (same boot) registering the same target again: a no-op."""
    return (a.holder, a.boot, a.kind, a.key, a.value, a.linked) == (
        b.holder, b.boot, b.kind, b.key, b.value, b.linked)


def describe(entry: Entry) -> str:
    return f"agent {entry.kind}/{entry.key}" if entry.kind else "a value"


class Registration(msgspec.Struct, frozen=True):
    """What a name is registered to (``node.registry.info(name)``).

    Attributes:
        name: the name.
        holder: the node that registered it; with ``lifetime="node"`` the name is
            released when that node dies or leaves.
        registered_at: when, in seconds since the epoch, on the registering node's clock.
        kind, key: the agent, for agent registrations (``kind`` is ``""`` otherwise).
        value: the registered value, for value registrations.
        lifetime: ``"node"`` (released with its holder) or ``"cluster"``.
    """

    name: str
    holder: str
    registered_at: float
    kind: str = ""
    key: str = ""
    value: Any = None
    lifetime: Lifetime = "node"


class NameConflict(msgspec.Struct, frozen=True):
    """A registration of yours lost a conflict (both sides of a healed partition
    registered the name): ``lost`` is yours, ``won`` the one that now holds the name."""

    name: str
    lost: Registration
    won: Registration


def registration(entry: Entry) -> Registration:
    """The user's view of an entry (the value decoded)."""
    value = msgspec.msgpack.decode(entry.value) if entry.value else None
    return Registration(entry.name, entry.holder, entry.ts / 1000, entry.kind, entry.key,
                        value, "node" if entry.linked else "cluster")
