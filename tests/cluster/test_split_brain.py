"""Split-brain resolution on real node processes (issue 4, point 4).

Each case of ``docs/design/splitbrain.md`` runs on a ``LocalCluster`` with the default
strategy (keep-majority) and SWIM at its node defaults (probe every 0.5 s, timeout 0.2 s,
suspicion x3). Network faults are iptables rules (root only; without root they skip with the
reason, and fail under ``CI``); a pause is SIGSTOP/SIGCONT.

``stable_after`` is 10 s here (default 7 s), not shorter. A node cut off from the
others gets neither acks nor nacks, so Lifeguard slows its probing up to 8 x 0.5 s = 4 s
per probe, and it probes one member per period, suspects included: on the cut-off side
successive suspicions arrive up to two or three periods apart (8 s and more was seen
with 5 members). The resolver decides on whatever is suspected once the set has been
stable for ``stable_after``, so a shorter window decides on a partial view: the minority
keeps and removes the members it suspected first; removed members keep counting as the
other side until things calm down, so it still ends up downing itself (last test).

Measured time lines: the cut-off side suspects all of the other side within 2-8 s,
the set is then stable for 10 s, the resolver decides on its next tick (1 s) and the
losing node exits with ``EXIT_DOWNED`` (3): 15-20 s after the cut. The winners suspect
the lost nodes within 1 s and declare them dead within 2-3 s, when their rings re-home
the lost nodes' keys; they log their own decision (KEEP) after ``stable_after``.

Every wait is a deadline on a condition (``wait_until``, ``LocalCluster.wait``, polling);
the only fixed waits are observation windows asserting that something does NOT happen
(nobody downs while a link flaps or a pair is broken).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import pytest
from cluster_agents import Tally

import phoenix_cluster as phx
from phoenix_cluster._splitbrain import EXIT_DOWNED
from phoenix_cluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.slow

STABLE_AFTER_S = 10.0
ENV = {"PHX_SPLIT_BRAIN_STABLE_AFTER_S": str(STABLE_AFTER_S)}
# Suspecting the whole other side (2-8 s, with Lifeguard) + stable_after + a tick + the
# shutdown: 15-20 s; the deadline leaves room for a loaded machine.
DOWN_DEADLINE_S = 35.0
# A woken node hears it was declared dead in the ack to its first probe, or the first
# push-pull (every 10 s) at the latest, and downs itself at once.
WAKE_DOWN_DEADLINE_S = 15.0
# Until the survivors have declared the lost nodes dead and every key answers again.
SERVE_DEADLINE_S = 20.0
CALL_TIMEOUT_S = 1.0
# Not served yet: no owner answers, or the partition cannot elect yet (its downed
# replicas count as lost only once they have had stable_after to stop).
UNREACHABLE = (phx.NodeUnavailable, phx.CallTimeout, phx.NoQuorum, phx.NotLeader)
DECISION = "split-brain decision at "


def require_network_faults() -> None:
    reason = LocalCluster.network_faults_unavailable()
    if reason is not None:
        pytest.skip(reason)


def names(indices: Iterable[int]) -> set[str]:
    return {f"node-{i}" for i in indices}


def decisions(cluster: LocalCluster, index: int) -> list[str]:
    """The split-brain decision lines in node ``index``'s log (one per decision)."""
    node = cluster.nodes[index]
    return [line for line in node.log().splitlines() if f"{DECISION}{node.name}:" in line]


def listed(line: str, field: str) -> set[str]:
    """The names in ``field=[a, b]`` of a decision line."""
    start = line.index(f" {field}=[") + len(field) + 3
    inside = line[start:line.index("]", start)]
    return {n.strip() for n in inside.split(",") if n.strip()}


def exited(cluster: LocalCluster) -> dict[str, int | None]:
    return {n.name: n.process.returncode for n in cluster.nodes
            if n.process is not None and n.process.returncode is not None}


def tails(cluster: LocalCluster) -> str:
    """The end of every node's log, for assertion messages."""
    return "\n".join(f"--- {n.name}\n{n.log()[-2500:]}" for n in cluster.nodes)


