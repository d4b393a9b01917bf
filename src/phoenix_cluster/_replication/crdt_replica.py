"""What merge replication keeps per agent: this node's replica, and each peer's backlog.

A :class:`Replica` is this node's join of every state of one crdt agent it has run or been
sent, with its encoding and fingerprint cached between changes (anti-entropy asks for the
fingerprint of every replica every round). A :class:`Backlog` is what one peer has not
acknowledged of one agent: the deltas pushed to it, numbered, so each push carries their
join and an acknowledgement drops exactly what it covered. The service that uses them is
``crdt_sync.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .merging import Fields, encode_fields, merge_into, state_hash

__all__ = ["BACKLOG_LIMIT", "Address", "Backlog", "CrdtSyncSettings", "Replica"]

Address = tuple[str, str]
"""``(kind, key)`` of an agent."""


@dataclass(frozen=True, slots=True)
class CrdtSyncSettings:
    """Timers and limits of :class:`CrdtSync`.

    Attributes:
        ack_timeout_s: how long ``commit`` waits for a majority before it settles for
            the replicas that answered (a cut-off node's updates are then acknowledged
            once stored locally). Below the call timeout (5 s).
        fetch_timeout_s: how long an activation waits for the other replicas' states.
        rpc_timeout_s: one anti-entropy RPC.
        interval_s: time between anti-entropy rounds (a membership change starts one
            at once).
        batch_items: agents per anti-entropy RPC.
        flush_timeout_s: how long a stopping node offers its replicas to the others.
    """

    ack_timeout_s: float = 1.0
    fetch_timeout_s: float = 0.5
    rpc_timeout_s: float = 2.0
    interval_s: float = 1.0
    batch_items: int = 256
    flush_timeout_s: float = 3.0


class Replica:
    """This node's replica of one agent: its fields, and their encoding and hash cached."""

    __slots__ = ("_encoded", "_hash", "fields", "partition")

    def __init__(self, partition: int) -> None:
        self.partition = partition  # hashed once: anti-entropy asks it every round
        self.fields: Fields = {}
        self._encoded: bytes | None = None
        self._hash: bytes | None = None

    def merge(self, fields: Fields) -> bool:
        changed = merge_into(self.fields, fields)
        if changed:
            self._encoded = self._hash = None
        return changed

    def encoded(self) -> bytes:
        if self._encoded is None:
            self._encoded = encode_fields(self.fields)
        return self._encoded

    def hash(self) -> bytes:
        if self._hash is None:
            self._hash = state_hash(self.encoded())
        return self._hash


BACKLOG_LIMIT = 32
"""Unacknowledged deltas kept per peer and agent; past it (a peer that stopped
answering but is still in the alive set) the next push sends the whole replica."""


class Backlog:
    """What one peer has not acknowledged of one agent: each pushed delta by its number.

    An acknowledgement of push ``n`` drops the deltas numbered ``n`` or less (that push
    carried them all); the later ones, still in flight, stay. So under a steady stream
    of commits the backlog holds only the pushes in flight, never the agent's history.
    """

    __slots__ = ("deltas", "last")

    def __init__(self) -> None:
        self.deltas: list[tuple[int, Fields]] = []
        self.last = 0

    def add(self, delta: Fields) -> int:
        self.last += 1
        self.deltas.append((self.last, delta))
        return self.last

    def joined(self) -> Fields:
        """The join of the deltas (the only one itself: read it, do not mutate)."""
        if len(self.deltas) == 1:
            return self.deltas[0][1]
        out: Fields = {}
        for _, delta in self.deltas:
            merge_into(out, delta)
        return out

    def acknowledged(self, upto: int) -> bool:
        """Drop the deltas numbered ``upto`` or less; whether none is left."""
        self.deltas = [(n, delta) for n, delta in self.deltas if n > upto]
        return not self.deltas
