"""Active-active agents (``consistency="crdt"``) on real node processes (issue 6, item 4).

A crdt kind is merged, not fenced: every member that the ring sends a key to accepts its
updates, ships them to the key's other replicas, and converges with them by anti-entropy.
These tests check the three promises of docs/crdt.md, "Active-active agents": updates
from clients on different nodes converge; during a partition both sides accept updates
to the same key and after the heal every update of both sides is present; an
acknowledged update survives kill -9 of the node that ran it.

Every wait is a deadline on a condition (``wait_until``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from crdt_cluster_agents import Cart, NotCrdt

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.slow

IMPORTS = ["crdt_cluster_agents"]
UNREACHABLE = (phx.NodeUnavailable, phx.CallTimeout, phx.NotLeader, phx.NoQuorum)
# A cut-off node acknowledges after the push timeout (1 s); calls get room for it.
CALL_TIMEOUT_S = 4.0


def cart(client: phx.Node, key: str) -> phx.AgentRef:
    return client.ref(Cart, key).options(timeout=CALL_TIMEOUT_S)


async def try_read(client: phx.Node, key: str) -> tuple[set[str], int] | None:
    try:
        items, adds = await cart(client, key).read()
    except UNREACHABLE:
        return None
    return set(items), adds


async def converged(clients: Iterable[phx.Node], key: str, items: set[str],
                    timeout: float = 20.0, attempts: int | None = None) -> None:
    """Wait until every client reads exactly ``items`` at ``key``, and an add count
    between the acknowledged adds and ``attempts`` (adds that may have run: a call
    retried after an indefinite error may have run twice; default: exactly one each)."""
    clients = list(clients)
    last: list[tuple[set[str], int] | None] = []
    most = len(items) if attempts is None else attempts

    async def check() -> bool:
        nonlocal last
        last = [await try_read(c, key) for c in clients]
        return all(r is not None and r[0] == items and len(items) <= r[1] <= most
                   for r in last)

    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            missing = [(sorted(items - r[0]), r[1]) if r else "unreachable" for r in last]
            raise AssertionError(f"{key} did not converge in {timeout}s; missing, adds: "
                                 f"{missing} (expected {len(items)}..{most} adds)")
        await asyncio.sleep(0.1)


async def add_until_ok(client: phx.Node, key: str, item: str, tries: list[int],
                       timeout: float = 20.0) -> None:
    """Add ``item``, retrying while the key is being re-homed; counts every attempt in
    ``tries`` (an attempt that failed indefinitely may still have run)."""
    deadline = time.monotonic() + timeout
    while True:
        tries.append(1)
        try:
            await cart(client, key).add(item)
            return
        except UNREACHABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_updates_from_two_clients_on_different_nodes_converge_and_bad_kinds_fail() -> None:
    async with LocalCluster(nodes=3, imports=IMPORTS) as cluster:
        a = await cluster.client(seeds=[cluster.addresses[0]])
        b = await cluster.client(seeds=[cluster.addresses[2]])
        acked: set[str] = set()

        async def writer(client: phx.Node, name: str) -> None:
            for i in range(30):
                await cart(client, "shared").add(f"{name}{i}")
                acked.add(f"{name}{i}")

        await asyncio.gather(writer(a, "a"), writer(b, "b"))
        assert len(acked) == 60
        await converged([a, b], "shared", acked)

        # Bad input: a crdt kind with a plain field fails with a typed error...
        with pytest.raises(phx.AgentError, match=r"not a phx\.crdt type") as failed:
            await a.ref(NotCrdt, "x").add(1)
        assert failed.value.remote_type == "phoenix_cluster.errors.ConfigError"
        assert "state field 'total' is a int" in "".join(n.log() for n in cluster.nodes)
        # ...and the nodes keep running and serving.
        assert all(n.running for n in cluster.nodes)
        await cart(b, "shared").add("after")
        await converged([a, b], "shared", acked | {"after"})


async def home_of(client: phx.Node, node: str) -> str:
    """A key whose home is ``node``."""
    for i in range(200):
        if str(await cart(client, f"k{i}").where()) == node:
            return f"k{i}"
    raise AssertionError(f"no key homed at {node} among 200")


async def test_both_sides_of_a_partition_accept_updates_and_converge_after_heal(
    tmp_path: Path,
) -> None:
    reason = LocalCluster.network_faults_unavailable()
    if reason is not None:
        pytest.skip(reason)
    # Nobody downs itself by a partition decision during the test (stable_after is long).
    # Node 0 and the client on its side, cut off, keep the others as suspects instead of
    # declaring them dead (a huge suspicion_mult): node 0's ring, and so the key's home
    # (node 0), stays as it was, and after the heal that side spreads no "dead" rumours
    # that would down the majority (membership downs every member that hears it was
    # declared dead: after a long symmetric partition, everyone). The majority
    # declares node 0 dead and re-homes the key on its side. After the heal node 0 hears
    # it was declared dead and downs itself, handing its replicas over first.
    config = tmp_path / "patient.toml"
    config.write_text("[node]\nsuspicion_mult = 1000\n")
    env = {"PHX_SPLIT_BRAIN_STABLE_AFTER_S": "300"}
    cluster = LocalCluster(nodes=3, imports=IMPORTS, env=env)
    cluster.nodes[0].extra_args = ["--config", str(config)]
    async with cluster:
        # The client on node 0's side gossips too: it must be as patient as node 0.
        lone = await cluster.client(seeds=[cluster.addresses[0]], suspicion_mult=1000)
        many = await cluster.client(seeds=[cluster.addresses[1]])
        other = await cluster.client(seeds=[cluster.addresses[2]])
        key = await home_of(lone, "node-0")
        before = {f"before{i}" for i in range(5)}
        for item in sorted(before):
            await cart(lone, key).add(item)

        cluster.partition([0, lone], [1, 2, many, other])
        left = {f"left{i}" for i in range(5)}
        right = {f"right{i}" for i in range(5)}
        tries: list[int] = []

        async def side(client: phx.Node, items: set[str]) -> None:
            for item in sorted(items):
                await add_until_ok(client, key, item, tries)

        await asyncio.gather(side(lone, left), side(many, right))
        # Both sides accepted writes to the same key, each on its own side.
        assert str(await cart(lone, key).where()) == "node-0"
        assert str(await cart(many, key).where()) in ("node-1", "node-2")
        lone_view = await try_read(lone, key)
        many_view = await try_read(many, key)
        assert lone_view is not None and many_view is not None
        assert lone_view[0] == before | left
        assert many_view[0] == before | right

        cluster.heal()
        # Every member still running holds every update of both sides.
        every = before | left | right
        readers = {0: lone, 1: many, 2: other}  # each client reads through its seed
        deadline = time.monotonic() + 30
        while True:
            await asyncio.sleep(0.5)
            alive = [i for i in readers if cluster.nodes[i].running]
            assert alive, "every member downed itself after the heal"
            try:
                await converged([readers[i] for i in alive], key, every, timeout=5,
                                attempts=len(before) + len(tries))
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                continue
            if [i for i in readers if cluster.nodes[i].running] == alive:
                break  # nobody stopped while we read: the answer holds for the survivors
        assert cluster.nodes[1].running and cluster.nodes[2].running, "\n".join(
            line for n in cluster.nodes for line in n.log().splitlines()
            if "decision" in line or "declared" in line or "crdt" in line)


async def test_acknowledged_updates_survive_kill_9_of_the_node_that_ran_them() -> None:
    async with LocalCluster(nodes=3, imports=IMPORTS) as cluster:
        client = await cluster.client()
        keys = [f"c{i}" for i in range(4)]
        hosts = {key: str(await cart(client, key).where()) for key in keys}
        victim = hosts[keys[0]]  # it runs (at least) c0's updates when it dies
        acked: dict[str, set[str]] = {key: set() for key in keys}
        maybe: dict[str, set[str]] = {key: set() for key in keys}
        stop = asyncio.Event()

        async def writer(key: str) -> None:
            for i in range(100_000):
                if stop.is_set():
                    return
                item = f"{key}-{i}"
                try:
                    await cart(client, key).add(item)
                except UNREACHABLE:
                    maybe[key].add(item)  # may have run: allowed, not required
                    await asyncio.sleep(0.05)
                else:
                    acked[key].add(item)

        writers = [asyncio.create_task(writer(key)) for key in keys]
        await wait_until(lambda: len(acked[keys[0]]) >= 20, timeout=20, what="warm-up")
        cluster.kill(int(victim.removeprefix("node-")))
        at_death = len(acked[keys[0]])
        await wait_until(lambda: len(acked[keys[0]]) >= at_death + 20, timeout=30,
                         what=f"{keys[0]} to take updates again after {victim} died")
        stop.set()
        await asyncio.gather(*writers)

        for key in keys:
            items, adds = await cart(client, key).read()
            assert acked[key] <= set(items), (key, sorted(acked[key] - set(items)))
            assert set(items) <= acked[key] | maybe[key], key
            assert len(acked[key]) <= adds <= len(acked[key]) + len(maybe[key]), key
        assert str(await cart(client, keys[0]).where()) != victim