def by_key(keys: dict[str, list[str]]) -> dict[str, str]:
    return {k: owner for owner, ks in keys.items() for k in ks}


def tally(client: phx.Node, key: str) -> phx.AgentRef:
    return client.ref(Tally, key).options(timeout=CALL_TIMEOUT_S)


async def where(client: phx.Node, key: str) -> str:
    return str(await tally(client, key).where())


async def keys_by_owner(client: phx.Node, cluster: LocalCluster,
                        per_node: int = 2) -> dict[str, list[str]]:
    """``per_node`` keys owned by each node, found by asking the agents where they live."""
    found: dict[str, list[str]] = {n.name: [] for n in cluster.nodes}
    for i in range(400):
        key = f"k{i}"
        owner = await where(client, key)
        if len(found[owner]) < per_node:
            found[owner].append(key)
        if all(len(keys) == per_node for keys in found.values()):
            return found
    raise AssertionError(f"no {per_node} keys per node among 400: {found}")


async def served_by(client: phx.Node, keys: Sequence[str], *, excluded: set[str],
                    timeout: float = SERVE_DEADLINE_S) -> dict[str, str]:
    """Poll until every key answers ``where()`` from ``client`` on a node outside
    ``excluded``; returns each key's owner. Fails with the last answers at the deadline."""
    deadline = time.monotonic() + timeout
    owners: dict[str, str] = {}
    last: dict[str, str] = {}
    while True:
        for key in keys:
            if key in owners:
                continue
            try:
                owner = await where(client, key)
            except UNREACHABLE as exc:
                last[key] = type(exc).__name__
                continue
            if owner in excluded:
                last[key] = f"still on {owner}"
                continue
            owners[key] = owner
        if len(owners) == len(keys):
            return owners
        if time.monotonic() > deadline:
            missing = {k: v for k, v in last.items() if k not in owners}
            raise AssertionError(f"not served outside {sorted(excluded)} after {timeout}s:"
                                 f" {missing}")
        await asyncio.sleep(0.1)  # an open breaker fails fast: do not spin


async def owners_agree(a: phx.Node, b: phx.Node, keys: Sequence[str], *,
                       timeout: float = SERVE_DEADLINE_S) -> dict[str, str]:
    """Poll until clients ``a`` and ``b`` (seeded by different nodes) find every key on
    the same node, twice in a row; returns the owners: one owner per key, whoever asks."""
    deadline = time.monotonic() + timeout
    previous: dict[str, tuple[str, str]] = {}
    error = ""
    while True:
        seen: dict[str, tuple[str, str]] = {}
        try:
            for key in keys:
                seen[key] = (await where(a, key), await where(b, key))
        except UNREACHABLE as exc:
            error = f"; last error: {type(exc).__name__}: {exc}"
        else:
            if all(x == y for x, y in seen.values()) and seen == previous:
                return {k: x for k, (x, _) in seen.items()}
        previous = seen
        if time.monotonic() > deadline:
            raise AssertionError(f"the two clients disagree on owners after {timeout}s:"
                                 f" {seen}{error}")
        await asyncio.sleep(0.1)


async def keep_running(cluster: LocalCluster, indices: Iterable[int], seconds: float) -> None:
    """Observe for ``seconds`` that the nodes ``indices`` keep running."""
    deadline = time.monotonic() + seconds
    watched = list(indices)
    while time.monotonic() < deadline:
        stopped = [cluster.nodes[i].name for i in watched if not cluster.nodes[i].running]
        assert not stopped, f"{stopped} stopped while they should run:\n{tails(cluster)}"
        await asyncio.sleep(0.1)


async def exit_codes(cluster: LocalCluster, indices: Iterable[int],
                     timeout: float = DOWN_DEADLINE_S) -> list[int]:
    """Wait for the nodes ``indices`` to exit; their exit codes, or fail with the logs."""
    try:
        return await asyncio.gather(*(cluster.wait(i, timeout_s=timeout) for i in indices))
    except TimeoutError:
        raise AssertionError(f"still running after {timeout}s: "
                             f"{[n.name for n in cluster.nodes if n.running]}\n"
                             f"{tails(cluster)}") from None


