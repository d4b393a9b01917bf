"""Leases, locks, elections, semaphores and barriers on one embedded node: the public
contract of ``phoenix_cluster.coordination``, call by call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import phoenix_cluster as phx
from phoenix_cluster import coordination
from phoenix_cluster.testing import wait_until


class Store(phx.Agent, kind="tests.coordination.store"):
    """A resource guarded by a lease: it refuses writes under a stale fencing token."""

    fence: coordination.FencedResource   # annotated: typed again after a rollback

    def __init__(self) -> None:
        self.fence = coordination.FencedResource()
        self.rows: list[str] = []

    async def write(self, token: int, row: str) -> None:
        self.fence.admit("store", token)
        self.rows.append(row)

    async def read(self) -> list[str]:
        return self.rows


async def test_acquire_renew_release_with_tokens_that_only_grow() -> None:
    async with phx.Node() as node:
        lease = await coordination.acquire(node, "db", "w1", ttl=5.0)
        assert (lease.token, lease.valid) == (1, True)
        assert 4.0 < lease.remaining() <= 4.5   # ttl minus the default margin (ttl / 10)
        again = await coordination.acquire(node, "db", "w1", ttl=5.0)
        assert again.token == 1                  # the holder asking again: same token
        with pytest.raises(phx.LeaseHeld, match="w1") as held:
            await coordination.acquire(node, "db", "w2", ttl=5.0)
        assert held.value.holders == ["w1"] and held.value.definite
        await lease.renew()
        await lease.release()
        assert not lease.valid
        await lease.release()                   # releasing twice is fine
        second = await coordination.acquire(node, "db", "w2", ttl=5.0)
        assert second.token == 2


async def test_a_release_by_a_non_holder_is_refused_with_a_typed_error() -> None:
    async with phx.Node() as node:
        mine = await coordination.acquire(node, "db", "w1", ttl=5.0)
        ref = node.ref(coordination.LeaseAgent, "db")
        forged = coordination.Lease(ref, "db", "intruder", mine.token, 5.0, 0.5, 0.0)
        with pytest.raises(phx.NotHolder) as refused:
            await forged.release()
        assert refused.value.definite
        assert mine.valid
        await mine.renew()                      # the real holder still holds it


async def test_an_expired_lease_is_lost_and_the_next_holder_gets_a_larger_token() -> None:
    async with phx.Node() as node:
        lease = await coordination.acquire(node, "job", "w1", ttl=0.3, margin=0.05)
        second = await coordination.acquire(node, "job", "w2", ttl=5.0, wait=5.0)
        assert second.token > lease.token
        assert not lease.valid
        with pytest.raises(phx.NotHolder):
            await lease.renew()
        with pytest.raises(phx.NotHolder):
            await lease.release()


async def test_a_resource_refuses_the_token_of_a_lost_lease() -> None:
    async with phx.Node() as node:
        store = node.ref(Store, "s")
        old = await coordination.acquire(node, "store", "w1", ttl=0.3, margin=0.05)
        await store.write(old.token, "from w1")
        new = await coordination.acquire(node, "store", "w2", ttl=5.0, wait=5.0)
        await store.write(new.token, "from w2")
        with pytest.raises(phx.AgentError) as refused:   # w1 woke up from a long pause
            await store.write(old.token, "late w1")
        assert refused.value.remote_type == "phoenix_cluster.errors.StaleToken"
        assert await store.read() == ["from w1", "from w2"]   # the late write left no trace
        await store.write(new.token, "w2 again")              # the fence survived the rollback
        with pytest.raises(phx.StaleToken):
            coordination.check_token(new.token, old.token)
        assert coordination.check_token(new.token, new.token) == new.token


async def test_lock_renews_in_the_background_and_releases_at_the_end() -> None:
    async with phx.Node() as node:
        # (ttl 1 s: renewals every 0.33 s survive the event-loop lag of a loaded machine)
        async with coordination.lock(node, "cron", "w1", ttl=1.0, margin=0.1) as lease:
            await asyncio.sleep(2.1)            # two ttls: only renewals keep it
            assert lease.valid and not lease.lost.is_set()
            with pytest.raises(phx.LeaseHeld):
                await coordination.acquire(node, "cron", "w2", ttl=1.0)
        assert not lease.valid
        after = await coordination.acquire(node, "cron", "w2", ttl=1.0)
        assert after.token == lease.token + 1


async def test_bad_arguments_are_refused_with_config_errors() -> None:
    async with phx.Node() as node:
        for kwargs in ({"ttl": 0}, {"ttl": float("nan")}, {"wait": -1}, {"ttl": 1.0,
                                                                           "margin": 1.0}):
            with pytest.raises(phx.ConfigError):
                await coordination.acquire(node, "x", "w", **kwargs)
        with pytest.raises(phx.ConfigError, match="holder"):
            await coordination.acquire(node, "x", "")
        with pytest.raises(phx.ConfigError, match="limit"):
            await coordination.acquire_permit(node, "x", "w", limit=0)
        with pytest.raises(phx.ConfigError, match="parties"):
            await coordination.barrier(node, "x", "p", 0)


async def test_a_semaphore_admits_limit_holders_and_refuses_another_limit() -> None:
    async with phx.Node() as node:
        permits = [await coordination.acquire_permit(node, "gpu", f"w{i}", limit=2)
                   for i in range(2)]
        assert [p.token for p in permits] == [1, 2]
        with pytest.raises(phx.LeaseHeld) as full:
            await coordination.acquire_permit(node, "gpu", "w3", limit=2)
        assert sorted(full.value.holders) == ["w0", "w1"]
        with pytest.raises(phx.SemaphoreMismatch, match="limit 2"):
            await coordination.acquire_permit(node, "gpu", "w3", limit=3)
        waiter = asyncio.create_task(
            coordination.acquire_permit(node, "gpu", "w3", limit=2, wait=5.0))
        await permits[0].release()
        assert (await waiter).token == 3


async def test_a_barrier_releases_its_parties_together_round_after_round() -> None:
    async with phx.Node() as node:
        for expected_round in range(2):
            rounds = await asyncio.gather(*(coordination.barrier(node, "sync", f"p{i}", 3)
                                            for i in range(3)))
            assert rounds == [expected_round] * 3


async def test_a_barrier_refuses_an_inconsistent_party_count_and_times_out() -> None:
    async with phx.Node() as node:
        waiting = asyncio.create_task(coordination.barrier(node, "b", "p1", 2, timeout=5.0))
        ref = node.ref(coordination.BarrierAgent, "b")
        await wait_until_arrived(ref, 1)
        with pytest.raises(phx.BarrierMismatch) as mismatch:
            await coordination.barrier(node, "b", "p2", 3)
        assert mismatch.value.definite
        assert await coordination.barrier(node, "b", "p2", 2) == 0
        assert await waiting == 0
        with pytest.raises(phx.CallTimeout) as lonely:
            await coordination.barrier(node, "b", "p1", 2, timeout=0.1)
        assert lonely.value.definite            # withdrawn: it does not count
        assert (await ref.poll(1)).arrived == 0


async def wait_until_arrived(ref: phx.AgentRef, count: int) -> None:
    for _ in range(200):
        if (await ref.poll(0)).arrived == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} arrivals never recorded")


async def test_an_election_has_one_leader_per_term_and_calls_back() -> None:
    events: list[tuple[str, str, int]] = []

    def record(candidate: str, what: str) -> Callable[[int], None]:
        return lambda term: events.append((candidate, what, term))

    async with phx.Node() as node:
        elections = [coordination.LeaderElection(
            node, "leader", f"c{i}", ttl=0.5, margin=0.1,
            on_elected=record(f"c{i}", "elected"), on_lost=record(f"c{i}", "lost"))
            for i in range(2)]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(e.run()) for e in elections]
            await wait_until(lambda: any(e.is_leader for e in elections), timeout=5,
                             what="a leader")
            first = next(e for e in elections if e.is_leader)
            term = first.term
            assert term is not None
            # the lease is taken from under the leader (its holder id released it
            # elsewhere): its next renewal is refused and it steps down
            await node.ref(coordination.LeaseAgent, "leader").release(first.candidate, term)
            await wait_until(lambda: (first.candidate, "lost", term) in events, timeout=5,
                             what="on_lost")
            await wait_until(lambda: any(e.is_leader and (e.term or 0) > term
                                         for e in elections), timeout=5, what="a new term")
            for task in tasks:
                task.cancel()
        elected = [(who, t) for who, what, t in events if what == "elected"]
        terms = [t for _, t in elected]
        assert terms == sorted(set(terms))      # one leader per term, terms grow
        lost = {(who, t) for who, what, t in events if what == "lost"}
        assert set(elected) == lost             # every leadership ended with on_lost


async def test_elect_leads_for_a_block_and_steps_down() -> None:
    async with phx.Node() as node:
        async with coordination.elect(node, "boss", "c1", ttl=1.0) as term:
            assert term.token == 1 and term.valid
        async with coordination.elect(node, "boss", "c2", ttl=1.0) as term:
            assert term.token == 2
