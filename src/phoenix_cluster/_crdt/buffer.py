"""The delta buffer of one replica: its state, the deltas not yet acknowledged by every
peer, and how far each peer has acknowledged.

This is the delta-interval anti-entropy of Almeida et al. (Algorithm 2), without the I/O:
the caller ships what :meth:`DeltaBuffer.outgoing` returns over any channel, calls
:meth:`DeltaBuffer.receive` on arrival and :meth:`DeltaBuffer.ack` when the peer confirms.
A lost, duplicated or reordered message costs nothing but a resend: deltas are states, and
joining a state twice or late changes nothing. Deltas received from peers are buffered too,
so updates travel on through replicas that are not directly connected. When the buffer has
dropped deltas a peer still needs (it is bounded), that peer gets the whole state, or the
caller runs digest anti-entropy (:meth:`~.base.Crdt.digest` / :meth:`~.base.Crdt.delta_for`).

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from .base import Crdt

__all__ = ["DeltaBuffer", "Outgoing"]

C = TypeVar("C", bound=Crdt)


class Outgoing(NamedTuple, Generic[C]):
    """What to send a peer: a delta (or the full state) and the sequence number the peer
    acknowledges once it has joined it."""

    delta: C
    upto: int
    full: bool


class DeltaBuffer(Generic[C]):
    """One replica's state and its buffer of deltas waiting for acknowledgement.

        buf = DeltaBuffer(ORSet[str]())
        buf.mutate(lambda s: s.add("x", replica="n1"))
        out = buf.outgoing("n2")        # send out.delta; on ack: buf.ack("n2", out.upto)

    Args:
        state: the replica's current value; mutate it through :meth:`mutate`.
        limit: deltas kept at most; past that the oldest go, and a peer that still
            needed them gets the full state.
    """

    __slots__ = ("_acked", "_deltas", "_first", "_next", "limit", "state")

    def __init__(self, state: C, *, limit: int = 1024) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.state = state
        self.limit = limit
        self._deltas: dict[int, C] = {}
        self._first = 0  # lowest sequence number still buffered (or ever assigned)
        self._next = 0
        self._acked: dict[str, int] = {}

    @property
    def seq(self) -> int:
        """The sequence number the next buffered delta will get."""
        return self._next

    def __len__(self) -> int:
        return len(self._deltas)

    def mutate(self, fn: Callable[[C], C]) -> C:
        """Run a mutator on the state (``fn(state)`` returns its delta), buffer and return
        the delta."""
        delta = fn(self.state)
        self.record(delta)
        return delta

    def record(self, delta: C) -> None:
        """Buffer a delta already joined into the state (an empty delta is skipped)."""
        if delta.is_bottom():
            return
        self._deltas[self._next] = delta
        self._next += 1
        self._trim()

    def receive(self, delta: C) -> bool:
        """Join a delta or state from a peer; buffer it for the others if it was new.

        Returns:
            Whether the state changed.
        """
        changed = self.state.merge(delta)
        if changed:
            self.record(delta.copy())
        return changed

    def outgoing(self, peer: str) -> Outgoing[C] | None:
        """What ``peer`` has not acknowledged, joined into one delta; None if nothing.

        A peer never acknowledged starts from sequence 0; one whose deltas were trimmed
        away gets the full state.
        """
        start = self._acked.get(peer, 0)
        if start >= self._next:
            return None
        if start < self._first:
            return Outgoing(self.state.copy(), self._next, True)
        joined = self._deltas[start].copy()
        for seq in range(start + 1, self._next):
            joined.merge(self._deltas[seq])
        return Outgoing(joined, self._next, False)

    def ack(self, peer: str, upto: int) -> None:
        """``peer`` has joined everything below sequence ``upto``."""
        if upto > self._acked.get(peer, 0):
            self._acked[peer] = min(upto, self._next)

    def acked(self, peer: str) -> int:
        """How far ``peer`` has acknowledged (0 if never)."""
        return self._acked.get(peer, 0)

    def forget(self, peer: str) -> None:
        """Stop tracking ``peer`` (it left): its acknowledgements no longer hold deltas."""
        self._acked.pop(peer, None)

    def collect(self, peers: list[str]) -> int:
        """Drop the deltas every one of ``peers`` has acknowledged; return how many."""
        low = min((self._acked.get(p, 0) for p in peers), default=self._next)
        dropped = 0
        while self._first < low:
            if self._deltas.pop(self._first, None) is not None:
                dropped += 1
            self._first += 1
        return dropped

    def _trim(self) -> None:
        while len(self._deltas) > self.limit:
            self._deltas.pop(self._first, None)
            self._first += 1