def assert_downed(cluster: LocalCluster, index: int, *, majority: Iterable[int]) -> str:
    """Node ``index`` explains its downing in ONE decision line holding the inputs;
    returns the line."""
    lines = decisions(cluster, index)
    assert len(lines) == 1, tails(cluster)
    line = lines[0]
    assert "DOWN_SELF by keep-majority" in line, line
    assert names(majority) <= listed(line, "unreachable"), line
    assert cluster.nodes[index].name in listed(line, "reachable"), line
    assert "this side is the minority" in line, line
    assert "downed by split-brain resolution" in cluster.nodes[index].log()
    return line


async def test_an_isolated_node_downs_itself_and_the_majority_serves_its_keys() -> None:
    require_network_faults()
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        client = await cluster.client()
        keys = await keys_by_owner(client, cluster)
        # The isolated node holds the lowest address: a minority of one still loses.
        lost, survivors = 0, [1, 2]

        started = time.monotonic()
        cluster.isolate(lost)
        assert await exit_codes(cluster, [lost]) == [EXIT_DOWNED]
        assert STABLE_AFTER_S < time.monotonic() - started < DOWN_DEADLINE_S
        line = assert_downed(cluster, lost, majority=survivors)
        assert listed(line, "reachable") - {client.name} == {"node-0"}

        owners = await served_by(client, list(by_key(keys)), excluded={"node-0"})
        assert set(owners.values()) <= names(survivors)
        for key in keys["node-0"]:  # re-homed to a survivor, and it takes writes
            assert await tally(client, key).add(1) == 1
        await wait_until(lambda: all(decisions(cluster, i) for i in survivors),
                         timeout=10, what="every survivor to log its decision")
        for i in survivors:
            assert cluster.nodes[i].running
            [line] = decisions(cluster, i)
            assert "KEEP by keep-majority" in line and listed(line, "down") == {"node-0"}


async def test_a_2_3_split_downs_the_two_and_the_three_serve_every_key() -> None:
    """Partitions with two replicas among the downed two elect on the three once those
    have had stable_after to stop: without data_dir they are gone with their memory
    (replication.md, "Lost members")."""
    require_network_faults()
    async with LocalCluster(nodes=5, imports=["cluster_agents"], env=ENV) as cluster:
        client = await cluster.client()
        keys = await keys_by_owner(client, cluster)
        # The two hold the lowest addresses: the tie-break never beats a majority.
        minority, majority = [0, 1], [2, 3, 4]

        started = time.monotonic()
        cluster.partition(minority, [*majority, client])
        assert await exit_codes(cluster, minority) == [EXIT_DOWNED, EXIT_DOWNED]
        assert time.monotonic() - started < DOWN_DEADLINE_S
        for i in minority:
            line = assert_downed(cluster, i, majority=majority)
            # The partner may be gone already (downed first: it exits without leaving),
            # and the client may still look reachable (clients never count).
            assert listed(line, "reachable") - {client.name} <= names(minority)

        owners = await served_by(client, list(by_key(keys)), excluded=names(minority))
        assert set(owners.values()) <= names(majority)
        assert {n.name for n in cluster.nodes if n.running} == names(majority)
        await wait_until(lambda: all(decisions(cluster, i) for i in majority),
                         timeout=10, what="every survivor to log its decision")
        for i in majority:
            [line] = decisions(cluster, i)
            assert "KEEP by keep-majority" in line
            assert listed(line, "down") == names(minority)


