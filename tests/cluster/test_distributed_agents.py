"""Distributed agents on real node processes: placement, migration, join and leave.

Every test checks the exactly-once promise the same way: numbered calls and casts go to
``Ledger`` agents while agents move, and each agent's record must hold every number once,
in the order it was sent.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest
from placement_agents import Affine, Least, Ledger, Local, Spawner

import phoenix_cluster as phx
from phoenix_cluster._agents import handoff
from phoenix_cluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.slow

IMPORTS = ["placement_agents"]

STREAM_CALL_TIMEOUT_S = 15.0


class Stream:
    """One sender: numbered calls (awaited in turn) and casts to one agent."""

    def __init__(self, client: phx.Node, key: str) -> None:
        # The streams prove that nothing is lost, repeated or reordered while agents
        # move; how long a call waits while its agent's new home takes over is a figure
        # for the benchmarks, so a loaded machine gets a generous timeout.
        self.ref = client.ref(Ledger, key).options(timeout=STREAM_CALL_TIMEOUT_S)
        self.calls = 0
        self.casts = 0
        self.errors: list[BaseException] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.ref.note.cast(self.casts)
                self.casts += 1
                await self.ref.record(self.calls)
                self.calls += 1
            except phx.PhoenixError as exc:  # recorded: the test fails on any
                self.errors.append(exc)
                return

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def check(self) -> None:
        assert not self.errors, self.errors
        ref = self.ref
        seen = await ref.read()
        assert seen["calls"] == list(range(self.calls)), f"calls of {ref.key}"
        # The last cast may still be on its way when cast() returned: wait for it.
        deadline = asyncio.get_running_loop().time() + 10
        while len(seen["casts"]) < self.casts and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            seen = await ref.read()
        casts = seen["casts"]
        bad = next((i for i, n in enumerate(casts) if n != i), None)
        assert bad is None and len(casts) == self.casts, (
            f"casts of {ref.key}: {len(casts)} of {self.casts}; first out of place at "
            f"{bad}: {casts[max(0, (bad or 0) - 3):(bad or 0) + 4]}")


async def test_agents_spread_evenly_and_every_policy_places_where_it_says() -> None:
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        names = [n.name for n in cluster.nodes]

        # hash: 600 agents, each node within 25 % of the mean share.
        where = await asyncio.gather(*(client.ref(Ledger, f"k{i}").where() for i in range(600)))
        counts = Counter(where)
        assert set(counts) == set(names)
        mean = 600 / 3
        assert all(abs(c - mean) <= 0.25 * mean for c in counts.values()), counts
        for key in ("k1", "k2", "k3"):  # stable: the same host every time
            assert await client.ref(Ledger, key).where() == where[int(key[1:])]

        # local: a member calling a local-placed agent gets it on its own node.
        for i, name in enumerate(names):
            spawner_key = ""
            for j in itertools.count():
                if await client.ref(Spawner, f"s{j}").where() == name:
                    spawner_key = f"s{j}"
                    break
            assert await client.ref(Spawner, spawner_key).spawn_local(f"loc{i}") == name
            # ...and it stays there when called from elsewhere.
            assert await client.ref(Local, f"loc{i}").where() == name
            assert await client.where(client.ref(Local, f"loc{i}")) == name

        # least_loaded: new agents go to the emptier nodes (the hash agents above load
        # the nodes unevenly; 90 new agents must even the policy's view out).
        before = {n: counts[n] for n in names}
        placed = Counter([await client.ref(Least, f"l{i}").where() for i in range(90)])
        after = {n: before[n] + placed[n] for n in names}
        assert max(after.values()) - min(after.values()) <= max(before.values()) - min(
            before.values()), (before, placed)
        assert placed[min(before, key=before.__getitem__)] >= placed[
            max(before, key=before.__getitem__)]

        # scored with an affinity function: each key lands on the node it names.
        for name in names:
            assert await client.ref(Affine, f"on:{name}/x").where() == name


async def test_migration_under_a_stream_of_calls_and_casts_loses_and_repeats_nothing() -> None:
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        names = [n.name for n in cluster.nodes]
        streams = [Stream(client, f"m{i}") for i in range(4)]
        for s in streams:
            s.start()
        for s in streams:

            def started(s: Stream = s) -> bool:
                return s.calls > 5

            await wait_until(started, timeout=20, what="stream started")
        for round_ in range(6):
            for s in streams:
                here = await client.where(s.ref)
                target = names[(names.index(here) + 1 + round_ % 2) % 3]
                await client.migrate(s.ref, to=target)
                assert await s.ref.where() == target
        for s in streams:
            await s.stop()
            await s.check()
            assert s.calls > 20
        # Casts forwarded after a move are acknowledged end to end: none was dropped.
        assert [line for n in cluster.nodes for line in n.dropped_messages()] == []


async def test_a_join_moves_agents_with_state_and_a_graceful_leave_hands_them_off() -> None:
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        keys = [f"j{i}" for i in range(150)]
        for i, key in enumerate(keys):
            await client.ref(Ledger, key).record(i)
        streams = [Stream(client, f"js{i}") for i in range(3)]
        for s in streams:
            s.start()

        new = await cluster.add_node()
        await cluster.wait_converged()
        new_name = cluster.nodes[new].name
        await wait_until(lambda: any(m.name == new_name for m in client.members()),
                         timeout=20, what="client sees the new node")

        async def hosts() -> Counter[str]:
            return Counter(await asyncio.gather(
                *(client.ref(Ledger, k).where() for k in keys)))

        async def settled() -> bool:
            return (await hosts())[new_name] > 0

        deadline = asyncio.get_running_loop().time() + 30
        while not await settled():
            assert asyncio.get_running_loop().time() < deadline, "no agent moved to the new node"
            await asyncio.sleep(0.2)
        for i, key in enumerate(keys):  # state came along
            assert (await client.ref(Ledger, key).read())["calls"] == [i]

        # Graceful leave of node 0: its agents move before it exits (exit code 0).
        leaving = cluster.nodes[0].name
        assert await cluster.stop(0) == 0
        await wait_until(lambda: all(m.name != leaving or m.status in ("left", "dead")
                                     for m in client.members()),
                         timeout=20, what="client sees node 0 leave")
        for i, key in enumerate(keys):
            assert (await client.ref(Ledger, key).read())["calls"] == [i], key
        assert leaving not in await hosts()
        for s in streams:
            await s.stop()
            await s.check()


async def test_a_target_killed_mid_migration_leaves_the_agent_active_once_with_its_state() -> None:
    async with LocalCluster(3, IMPORTS) as cluster:
        client = await cluster.client()
        names = [n.name for n in cluster.nodes]
        ref = client.ref(Ledger, "victim")
        for i in range(10):
            await ref.record(i)
        home = await client.where(ref)
        target_index = next(i for i, n in enumerate(names) if n != home)
        move = asyncio.ensure_future(client.migrate(ref, to=names[target_index]))
        await asyncio.sleep(0)  # the adopt request is on its way
        cluster.kill(target_index)
        with pytest.raises(phx.PhoenixError):
            await move
        # Wait until the death is noticed, then the agent answers again with every
        # committed number, exactly once, from one node.
        dead = names[target_index]
        await wait_until(lambda: all(m.name != dead or m.status == "dead"
                                     for m in client.members()), timeout=30,
                         what="the target declared dead")
        seen = None
        deadline = asyncio.get_running_loop().time() + 30
        while seen is None:
            try:
                seen = await ref.read()
            except phx.PhoenixError:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
        assert seen["calls"] == list(range(10))
        assert await ref.record(10) == 11


async def test_agents_hosted_off_their_home_keep_acknowledged_writes_when_their_host_dies(
) -> None:
    """A hash agent moved off its home by ``migrate`` and a policy-placed agent commit
    their state through the key's home (it leads the partition): kill -9 of their host
    loses none of their acknowledged writes."""
    async with LocalCluster(nodes=3, imports=IMPORTS) as cluster:
        client = await cluster.client()
        placement = client._stack.placement
        assert placement is not None
        names = [n.name for n in cluster.nodes]
        moved = client.ref(Ledger, "off-home")
        home = await client.where(moved)
        host = next(n for n in names if n != home)
        await client.migrate(moved, to=host)
        assert await moved.where() == host
        for n in range(20):
            assert await moved.record(n) == n + 1
        # A least_loaded agent on the same host, away from its key's home.
        placed = None
        for i in range(200):
            ref = client.ref(Least, f"least-{i}")
            # Its first call places it (and counts as its first write).
            if (await ref.where() == host
                    and placement.home(Least._phx_spec.name, ref.key) != host):
                placed = ref
                break
        assert placed is not None, "no least_loaded agent landed off its home on the host"
        hits = [await placed.where() for _ in range(9)]
        assert set(hits) == {host}
        # Only the host the directory names may commit through the home: a forged commit
        # is refused (definite), a malformed one is a protocol error, nothing changes.
        rpc = client._rpc
        assert rpc is not None
        home_address = cluster.addresses[names.index(home)]
        forged = handoff.encode(handoff.RemoteCommit(
            Ledger._phx_spec.name, "off-home", home, b"\x80"))
        with pytest.raises(phx.NotLeader) as refused:
            await rpc.call(home_address, "placement", "rcommit", forged, 5.0)
        assert refused.value.definite and f"hosted by {host}" in str(refused.value)
        with pytest.raises(phx.ProtocolError):
            await rpc.call(home_address, "placement", "rcommit", b"\xc1", 5.0)
        assert len((await moved.read())["calls"]) == 20
        cluster.kill(names.index(host))

        deadline = asyncio.get_running_loop().time() + 30
        while True:  # until both answer from a survivor (a deadline, not a sleep)
            try:
                calls = (await moved.options(timeout=1.0).read())["calls"]
                count = await placed.options(timeout=1.0).count()
                break
            except (phx.NodeUnavailable, phx.CallTimeout, phx.NotLeader, phx.NoQuorum):
                assert asyncio.get_running_loop().time() < deadline, "no answer after 30 s"
                await asyncio.sleep(0.05)
        assert calls == list(range(20)), calls
        assert count == 10, count
        assert await client.where(moved) != host and await client.where(placed) != host
