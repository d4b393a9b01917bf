"""Registrations replicated in one turn of the loop go to each replica as one ``store``
(``_registry/batching.py``), and each still gets its own outcome. The same on a whole
cluster is checked in ``test_register_fast_path.py`` (its cluster is shared)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from phoenix_cluster._registry.batching import MAX_BATCH_BYTES, StoreBatcher
from phoenix_cluster._registry.entries import Entry
from phoenix_cluster._registry.messages import (
    Refusal,
    StoreReply,
    StoreRequest,
    decode,
)
from phoenix_cluster._transport.tasks import TaskSet


def _entry(name: str, rid: int, value: bytes = b"\x01") -> Entry:
    return Entry(name, "holder", 1, 1_790_000_000_000, rid, value=value)


class _Replicas:
    """A fake ``store_at``: records each request; answers with scripted replies."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, StoreRequest]] = []
        self.reply: dict[str, StoreReply | None] = {}
        self.gate = asyncio.Event()
        self.gate.set()

    async def store_at(self, node: str, payload: bytes) -> StoreReply | None:
        self.sent.append((node, decode(StoreRequest, payload)))
        await self.gate.wait()
        return self.reply.get(node, StoreReply())


@pytest.fixture
async def tasks() -> Any:
    owned = TaskSet("test batching")
    yield owned
    await owned.aclose()


def _batcher(replicas: _Replicas, tasks: TaskSet) -> StoreBatcher:
    def spawn(send: Coroutine[Any, Any, None]) -> object:
        return tasks.spawn(send, name="send")
    return StoreBatcher(replicas.store_at, spawn)


async def test_one_turn_of_entries_is_one_request_per_replica(tasks: TaskSet) -> None:
    replicas = _Replicas()
    batcher = _batcher(replicas, tasks)
    entries = [_entry(f"n{i}", i + 1) for i in range(5)]
    taken = Entry("n3", "other", 1, 1, 99, value=b"\x02")
    replicas.reply["b"] = StoreReply([Refusal("n3", 4, taken)])
    outcomes = {(node, e.name): batcher.replicate(node, e) for e in entries for node in "ab"}
    results = {k: await o for k, o in outcomes.items()}
    assert sorted((node, [e.name for e in req.entries]) for node, req in replicas.sent) == [
        ("a", ["n0", "n1", "n2", "n3", "n4"]), ("b", ["n0", "n1", "n2", "n3", "n4"])]
    assert all(req.mode == "replicate" for _, req in replicas.sent)
    # Each entry sees only its own refusals: n3 was refused by b, with the winner.
    assert results[("b", "n3")] == StoreReply([Refusal("n3", 4, taken)])
    assert all(r == StoreReply() for k, r in results.items() if k != ("b", "n3"))


async def test_entries_of_later_turns_go_in_later_requests(tasks: TaskSet) -> None:
    replicas = _Replicas()
    batcher = _batcher(replicas, tasks)
    first = batcher.replicate("a", _entry("x", 1))
    await first
    second = batcher.replicate("a", _entry("y", 2))
    assert await second == StoreReply()
    assert [[e.name for e in req.entries] for _, req in replicas.sent] == [["x"], ["y"]]


async def test_a_replica_that_does_not_answer_fails_every_entry_sent_to_it(
        tasks: TaskSet) -> None:
    replicas = _Replicas()
    replicas.reply["a"] = None
    batcher = _batcher(replicas, tasks)
    outcomes = [batcher.replicate("a", _entry(f"n{i}", i + 1)) for i in range(3)]
    ok = batcher.replicate("b", _entry("n0", 1))
    assert [await o for o in outcomes] == [None, None, None]
    assert await ok == StoreReply()


async def test_a_large_batch_is_sent_without_waiting_for_the_turn_to_end(
        tasks: TaskSet) -> None:
    replicas = _Replicas()
    batcher = _batcher(replicas, tasks)
    big = b"\x00" * (MAX_BATCH_BYTES // 2)
    outcomes = [batcher.replicate("a", _entry(f"n{i}", i + 1, big)) for i in range(3)]
    assert [await o for o in outcomes] == [StoreReply()] * 3
    assert [[e.name for e in req.entries] for _, req in replicas.sent] == [["n0", "n1"],
                                                                          ["n2"]]


async def test_closing_the_owner_resolves_what_was_in_flight() -> None:
    replicas = _Replicas()
    replicas.gate.clear()  # the replica never answers
    owned = TaskSet("closing")
    batcher = _batcher(replicas, owned)
    outcome = batcher.replicate("a", _entry("n", 1))
    for _ in range(10):  # the send starts within a few turns of the loop
        await asyncio.sleep(0)
    assert len(replicas.sent) == 1
    await owned.aclose()
    assert outcome.done() and outcome.result() is None