async def test_a_broken_pair_downs_nobody_and_the_cluster_keeps_serving() -> None:
    """splitbrain.md, "Broken pair": A and B cannot talk, C reaches both. Indirect probes
    through C keep both alive; should a suspicion stick, without link information (what
    membership reports today) each endpoint sees 2|1 and keeps, and with it only the
    junior endpoint downs. Either way C never downs and at most one of A, B does."""
    require_network_faults()
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        a = await cluster.client(seeds=[cluster.addresses[0]])
        b = await cluster.client(seeds=[cluster.addresses[2]])
        keys = await keys_by_owner(a, cluster)
        incarnations = {m.name: m.incarnation for m in a.members()}

        cluster.partition([0], [1])
        # Long enough for a suspicion over the broken link to become stable and decided.
        await keep_running(cluster, [2], STABLE_AFTER_S + 4)
        gone = exited(cluster)
        assert len(gone) <= 1, tails(cluster)
        if gone:  # only the documented junior endpoint (younger, then higher address)
            junior = max(("node-0", "node-1"), key=lambda n: (incarnations[n], n))
            assert gone == {junior: EXIT_DOWNED}, tails(cluster)
            assert "broken link" in decisions(cluster, int(junior[-1]))[0]
        for i in range(3):
            for line in decisions(cluster, i):
                assert "DOWN_SELF" not in line or "broken link" in line, line

        owners = await owners_agree(a, b, list(by_key(keys)))
        assert not set(owners.values()) & set(gone)
        cluster.heal()
        if not gone:  # nothing moved: every key is where it was before the cut
            assert owners == by_key(keys)
            await cluster.wait_converged()
            assert await owners_agree(a, b, list(by_key(keys))) == by_key(keys)


async def test_a_flapping_link_never_decides_a_partition() -> None:
    """Every link of node 0 goes down for 1 s out of 2, for 1.2 x stable_after: each
    outage is far shorter than stable_after, the unreachable sets keep changing and no
    side takes a partition decision (splitbrain.md: "a flapping link never decides").

    Node 0 may still be *declared dead* by the others during one of the outages (SWIM
    with confirmations from two peers is fast); it then downs itself as soon as it hears
    so (exit 3), because its keys already moved: safe, and documented. Nodes 1 and 2
    never stop and keep serving their keys throughout."""
    require_network_faults()
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        client = await cluster.client()
        keys = await keys_by_owner(client, cluster)

        flapping = asyncio.create_task(cluster.flap(
            [0], [1, 2, client], period_s=2.0, duration_s=1.2 * STABLE_AFTER_S))
        steady = keys["node-1"] + keys["node-2"]
        while not flapping.done():  # the other nodes' keys keep answering throughout
            owners = await served_by(client, steady, excluded={"node-0"}, timeout=5)
            assert set(owners.values()) <= {"node-1", "node-2"}
            assert exited(cluster) in ({}, {"node-0": EXIT_DOWNED}), tails(cluster)
            await asyncio.sleep(0.1)
        assert 5 <= await flapping <= 7  # outages of 1 s

        # After the last outage a decision would come within stable_after and a tick.
        await keep_running(cluster, (1, 2), STABLE_AFTER_S + 2)
        for i in (1, 2):
            # None, unless node 0 downed itself: then it is gone for good and the two
            # remove it (keep) stable_after later, as after any crash.
            lines = decisions(cluster, i)
            if cluster.nodes[0].running:
                assert lines == [], tails(cluster)
            for line in lines:
                assert "KEEP by keep-majority" in line and listed(line, "down") == {"node-0"}
        # Node 0 took no partition decision; if it downed, it was declared dead.
        assert all("declared node-0 dead" in line for line in decisions(cluster, 0)), \
            tails(cluster)
        await cluster.wait_converged()
        if cluster.nodes[0].running:
            assert await served_by(client, list(by_key(keys)), excluded=set()) == by_key(keys)
        else:
            owners = await served_by(client, list(by_key(keys)), excluded={"node-0"})
            assert set(owners.values()) <= {"node-1", "node-2"}


# ------------------------------------------------------------------ a paused node


async def pause_until_rehomed(cluster: LocalCluster, a: phx.Node,
                              b: phx.Node) -> tuple[list[str], float]:
    """Write to node 2's keys, SIGSTOP it until the others decided without it and serve
    its keys, write there again, SIGCONT it. Returns its keys and when it woke."""
    keys = await keys_by_owner(a, cluster)
    for key in keys["node-2"]:
        assert await tally(a, key).add(100) == 100
    cluster.pause(2)
    await wait_until(lambda: all(decisions(cluster, i) for i in (0, 1)),
                     timeout=DOWN_DEADLINE_S, what="the others to decide without node-2")
    for i in (0, 1):
        [line] = decisions(cluster, i)
        assert "KEEP by keep-majority" in line and listed(line, "down") == {"node-2"}
    await served_by(a, keys["node-2"], excluded={"node-2"})
    await owners_agree(a, b, keys["node-2"])
    for key in keys["node-2"]:  # a survivor serves it with its replicated state
        assert await tally(a, key).add(1) == 101
    cluster.resume(2)
    return keys["node-2"], time.monotonic()


