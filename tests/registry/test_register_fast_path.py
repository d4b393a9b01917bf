"""A registration whose name nobody else is writing is coordinated on the connection's
reader, with no task (``NameOwner.register_now``); one of a name being written waits its
turn in a task. Both keep the guarantees of docs/registry.md: the name's lock is held
until the other owners decided, so an unregister or a second registration of the name
waits for it; a contended name has exactly one winner, the same on every owner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

import pytest

import phoenix_cluster as phx
from phoenix_cluster._registry.messages import StoreReply, StoreRequest
from phoenix_cluster._registry.owner import NameOwner
from phoenix_cluster._registry.registry import Registry
from phoenix_cluster._transport.rpc import Services
from phoenix_cluster._wire.messages import Call, Error, Redirect, Reply
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual, wait_for


def _owner(node: phx.Node) -> NameOwner:
    registry: Registry = node.registry
    return registry._owner


def _coordinator(cluster: MemoryCluster, name: str) -> phx.Node:
    link = cluster.nodes[0].registry._link
    return cluster.node(link.ordered(link.replicas(name, 3))[0])


def _held_everywhere(cluster: MemoryCluster, name: str, holder: str) -> bool:
    return all((e := _owner(n).live(name)) is not None and e.holder == holder
               for n in cluster.nodes)


def _not_now(node: str, payload: bytes, answered: Callable[[StoreReply | None], None]) -> bool:
    return False


class _Gate:
    """Holds a coordinator's ``store`` requests to the other owners until opened."""

    def __init__(self, owner: NameOwner) -> None:
        self.opened = asyncio.Event()
        self.held = 0
        self.answer_none = False
        store_at = owner._batcher._store_at

        async def gated(node: str, payload: bytes) -> StoreReply | None:
            self.held += 1
            await self.opened.wait()
            return None if self.answer_none else await store_at(node, payload)

        self._owner, self._store_at, self._start = owner, store_at, owner._batcher._start
        owner._batcher._store_at = gated
        owner._batcher._start = _not_now  # every batch through ``gated``

    def close(self) -> None:
        self._owner._batcher._store_at = self._store_at
        self._owner._batcher._start = self._start


async def _unregister_and_second_registration_wait(cluster: MemoryCluster) -> None:
    """The coordinator's replicas are held: the registration taken on the fast path
    keeps its name locked, so an unregister and another node's registration of the same
    name (sent in that order) wait; once the replicas answer they run in turn: the
    first registration succeeds, the unregister releases it, the second one wins."""
    name = "fast/contended"
    coordinator = _coordinator(cluster, name)
    other = next(n for n in cluster.nodes if n is not coordinator)
    owner = _owner(coordinator)
    gate = _Gate(owner)
    first = asyncio.create_task(coordinator.registry.register(name, 1))
    await wait_for(lambda: gate.held == 2, what="the registration's stores held")
    assert owner._locks.busy(name)
    release = asyncio.create_task(other.registry.unregister(name))
    await asyncio.sleep(0.05)  # the unregister reaches the coordinator first
    second = asyncio.create_task(other.registry.register(name, 2))
    await asyncio.sleep(1.0)
    assert not (first.done() or release.done() or second.done())
    held = owner.live(name)
    assert held is not None and held.holder == coordinator.name
    gate.opened.set()
    await first
    assert await release is True
    await second
    await wait_for(partial(_held_everywhere, cluster, name, other.name),
                   what="the second registration on every owner")
    assert await coordinator.registry.lookup(name, cached=False) == 2
    assert name in other.registry.held() and name not in coordinator.registry.held()
    assert len(owner._locks) == 0
    gate.close()


async def _one_winner_per_contended_name(cluster: MemoryCluster) -> None:
    """Every member registers each of 20 names at once with its own value: per name one
    registration succeeds, the others get NameTaken, every owner keeps the winner, and
    only the winner holds it. Registering the same target twice at once from one node
    succeeds twice (the same claim)."""
    names = [f"race/{i}" for i in range(20)]
    calls = [(node, name) for name in names for node in cluster.nodes]
    outcomes = await asyncio.gather(
        *(node.registry.register(name, node.name) for node, name in calls),
        return_exceptions=True)
    for name in names:
        won = [node for (node, n), out in zip(calls, outcomes, strict=True)
               if n == name and out is None]
        lost = [out for (_, n), out in zip(calls, outcomes, strict=True)
                if n == name and out is not None]
        assert len(won) == 1, (name, outcomes)
        assert all(isinstance(out, phx.NameTaken) for out in lost), lost
        winner = won[0]
        await wait_for(partial(_held_everywhere, cluster, name, winner.name),
                       what=f"{name} on every owner")
        assert [name in n.registry.held() for n in cluster.nodes] == [
            n is winner for n in cluster.nodes]
        assert await cluster.nodes[0].registry.lookup(name, cached=False) == winner.name
    twice = await asyncio.gather(*(cluster.nodes[1].registry.register("same", "t")
                                   for _ in range(2)))
    assert twice == [None, None]
    assert all(len(_owner(n)._locks) == 0 for n in cluster.nodes)


