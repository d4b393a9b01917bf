"""The piggyback buffer: which membership updates ride on the next datagram.

SWIM sends no gossip messages of its own: updates ride on probes, filling whatever space
the datagram has left. This buffer decides which. Each key (a member name) holds at most
one update, the newest, so a stale update is never sent after a newer one. Updates are
picked least-sent first and, among equals, newest first (memberlist's transmit-limited
queue), and each is dropped after ``retransmit_mult * ceil(log2(n + 1))`` transmissions:
enough, with every receiver re-broadcasting what is new to it, for an epidemic to reach
all ``n`` members with high probability (SWIM §4.1), and bounded so that old news stops
using bandwidth.

:class:`Piggyback` applies the buffer to SWIM's datagrams: it queues each member's
newest :class:`~.messages.Update` and fills every outgoing message with as many of them
as fit under ``max_datagram_bytes``.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from .actions import Action, Send
from .messages import SEAL_OVERHEAD, GossipCodec, GossipMessage, Update

__all__ = ["DisseminationBuffer", "DisseminationStatistics", "Piggyback", "retransmit_limit"]

T = TypeVar("T")


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How often one update is sent by one node in a cluster of ``n`` members.

    ``retransmit_mult * ceil(log2(n + 1))``: 4 at n=1, 8 at n=3, 28 at n=100 with λ=4.
    """
    return retransmit_mult * max(1, math.ceil(math.log2(max(1, n) + 1)))


@dataclass(frozen=True, slots=True)
class DisseminationStatistics:
    """Counters of a :class:`DisseminationBuffer` over its whole life."""

    queued: int
    added: int
    replaced: int
    transmissions: int
    retired: int


class _Entry(Generic[T]):
    __slots__ = ("item", "key", "order", "size", "transmits")

    def __init__(self, key: str, item: T, size: int, order: int) -> None:
        self.key = key
        self.item = item
        self.size = size
        self.order = order
        self.transmits = 0