async def test_a_paused_node_that_wakes_up_downs_itself_and_never_owns_again() -> None:
    """splitbrain.md, "Paused node": the others removed it while it slept; on waking it
    hears it was declared dead and downs itself (exit 3) at once, instead of refuting its
    way back with the agents it had before the pause. Safe: the writes made on the
    survivors meanwhile stay visible, and two clients seeded by different nodes find
    every key on the same surviving node."""
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        a = await cluster.client(seeds=[cluster.addresses[0]])
        b = await cluster.client(seeds=[cluster.addresses[1]])
        keys, woke = await pause_until_rehomed(cluster, a, b)

        assert await exit_codes(cluster, [2], timeout=WAKE_DOWN_DEADLINE_S) == [EXIT_DOWNED]
        assert time.monotonic() - woke < WAKE_DOWN_DEADLINE_S
        [line] = decisions(cluster, 2)
        assert "DOWN_SELF" in line and "declared node-2 dead" in line, line
        assert "the cluster declared this node dead" in cluster.nodes[2].log()

        every_key = [*keys, *[f"k{i}" for i in range(20)]]
        # Waking, node-2 refuted a suspicion before it heard of its death: the others saw
        # it back for a moment and down it again. Partitions that need its replica (their
        # other replica never caught up) then wait for that second decision plus the
        # margin in which a downed member may still be stopping (replication.md, "Lost
        # members").
        owners = await owners_agree(a, b, every_key,
                                    timeout=SERVE_DEADLINE_S + 2 * STABLE_AFTER_S)
        assert set(owners.values()) <= {"node-0", "node-1"}
        for key in keys:  # the replicated state and the survivor's write, nothing from
            # the paused node's stale activation
            assert await tally(a, key).read() == [100, 1], (key, owners[key])
        assert cluster.nodes[0].running and cluster.nodes[1].running
        for i in (0, 1):
            lines = decisions(cluster, i)
            assert 1 <= len(lines) <= 2, tails(cluster)
            for line in lines:
                assert "KEEP by keep-majority" in line and listed(line, "down") == {"node-2"}


async def test_an_isolated_node_downs_itself_even_with_a_short_stable_after() -> None:
    """With a short stable_after the cut-off node may first keep on a partial view (it
    suspects the others one at a time), but removed members keep counting as the other
    side, so it ends up the minority and downs itself."""
    require_network_faults()
    async with LocalCluster(nodes=5, imports=["cluster_agents"],
                            env={"PHX_SPLIT_BRAIN_STABLE_AFTER_S": "2"}) as cluster:
        await cluster.client()
        cluster.isolate(0)
        assert await cluster.wait(0, timeout_s=2 * DOWN_DEADLINE_S) == EXIT_DOWNED
        assert "DOWN_SELF" in decisions(cluster, 0)[-1]


# ------------------------------------------------- healed before the decision: nobody downs

DEAD = "membership {observer}: {name} is dead"


def declared_dead_by(cluster: LocalCluster, name: str, observers: Iterable[int]) -> bool:
    return all(DEAD.format(observer=cluster.nodes[i].name, name=name) in cluster.nodes[i].log()
               for i in observers)


def some_declared_dead(cluster: LocalCluster, names: Iterable[int],
                       observers: Iterable[int]) -> bool:
    """Whether some observer declared some of the nodes ``names`` dead."""
    return any(declared_dead_by(cluster, f"node-{n}", [i]) for n in names for i in observers)


