"""The dedup window committed with each state change (``StateStore.window``), and the
approximate sizes the replicator cuts batches by (kept as writes join a group)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster._agents.dedup import DEDUP_WINDOW, REPLICATED_REPLIES
from phoenix_cluster._agents.mailbox import Activation
from phoenix_cluster._agents.state import StateStore
from phoenix_cluster._replication.messages import Accept
from phoenix_cluster._replication.sending import ACCEPT_OVERHEAD, item_size
from phoenix_cluster._replication.types import Entry, Epoch, Record


def _activation(recent: dict[int, asyncio.Future[bytes]]) -> Activation:
    return cast(Activation, SimpleNamespace(recent=recent, answered=None))


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


def _full_walk(recent: dict[int, asyncio.Future[bytes]], request_id: int,
               reply: bytes) -> tuple[tuple[int, bytes], ...]:
    """The window as it was built before it was kept incrementally: a walk back over
    ``recent`` on every commit (the reference the cache must agree with)."""
    out: list[tuple[int, bytes]] = []
    if request_id in recent:
        out.append((request_id, reply))
    for rid, f in reversed(recent.items()):
        if len(out) >= REPLICATED_REPLIES:
            break
        if rid != request_id and f.done():
            try:
                out.append((rid, f.result()))
            except (asyncio.CancelledError, Exception):
                continue
    out.reverse()
    return tuple(out)


# Steps: ("call",) a new request id arrives; ("settle", i, how) the i-th unsettled one is
# answered, fails or is cancelled; ("commit", i) the i-th unsettled one commits (or, past
# the end, a message without a request id in the window: a cast, a local call).
_STEPS = st.lists(st.one_of(
    st.tuples(st.just("call")),
    st.tuples(st.just("settle"), st.integers(0, 40), st.sampled_from(["ok", "fail", "cancel"])),
    st.tuples(st.just("commit"), st.integers(0, 40)),
), max_size=400)


@settings(max_examples=150, deadline=None)
@given(steps=_STEPS, first_calls=st.integers(0, 300))
def test_the_incremental_window_is_the_full_walk(steps: list[tuple[Any, ...]],
                                                  first_calls: int) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        recent: dict[int, asyncio.Future[bytes]] = {}
        act = _activation(recent)
        next_id = 1

        def call() -> None:
            nonlocal next_id
            recent[next_id] = loop.create_future()
            next_id += 1
            if len(recent) > DEDUP_WINDOW:  # as the runtime bounds it
                del recent[next(iter(recent))]

        for _ in range(first_calls):
            call()
        for step in steps:
            pending = [rid for rid, f in recent.items() if not f.done()]
            if step[0] == "call":
                call()
            elif step[0] == "settle" and pending:
                f = recent[pending[step[1] % len(pending)]]
                if step[2] == "ok":
                    f.set_result(str(step[1]).encode())
                elif step[2] == "fail":
                    f.set_exception(RuntimeError("failed"))
                    f.exception()
                else:
                    f.cancel()
            elif step[0] == "commit":
                rid = pending[step[1]] if step[1] < len(pending) else 0
                expected = _full_walk(recent, rid, b"now")
                assert StateStore.window(act, rid, b"now") == expected
                if rid:
                    recent[rid].set_result(b"now")  # the message is answered

    asyncio.run(run())


async def test_the_window_forgets_answers_that_left_the_dedup_window() -> None:
    # The cache holds answers up to a settled frontier; a slow call keeps the frontier
    # back while later calls fail, until the oldest cached answers are evicted from
    # ``recent``: they must not be replicated any more.
    loop = asyncio.get_running_loop()
    recent: dict[int, asyncio.Future[bytes]] = {}
    act = _activation(recent)
    for rid in range(1, 42):
        recent[rid] = loop.create_future()
        if rid <= 40:
            recent[rid].set_result(b"%d" % rid)
    assert StateStore.window(act, 41, b"x") == _full_walk(recent, 41, b"x")
    for rid in range(42, 42 + 250):  # 41 never answers; these fail
        recent[rid] = loop.create_future()
        recent[rid].set_exception(RuntimeError("failed"))
        recent[rid].exception()
        if len(recent) > DEDUP_WINDOW:
            del recent[next(iter(recent))]
    recent[292] = loop.create_future()
    del recent[next(iter(recent))]
    window = StateStore.window(act, 292, b"y")
    assert window == _full_walk(recent, 292, b"y")
    assert [rid for rid, _ in window] == [37, 38, 39, 40, 292]


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