class DisseminationBuffer(Generic[T]):
    """Updates waiting to be piggybacked, one per key.

    Args:
        retransmit_mult: λ, the multiplier of ``ceil(log2(n + 1))``.
    """

    __slots__ = ("_added", "_buckets", "_by_key", "_mult", "_order", "_replaced",
                 "_retired", "_transmissions")

    def __init__(self, retransmit_mult: int) -> None:
        if retransmit_mult < 1:
            raise ValueError(f"retransmit_mult must be >= 1, got {retransmit_mult}")
        self._mult = retransmit_mult
        self._by_key: dict[str, _Entry[T]] = {}
        # transmits -> {order: entry}; a larger order is a newer update.
        self._buckets: dict[int, dict[int, _Entry[T]]] = {}
        self._order = 0
        self._added = 0
        self._replaced = 0
        self._retired = 0
        self._transmissions = 0

    def add(self, key: str, item: T, size: int) -> None:
        """Queue ``item`` (``size`` encoded bytes) for ``key``, replacing any older one.

        A replaced item starts again with no transmissions: it is news.
        """
        old = self._by_key.pop(key, None)
        if old is not None:
            self._unbucket(old)
            self._replaced += 1
        self._order += 1
        entry = _Entry(key, item, size, self._order)
        self._by_key[key] = entry
        self._buckets.setdefault(0, {})[entry.order] = entry
        self._added += 1

    def discard(self, key: str) -> None:
        """Forget the update queued for ``key``, if any."""
        old = self._by_key.pop(key, None)
        if old is not None:
            self._unbucket(old)

    def select(self, budget_bytes: int, n_members: int, *, skip: str | None = None) -> list[T]:
        """Take the updates for one datagram and count them as transmitted.

        Args:
            budget_bytes: room left in the datagram for encoded updates.
            n_members: current cluster size, for the retransmit limit.
            skip: a key not to send (already placed in the datagram by the caller).

        Returns:
            Items whose sizes add up to at most ``budget_bytes``, least-sent first, newest
            first among equals.
        """
        limit = retransmit_limit(self._mult, n_members)
        chosen: list[_Entry[T]] = []
        stale: list[_Entry[T]] = []
        for transmits in sorted(self._buckets):
            if budget_bytes <= 0:
                break
            bucket = self._buckets[transmits]
            for order in sorted(bucket, reverse=True):  # newest first
                entry = bucket[order]
                if transmits >= limit:  # the cluster shrank since it was queued
                    stale.append(entry)
                elif entry.key != skip and entry.size <= budget_bytes:
                    chosen.append(entry)
                    budget_bytes -= entry.size
                    if budget_bytes <= 0:
                        break
        for entry in stale:
            self._retire(entry)
        for entry in chosen:
            self._unbucket(entry)
            entry.transmits += 1
            self._transmissions += 1
            if entry.transmits >= limit:
                del self._by_key[entry.key]
                self._retired += 1
            else:
                self._buckets.setdefault(entry.transmits, {})[entry.order] = entry
        return [entry.item for entry in chosen]

    def transmits(self, key: str) -> int | None:
        """How often the update for ``key`` was sent, or ``None`` if none is queued."""
        entry = self._by_key.get(key)
        return None if entry is None else entry.transmits

    def _retire(self, entry: _Entry[T]) -> None:
        self._unbucket(entry)
        if self._by_key.get(entry.key) is entry:
            del self._by_key[entry.key]
        self._retired += 1

    def _unbucket(self, entry: _Entry[T]) -> None:
        bucket = self._buckets.get(entry.transmits)
        if bucket is not None:
            bucket.pop(entry.order, None)
            if not bucket:
                del self._buckets[entry.transmits]

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def statistics(self) -> DisseminationStatistics:
        return DisseminationStatistics(
            queued=len(self._by_key),
            added=self._added,
            replaced=self._replaced,
            transmissions=self._transmissions,
            retired=self._retired,
        )

    def __repr__(self) -> str:
        return f"<DisseminationBuffer [{len(self._by_key)} queued, λ={self._mult}]>"


class Piggyback:
    """Membership updates waiting to ride on datagrams, and the datagrams that carry them.

    Args:
        retransmit_mult: λ of the buffer.
        max_datagram_bytes: the largest datagram sent, seal included.
    """

    __slots__ = ("_codec", "_max_datagram_bytes", "_retransmit_mult", "queue")

    def __init__(self, retransmit_mult: int, max_datagram_bytes: int) -> None:
        self._retransmit_mult = retransmit_mult
        self.queue: DisseminationBuffer[Update] = DisseminationBuffer(retransmit_mult)
        self._codec = GossipCodec()
        self._max_datagram_bytes = max_datagram_bytes

    def add(self, update: Update) -> None:
        """Queue ``update`` as its member's newest news."""
        self.queue.add(update.name, update, len(self._codec.encode(update)))

    def send(self, out: list[Action], address: str, msg: GossipMessage, n_members: int, *,
             first: Update | None = None) -> None:
        """Append ``msg`` for ``address`` to ``out`` with as many queued updates as fit,
        ``first`` (if it fits) ahead of them."""
        body = self._codec.encode(msg)
        # +2: the updates array header grows from 1 byte (empty) to at most 3.
        budget = self._max_datagram_bytes - SEAL_OVERHEAD - len(body) - 2
        updates: list[Update] = []
        if first is not None:
            size = len(self._codec.encode(first))
            if size <= budget:
                updates.append(first)
                budget -= size
        updates += self.queue.select(budget, n_members,
                                     skip=first.name if first is not None else None)
        if updates:
            msg = msgspec.structs.replace(msg, updates=tuple(updates))
            body = self._codec.encode(msg)
        out.append(Send(address, msg, body))

    def clear(self) -> None:
        """Forget every queued update (news that every member has heard already)."""
        self.queue = DisseminationBuffer(self._retransmit_mult)

    def __len__(self) -> int:
        return len(self.queue)