async def assert_nobody_downs(cluster: LocalCluster, client: phx.Node,
                              keys: dict[str, list[str]], written: dict[str, int], *,
                              stable_after_s: float = STABLE_AFTER_S) -> None:
    """For longer than a decision would take, every node runs and none decides; then the
    cluster converges, every key answers from its old owner with its state."""
    await keep_running(cluster, range(len(cluster.nodes)), stable_after_s + 3)
    for i in range(len(cluster.nodes)):
        assert decisions(cluster, i) == [], tails(cluster)
    await cluster.wait_converged()
    assert await served_by(client, list(written), excluded=set()) == {
        k: v for k, v in by_key(keys).items() if k in written}
    for key, total in written.items():
        assert await add_surely(client, key) == total + 1, key


async def add_surely(client: phx.Node, key: str) -> int:
    """``add(1)``, exactly once. Again while it is turned away unrun (a definite error: a
    partition may still change hands after a heal). An indefinite outcome is one a client
    must settle itself: a leader the heal made stale writes, is fenced by the newer
    leader, and cannot tell whether its write will be adopted; the key's items then show
    whether it ran, and the write is sent again only if it did not."""
    deadline = time.monotonic() + SERVE_DEADLINE_S
    before = len(await surely(lambda: tally(client, key).read(), deadline))
    while True:
        try:
            return int(await tally(client, key).add(1))
        except phx.PhoenixError as exc:
            if time.monotonic() > deadline:
                raise
            if not exc.definite:
                seen = await surely(lambda: tally(client, key).read(), deadline)
                if len(seen) > before:
                    return sum(seen)
        await asyncio.sleep(0.1)


async def surely(call: Callable[[], Awaitable[list[int]]], deadline: float) -> list[int]:
    """``call()`` (a read), again after a definite error until ``deadline``."""
    while True:
        try:
            return await call()
        except phx.PhoenixError as exc:
            if not exc.definite or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def test_a_node_cut_past_its_suspicion_and_healed_before_the_decision_downs_nobody(
) -> None:
    """Reachability is not downing: node 0 is cut off until both others declared it dead,
    plus a second, then healed, all well before stable_after. It hears of its death,
    refutes it (its failure detector's verdict, no decision) and stays; nobody downs;
    its keys keep their committed state."""
    require_network_faults()
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        client = await cluster.client()
        keys = await keys_by_owner(client, cluster)
        written = {key: 10 for key in by_key(keys)}
        for key in written:
            assert await tally(client, key).add(10) == 10

        started = time.monotonic()
        cluster.isolate(0)
        await wait_until(lambda: declared_dead_by(cluster, "node-0", (1, 2)),
                         timeout=SERVE_DEADLINE_S, what="node-1 and node-2 to declare node-0 dead")
        await asyncio.sleep(1.0)  # the cut lasts past the suspicion time, by a second
        cluster.heal()
        assert time.monotonic() - started < STABLE_AFTER_S, "too slow to test the heal"

        await assert_nobody_downs(cluster, client, keys, written)
        assert "by failure detection only" in cluster.nodes[0].log()


async def test_a_2_3_split_healed_after_both_sides_declared_deaths_downs_nobody() -> None:
    """The former known issue: a 2|3 split lasts until each side declared the other dead,
    then heals before stable_after. Every member hears of its own death; none downs (no
    decision was taken), and every key answers from its owner with its state.

    The two on the minority side learn their losses slowly (Lifeguard slows the probing
    of a node whose probes fail: 5-15 s here), so stable_after is 20 s in this test."""
    require_network_faults()
    stable_after_s = 20.0
    env = {"PHX_SPLIT_BRAIN_STABLE_AFTER_S": str(stable_after_s)}
    async with LocalCluster(nodes=5, imports=["cluster_agents"], env=env) as cluster:
        client = await cluster.client()
        keys = await keys_by_owner(client, cluster, per_node=1)
        written = {key: 10 for key in by_key(keys)}
        for key in written:
            assert await tally(client, key).add(10) == 10

        started = time.monotonic()
        cluster.partition([0, 1], [2, 3, 4, client])
        await wait_until(lambda: some_declared_dead(cluster, (0, 1), (2, 3, 4))
                         and some_declared_dead(cluster, (2, 3, 4), (0, 1)),
                         timeout=stable_after_s, what="both sides to declare the other dead")
        cluster.heal()
        assert time.monotonic() - started < stable_after_s, "too slow to test the heal"

        await assert_nobody_downs(cluster, client, keys, written,
                                  stable_after_s=stable_after_s)


