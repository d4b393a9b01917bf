"""A caller's lookups to one owner in one turn of the loop: the first alone, the rest as one
request (``_registry/turn_batching.py``, ``_registry/owner_lookups.py``); each caller
still gets its own answer or its own typed error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

import phoenix_cluster as phx
from phoenix_cluster._registry.registry_service import RegistryService
from phoenix_cluster._registry.turn_batching import (
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    TurnBatcher,
)
from phoenix_cluster._transport.tasks import TaskSet
from phoenix_cluster.errors import AgentNotFound, NodeUnavailable, PhoenixError
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual, wait_for


class _Owner:
    """A fake ``send``: records each batch; answers ``item * 10``, or an error for items
    in ``refuse``, or fails the whole request for nodes in ``down``."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.refuse: set[int] = set()
        self.down: set[str] = set()
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, node: str, items: list[int]) -> list[int | PhoenixError]:
        self.batches.append((node, list(items)))
        await self.gate.wait()
        if node in self.down:
            raise NodeUnavailable(f"{node} is down", definite=True)
        return [phx.NameTaken(f"{i} is taken") if i in self.refuse else i * 10
                for i in items]


def _batcher(owner: _Owner, tasks: TaskSet,
             size: Callable[[int], int] = lambda _: 1) -> TurnBatcher[int, int]:
    def spawn(send: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return tasks.spawn(send, name="batch")
    return TurnBatcher(owner.send, spawn, size)


@pytest.fixture
async def tasks() -> Any:
    owned = TaskSet("test turn batching")
    yield owned
    await owned.aclose()


async def test_one_turn_is_one_request_per_node_each_with_its_own_answer(
        tasks: TaskSet) -> None:
    owner = _Owner()
    owner.refuse = {3}
    owner.down = {"c"}
    batcher = _batcher(owner, tasks)
    futures = {(node, i): batcher.submit(node, i) for node in "abc" for i in range(5)}
    results = await asyncio.gather(*futures.values(), return_exceptions=True)
    got = dict(zip(futures, results, strict=True))
    assert sorted(owner.batches) == [(n, [0, 1, 2, 3, 4]) for n in "abc"]
    assert got[("a", 2)] == 20 and got[("b", 4)] == 40
    assert isinstance(got[("a", 3)], phx.NameTaken)  # only its own error
    assert isinstance(got[("b", 3)], phx.NameTaken)
    assert all(isinstance(got[("c", i)], NodeUnavailable) for i in range(5))
    # A later turn is a later request.
    assert await batcher.submit("a", 7) == 70
    assert owner.batches[-1] == ("a", [7])


async def test_a_batch_leaves_at_its_size_or_count_limit(tasks: TaskSet) -> None:
    owner = _Owner()
    batcher = _batcher(owner, tasks, size=lambda i: MAX_BATCH_BYTES // 2 if i < 3 else 1)
    big = [batcher.submit("a", i) for i in range(3)]  # the third would pass the limit
    assert await asyncio.gather(*big) == [0, 10, 20]
    assert [items for _, items in owner.batches] == [[0, 1], [2]]
    owner.batches.clear()
    many = [batcher.submit("a", 10 + i) for i in range(MAX_BATCH_REQUESTS + 1)]
    await asyncio.gather(*many)
    assert [len(items) for _, items in owner.batches] == [MAX_BATCH_REQUESTS, 1]


@pytest.mark.parametrize("started", [True, False])
async def test_closing_fails_what_is_in_flight_as_indefinite(started: bool) -> None:
    owner = _Owner()
    owner.gate.clear()  # the owner never answers
    owned = TaskSet("closing")
    batcher = _batcher(owner, owned)
    outcome = batcher.submit("a", 1)
    if started:  # else closed before the batch's task took its first step
        for _ in range(10):  # the send starts within a few turns of the loop
            await asyncio.sleep(0)
    assert owner.batches == ([("a", [1])] if started else [])
    await owned.aclose()
    assert outcome.done()  # nobody waits on it forever
    with pytest.raises(NodeUnavailable) as raised:
        await outcome
    assert raised.value.definite is False  # the request may have reached the owner


def _counting(client: phx.Node) -> list[tuple[str, str]]:
    """Record every ``$registry`` method ``client``'s registry sends, and to whom."""
    link = client.registry._lookups._link
    sent: list[tuple[str, str]] = []
    call = link.call

    async def counted(node: str, service: str, method: str, payload: bytes,
                      timeout_s: float) -> bytes:
        sent.append((node, method))
        return await call(node, service, method, payload, timeout_s)

    link.call = counted  # type: ignore[method-assign]
    return sent


def _as_earlier_release(service: RegistryService) -> None:
    """Make ``service`` answer ``lookup_many`` as a release without it would."""
    def unknown(*_: object) -> Any:
        raise AgentNotFound("no registry method 'lookup_many' (an earlier release)")

    service._lookup_many = unknown  # type: ignore[method-assign, assignment]


def test_a_clients_concurrent_lookups_go_in_batches_with_their_own_answers() -> None:
    """3 members on the memory network and a client. Sequential lookups are one plain
    ``lookup`` each; 61 uncached lookups at once (one of a free name) are, per member,
    one ``lookup`` and one ``lookup_many``, each caller with its own answer. Members
    answering ``lookup_many`` as an earlier release would get the same answers, one
    ``lookup`` each."""

    async def scenario() -> None:
        async with MemoryCluster(3) as cluster:
            client = await cluster.add(role="client")
            await wait_for(lambda: len(client.registry._link.hosts()) == 3)
            names = [f"batch/{i}" for i in range(60)]
            await asyncio.gather(*(client.registry.register(n, i) for i, n in enumerate(names)))
            sent = _counting(client)
            lookups = client.registry._lookups
            spawn, batches = lookups._spawn, []

            def counted_spawn(send: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
                batches.append(send)
                return spawn(send)

            lookups._spawn = counted_spawn  # type: ignore[method-assign]
            lookups._batches._spawn = counted_spawn
            for i, name in enumerate(names[:5]):
                assert await client.registry.lookup(name, cached=False) == i
            # A lone lookup is sent at once, in its caller's task: no batch is formed.
            assert [m for _, m in sent] == ["lookup"] * 5 and batches == []

            sent.clear()
            found = await asyncio.gather(
                *(client.registry.lookup(n, cached=False) for n in [*names, "free"]))
            assert found == [*range(60), None]
            # Per member one lookup and one lookup_many; then the miss on "free" asks
            # its two other owners (a hand-off may be in progress), one lookup each.
            members = {node for node, _ in sent}
            assert sorted(m for _, m in sent) == sorted(
                ["lookup", "lookup_many"] * len(members) + ["lookup"] * 2)
            assert len(batches) == len(members) == 3

            for member in cluster.nodes:
                _as_earlier_release(member.registry.service)
            sent.clear()
            assert await asyncio.gather(
                *(client.registry.lookup(n, cached=False) for n in names[:20])) == list(range(20))
            assert [m for _, m in sent].count("lookup") == 20

    run_virtual(scenario())


def test_a_lookup_reply_cut_short_by_its_size_leaves_the_rest_asked_one_by_one() -> None:
    async def scenario() -> None:
        async with MemoryCluster(3) as cluster:
            client = await cluster.add(role="client")
            await wait_for(lambda: len(client.registry._link.hosts()) == 3)
            big = "x" * (MAX_BATCH_BYTES // 2)
            names = [f"big/{i}" for i in range(4)]  # 3 members: each stores all four
            for name in names:
                await client.registry.register(name, big)
            reply = cluster.nodes[0].registry.service._lookup_many(names)
            assert [e.name for e in reply.entries if e is not None] == names[:1]
            sent = _counting(client)
            lookups: list[Awaitable[object]] = [client.registry.lookup(n, cached=False)
                                                for n in names]
            assert await asyncio.gather(*lookups) == [big] * 4
            # 4 names, 3 coordinators: one was asked for two at once; the second went
            # in a lookup_many of one name, whose reply carried it.
            methods = [m for _, m in sent]
            assert methods.count("lookup") == 3 and methods.count("lookup_many") == 1

    run_virtual(scenario())
