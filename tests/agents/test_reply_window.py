"""The dedup window committed with each state change (``StateStore.window``), and the
approximate sizes the replicator cuts batches by (kept as writes join a group)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import msgspec

from phoenix_cluster._agents.dedup import REPLICATED_REPLIES
from phoenix_cluster._agents.mailbox import Activation
from phoenix_cluster._agents.state import StateStore
from phoenix_cluster._replication.messages import Accept
from phoenix_cluster._replication.sending import ACCEPT_OVERHEAD, item_size
from phoenix_cluster._replication.types import Entry, Epoch, Record


def _activation(recent: dict[int, asyncio.Future[bytes]]) -> Activation:
    return cast(Activation, SimpleNamespace(recent=recent))


async def test_the_window_keeps_answered_calls_in_order_and_the_current_one_last() -> None:
    loop = asyncio.get_running_loop()
    recent: dict[int, asyncio.Future[bytes]] = {}
    for rid in range(1, 8):
        recent[rid] = loop.create_future()
    recent[1].set_result(b"one")
    recent[2].set_exception(RuntimeError("failed"))     # failed: not replicated
    recent[3].cancel()                                   # cancelled: not replicated
    recent[4].set_result(b"four")
    # 5 is the message being committed (its future is answered after the commit);
    # 6 and 7 are queued behind it, not answered yet.
    recent[6].set_result(b"six")  # answered out of order (a resent call's first delivery)

    window = StateStore.window(_activation(recent), 5, b"five")

    assert window == ((1, b"one"), (4, b"four"), (6, b"six"), (5, b"five"))
    assert recent[2].exception() is not None  # still there, retrieved: no "never retrieved"


async def test_the_window_holds_the_newest_replicated_replies_only() -> None:
    loop = asyncio.get_running_loop()
    recent: dict[int, asyncio.Future[bytes]] = {}
    for rid in range(REPLICATED_REPLIES + 10):
        fut: asyncio.Future[bytes] = loop.create_future()
        fut.set_result(rid.to_bytes(2, "big"))
        recent[rid] = fut
    current = REPLICATED_REPLIES + 10
    recent[current] = loop.create_future()

    window = StateStore.window(_activation(recent), current, b"now")

    assert len(window) == REPLICATED_REPLIES
    assert [rid for rid, _ in window] == [*range(11, REPLICATED_REPLIES + 10), current]


def test_an_entry_carries_its_window_encoded_once_and_counts_those_bytes() -> None:
    replies = ((1, b"a"), (2, b"bcd"), (3, b""))
    entry = Entry.of(Record(b"state", replies), Epoch(3, "n1"), 7)
    assert bytes(entry.replies) == msgspec.msgpack.encode(replies)
    assert entry.record == Record(b"state", replies)
    assert entry.size() == 32 + len("n1") + len(b"state") + len(entry.replies)
    accept = Accept(1, Epoch(3, "n1"), (("n1", "n2", "n3"),), (("k", "a", entry),) * 2)
    assert item_size(accept) == ACCEPT_OVERHEAD + 2 * entry.size()
    # On the wire the window is the encoded tuple, as before it was kept encoded.
    wire = msgspec.msgpack.encode(entry)
    assert msgspec.msgpack.decode(wire)[4] == [[1, b"a"], [2, b"bcd"], [3, b""]]