async def test_a_node_paused_past_its_suspicion_and_resumed_before_the_decision_stays(
) -> None:
    """SIGSTOP until the others declared node 2 dead, plus a second, then SIGCONT: it
    refutes, stays, and its keys keep their state (no split-brain decision was taken).
    Needs no iptables."""
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        client = await cluster.client()
        keys = await keys_by_owner(client, cluster)
        written = {key: 10 for key in by_key(keys)}
        for key in written:
            assert await tally(client, key).add(10) == 10

        started = time.monotonic()
        cluster.pause(2)
        try:
            await wait_until(lambda: declared_dead_by(cluster, "node-2", (0, 1)),
                             timeout=SERVE_DEADLINE_S, what="the others to declare node-2 dead")
            await asyncio.sleep(1.0)
        finally:
            cluster.resume(2)
        assert time.monotonic() - started < STABLE_AFTER_S, "too slow to test the resume"

        # (It may refute a suspicion before it hears of its death, then never hears it:
        # either way it stays.)
        await assert_nobody_downs(cluster, client, keys, written)


async def test_a_downed_node_rejoins_as_a_new_incarnation_in_the_same_process() -> None:
    """``on_downed = rejoin`` (phx node's default): paused until the others downed it,
    node 2 hears so on waking, stops serving and joins again as a new incarnation without
    exiting; every key then answers with its replicated state and the survivor's write."""
    env = {**ENV, "PHX_ON_DOWNED": "rejoin"}
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=env) as cluster:
        a = await cluster.client(seeds=[cluster.addresses[0]])
        b = await cluster.client(seeds=[cluster.addresses[1]])
        process = cluster.nodes[2].process
        assert process is not None
        before = {m.name: m.incarnation for m in a.members()}["node-2"]
        keys, _ = await pause_until_rehomed(cluster, a, b)

        await wait_until(lambda: "rejoining as a new incarnation" in cluster.nodes[2].log(),
                         timeout=WAKE_DOWN_DEADLINE_S, what="node-2 to rejoin")
        await cluster.wait_converged(timeout_s=SERVE_DEADLINE_S)
        assert cluster.nodes[2].process is process and process.returncode is None

        def incarnation() -> int:
            return {m.name: m.incarnation for m in a.members()}["node-2"]

        # A new life, not a refutation (waking, node-2 may first refute a suspicion, seen
        # by the client as incarnation + 1, before it hears of its death and rejoins).
        await wait_until(lambda: incarnation() >= before + 1_000,
                         timeout=SERVE_DEADLINE_S,
                         what=f"the client to see node-2's new life (was {before})")
        owners = await owners_agree(a, b, keys, timeout=SERVE_DEADLINE_S + 2 * STABLE_AFTER_S)
        for key in keys:
            assert await tally(a, key).read() == [100, 1], (key, owners[key])
        assert all(n.running for n in cluster.nodes)


async def test_one_way_loss_between_two_nodes_downs_nobody_and_every_key_answers() -> None:
    """Asymmetric loss (Akka's SurviveNetworkInstabilitySpec): every packet from node 0
    to node 1 is dropped for three times the suspicion time; the way back works. Each
    of the two fails its direct probes of the other, but node 2 relays the indirect
    probes, so nobody is declared dead and nobody decides; the keys keep answering and
    taking writes (a quorum does not need the broken pair), and keep their state."""
    require_network_faults()
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        client = await cluster.client()
        keys = await keys_by_owner(client, cluster)
        written = {key: 10 for key in by_key(keys)}
        for key in written:
            assert await tally(client, key).add(10) == 10

        cluster.cut_one_way(0, 1)
        until = time.monotonic() + 3 * 3.0  # suspicion: about 3 s with the defaults
        while time.monotonic() < until:
            for key in written:
                written[key] = await add_surely(client, key)
            await asyncio.sleep(0.2)
        assert not any(declared_dead_by(cluster, f"node-{a}", [b])
                       for a in range(3) for b in range(3) if a != b), tails(cluster)
        cluster.heal()

        await assert_nobody_downs(cluster, client, keys, written)