async def _no_majority_rolls_back_and_frees_the_name(cluster: MemoryCluster) -> None:
    name = "fast/alone"
    coordinator = _coordinator(cluster, name)
    owner = _owner(coordinator)
    gate = _Gate(owner)
    gate.answer_none = True
    gate.opened.set()
    with pytest.raises(phx.NoQuorum) as caught:
        await coordinator.registry.register(name, 1)
    assert caught.value.definite
    assert owner.live(name) is None and len(owner._locks) == 0
    gate.close()
    await coordinator.registry.register(name, 2)  # a new registration id
    assert await coordinator.registry.lookup(name, cached=False) == 2


async def _registrations_reach_the_replicas_in_batches(cluster: MemoryCluster) -> None:
    """60 registrations at once: every name is stored on its 3 owners, and the replicas
    received far fewer ``store`` requests than one per registration per replica
    (``_registry/batching.py``)."""
    sizes: list[int] = []
    for node in cluster.nodes:
        owner = _owner(node)

        def counted(req: StoreRequest,
                    merge: Callable[[StoreRequest], StoreReply] = owner.on_store) -> StoreReply:
            if req.mode == "replicate" and req.entries:
                sizes.append(len(req.entries))
            return merge(req)

        owner.on_store = counted  # type: ignore[method-assign]
    names = [f"batch/{i}" for i in range(60)]
    try:
        await asyncio.gather(*(cluster.nodes[0].registry.register(n, i)
                               for i, n in enumerate(names)))
        await wait_for(lambda: all(_owner(n).store.get(name) is not None
                                   for n in cluster.nodes for name in names))
    finally:
        for node in cluster.nodes:
            del _owner(node).on_store  # the class's method again
    assert sum(sizes) == 2 * 60  # each registration reached both other owners
    assert len(sizes) < 60  # one per registration per replica would be 120


def test_registrations_keep_their_guarantees_on_and_off_the_fast_path() -> None:
    """One 3-member cluster (memory network, virtual time) for the cases above."""

    async def scenario() -> None:
        async with MemoryCluster(3) as cluster:
            await _registrations_reach_the_replicas_in_batches(cluster)
            await _unregister_and_second_registration_wait(cluster)
            await _one_winner_per_contended_name(cluster)
            await _no_majority_rolls_back_and_frees_the_name(cluster)

    run_virtual(scenario())


async def test_an_immediate_handler_may_answer_later_with_a_reply_or_an_error() -> None:
    """``Services``: a future from an immediate handler is the answer once it resolves
    (a reply, the typed error it failed with, or an internal error)."""
    later: dict[str, asyncio.Future[bytes]] = {}

    def immediate(method: str, payload: bytes) -> asyncio.Future[bytes] | None:
        later[method] = asyncio.get_running_loop().create_future()
        return later[method]

    async def handler(method: str, payload: bytes) -> bytes:
        raise AssertionError("the task path is not taken")

    services = Services()
    services.register("svc", handler, immediate)
    answers: list[Reply | Error | Redirect] = []
    for i, method in enumerate(["ok", "taken", "bug"]):
        assert services.try_now(Call(i, "$svc", "", method, b"", 1000), answers.append)
    assert answers == []
    later["ok"].set_result(b"done")
    later["taken"].set_exception(phx.NameTaken("x is taken"))
    later["bug"].set_exception(RuntimeError("boom"))
    await asyncio.sleep(0)
    assert answers[0] == Reply(0, b"done")
    assert isinstance(answers[1], Error) and answers[1].code == phx.NameTaken.code
    assert isinstance(answers[2], Error) and answers[2].code == "internal_error"
    assert not answers[2].definite
