"""Putting one publisher's messages back in order on the receiving node.

Frames from one node to another travel over one connection, which keeps their order,
except for a short overlap when two nodes dial each other at once: the duplicate
connection retires, new frames go to the surviving one, and the last frames of the
retiring one may arrive after the first ones of the survivor. So a publisher numbers its
messages per destination (a *stream*: a random id and ``seq`` 1, 2, 3, ...), and the
receiver delivers them in that order, holding back a message that arrives early until the
ones before it are in, or until a short wait says they are lost (pub/sub is at most
once: a gap is skipped, never waited for forever).

Pure: the caller owns the timer and passes what arrives. No I/O, no asyncio.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Accepted", "StreamOrder"]

_T = TypeVar("_T")


class Accepted(Generic[_T]):
    """What :meth:`StreamOrder.accept` decided: items to deliver now, in order, and how
    many earlier messages were given up for lost (``late`` when this one came too late
    and is dropped)."""

    __slots__ = ("late", "ready", "skipped")

    def __init__(self, ready: list[_T], skipped: int = 0, late: bool = False) -> None:
        self.ready = ready
        self.skipped = skipped
        self.late = late


class StreamOrder(Generic[_T]):
    """The order of one publisher's streams to this node.

    Streams start at ``seq`` 1. A message with a new stream id starts a new stream, after
    delivering what the old one still held, in order. A new stream whose first message is
    not 1 (this node restarted while the publisher kept counting) waits for the gap like
    any other; the messages given up before the first delivery are not counted as lost.
    """

    __slots__ = ("delivered", "expected", "held", "stream")

    def __init__(self) -> None:
        self.stream = 0
        self.expected = 1
        self.delivered = False
        self.held: dict[int, _T] = {}

    @property
    def waiting(self) -> bool:
        """Whether a message is held back for a gap (the caller arms its timer)."""
        return bool(self.held)

    def accept(self, stream: int, seq: int, item: _T) -> Accepted[_T]:
        if stream != self.stream:
            flushed = self._flush()
            self.stream, self.expected, self.delivered = stream, 1, False
            accepted = self.accept(stream, seq, item)
            accepted.ready[:0] = flushed
            return accepted
        if seq < self.expected or seq in self.held:
            return Accepted([], late=True)
        if seq > self.expected:
            self.held[seq] = item
            return Accepted([])
        self.expected += 1
        self.delivered = True
        return Accepted([item, *self._consecutive()])

    def give_up(self) -> Accepted[_T]:
        """The wait for a gap ran out: skip to the first held message, deliver onwards."""
        if not self.held:
            return Accepted([])
        first = min(self.held)
        skipped = first - self.expected if self.delivered else 0
        self.expected = first
        self.delivered = True
        return Accepted(self._consecutive(), skipped=skipped)

    def _consecutive(self) -> list[_T]:
        ready = []
        while self.expected in self.held:
            ready.append(self.held.pop(self.expected))
            self.expected += 1
        return ready

    def _flush(self) -> list[_T]:
        ready = [self.held[s] for s in sorted(self.held)]
        self.held.clear()
        return ready
