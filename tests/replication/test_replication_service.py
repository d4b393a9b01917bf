"""Replicators on an in-process network: every failure case of docs/design/replication.md.

Each test runs several :class:`Replicator` instances on a :class:`MemoryNetwork` under a
:class:`SimClock` (virtual time that jumps only when the loop is idle), so timeouts,
backoffs and late deliveries are deterministic and take no real time. Tests with a
SQLite store use the real clock (a worker thread is busy while virtual time would jump).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import msgspec
import pytest

from phoenix_cluster._foundation.env import SystemClock
from phoenix_cluster._replication.elections import EAGER_BATCH
from phoenix_cluster._replication.messages import Accept, Batch, Prepare, encode
from phoenix_cluster._replication.service import (
    ReplicationSettings,
    Replicator,
    partition_for,
)
from phoenix_cluster._replication.simulation import ReplicaCluster, SimClock, table_of
from phoenix_cluster._replication.types import Entry, Epoch, Record
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster.errors import NodeClosed, NoQuorum, NotLeader, ProtocolError

KIND = "counter"
LAZY = ReplicationSettings(eager=False)


def keys_led_by(owner: str, members: Iterable[str], n: int, *, prefix: str = "k") -> list[str]:
    """``n`` keys whose partition's primary is ``owner`` in the table of ``members``."""
    table = table_of(members)
    found: list[str] = []
    i = 0
    while len(found) < n:
        key = f"{prefix}{i}"
        if table.owner(partition_for(KIND, key)) == owner:
            found.append(key)
        i += 1
    return found


def primary(cluster: ReplicaCluster, key: str, members: Iterable[str] | None = None) -> str:
    return table_of(cluster.alive if members is None else members).owner(partition_for(KIND, key))


def rec(value: str, *replies: tuple[int, bytes]) -> Record:
    return Record(value.encode(), tuple(replies))


async def write(cluster: ReplicaCluster, node: str, key: str, value: str) -> None:
    rep = cluster.nodes[node]
    await rep.load(KIND, key)
    await rep.commit(KIND, key, rec(value))


async def read(cluster: ReplicaCluster, key: str, node: str | None = None) -> str | None:
    rep = cluster.nodes[node or primary(cluster, key)]
    got = await rep.load(KIND, key)
    return None if got is None else got.state.decode()


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., ReplicaCluster]]:
    made: list[ReplicaCluster] = []

    def factory(**kw: object) -> ReplicaCluster:
        kw.setdefault("settings", LAZY)
        cluster = ReplicaCluster(kw.pop("clock", SimClock()), **kw)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        await cluster.aclose()


# ----------------------------------------------------------------- the basics

async def test_load_then_commit_reaches_a_majority(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    key = keys_led_by("a", "abc", 1)[0]
    a = cluster.nodes["a"]
    assert await a.load(KIND, key) is None
    assert a.leads(partition_for(KIND, key)) is not None
    await a.commit(KIND, key, rec("v1", (42, b"reply-42")))
    got = await a.load(KIND, key)
    assert got == rec("v1", (42, b"reply-42"))
    p = partition_for(KIND, key)
    holders = [n for n, r in cluster.nodes.items() if r.store.get(p, KIND, key) is not None]
    assert len(holders) >= 2
    stats = a.statistics()
    assert stats.commits == 1 and stats.leading == 1 and stats.elections == 1
    assert "leads 1" in repr(a)


async def test_a_single_node_is_a_cluster_of_one(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("a")
    for i in range(20):
        await write(cluster, "a", f"k{i}", f"v{i}")
    assert [await read(cluster, f"k{i}") for i in range(20)] == [f"v{i}" for i in range(20)]


async def test_serving_needs_a_load_and_a_place_in_the_replica_set(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abcd")
    key = keys_led_by("a", "abcd", 1)[0]
    outsider = next(n for n in "abcd"
                    if n not in table_of("abcd").replica_set(partition_for(KIND, key)))
    with pytest.raises(NotLeader, match="not in the replica set") as info:
        await cluster.nodes[outsider].load(KIND, key)
    assert info.value.definite and info.value.partition == partition_for(KIND, key)
    with pytest.raises(NotLeader, match="does not lead") as info2:
        await cluster.nodes["a"].commit(KIND, key, rec("x"))
    assert info2.value.definite
    await cluster.nodes["a"].load(KIND, key)
    with pytest.raises(ValueError, match="max_record_bytes"):
        await cluster.nodes["a"].commit(KIND, key, Record(b"x" * (5 << 20)))
    with pytest.raises(ValueError, match="max_replies"):
        await cluster.nodes["a"].commit(KIND, key, Record(b"", tuple((i, b"") for i in range(300))))


async def test_without_a_majority_nothing_is_served(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    key = keys_led_by("a", "abc", 1)[0]
    cluster.net.isolate("a", "bc")
    with pytest.raises(NoQuorum) as info:
        await cluster.nodes["a"].load(KIND, key)
    assert info.value.definite


# ----------------------------------------------------------------- failure cases

async def test_leader_killed_after_a_commit_the_new_leader_adopts_it(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abcd")
    keys = keys_led_by("a", "abcd", 12)
    for key in keys:
        await write(cluster, "a", key, "v1")
    # The second write reaches one other replica only: still a majority with a itself.
    for key in keys:
        others = [m for m in table_of("abcd").replica_set(partition_for(KIND, key)) if m != "a"]
        cluster.net.cut("a", others[1:])
        await cluster.nodes["a"].commit(KIND, key, rec("v2"))
        cluster.net.heal()
    await cluster.kill("a")
    cluster.update()
    assert [await read(cluster, key) for key in keys] == ["v2"] * len(keys)


async def test_leader_killed_mid_write(make: Callable[..., ReplicaCluster]) -> None:
    """A write whose replies were lost is indefinite: the leader steps down, and the
    next leader adopts it (it reached a replica) or not (it did not)."""
    cluster = make()
    await cluster.start_all("abc")
    reached, lost = keys_led_by("a", "abc", 2)
    for key in (reached, lost):
        await write(cluster, "a", key, "v1")
    cluster.net.cut("bc", "a", both=False)  # requests arrive, replies are lost
    with pytest.raises(NoQuorum) as info:
        await cluster.nodes["a"].commit(KIND, reached, rec("v2"))
    assert not info.value.definite
    assert ("a", partition_for(KIND, reached), "no_quorum") in cluster.lost
    assert cluster.nodes["a"].leads(partition_for(KIND, reached)) is None
    cluster.net.heal()
    cluster.net.isolate("a", "bc")  # now nothing arrives at all
    with pytest.raises((NoQuorum, NotLeader)):
        await cluster.nodes["a"].commit(KIND, lost, rec("v2"))
    await cluster.kill("a")
    cluster.net.heal()
    cluster.update()
    assert await read(cluster, reached) == "v2"  # it reached b and c: adopted
    assert await read(cluster, lost) == "v1"  # it reached nobody: gone, never acknowledged


async def test_a_killed_replica_is_replaced_and_nothing_is_lost(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abcd")
    keys = [f"key{i}" for i in range(60)]
    for key in keys:
        await write(cluster, primary(cluster, key), key, f"v-{key}")
    await cluster.kill("c")
    # Until membership notices, the others commit with the majority that is left.
    for key in keys[:20]:
        node = primary(cluster, key, "abcd")
        if node != "c":
            await cluster.nodes[node].commit(KIND, key, rec(f"w-{key}"))
    cluster.update()
    for key in keys:
        wrote_again = key in keys[:20] and primary(cluster, key, "abcd") != "c"
        assert await read(cluster, key) == (f"w-{key}" if wrote_again else f"v-{key}")
    # The new replica sets hold every record on a majority (the catch-up).
    table = table_of("abd")
    for key in keys:
        p = partition_for(KIND, key)
        holders = sum(cluster.nodes[m].store.get(p, KIND, key) is not None
                      for m in table.replica_set(p))
        assert holders >= 2


async def test_two_leaders_after_a_network_partition(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    key = keys_led_by("a", "abc", 1)[0]
    p = partition_for(KIND, key)
    await write(cluster, "a", key, "before")
    cluster.net.cut("a", "bc")
    cluster.update(nodes="bc", view="bc")  # b and c declare a dead; a sees nothing yet
    new = primary(cluster, key, "bc")
    await write(cluster, new, key, "majority side")
    # a still believes it leads; the majority promised a newer epoch: fenced.
    assert cluster.nodes["a"].leads(p) is not None
    with pytest.raises((NoQuorum, NotLeader)) as info:
        await cluster.nodes["a"].commit(KIND, key, rec("minority side"))
    assert not info.value.definite
    assert cluster.nodes["a"].leads(p) is None
    cluster.net.heal()
    with pytest.raises(NotLeader):
        await cluster.nodes["a"].commit(KIND, key, rec("minority side"))
    cluster.update()  # back together; a is primary again and takes over
    assert await read(cluster, key, "a") == "majority side"
    assert cluster.nodes[new].leads(p) is None
    assert (new, p, "moved") in cluster.lost or (new, p, "deposed") in cluster.lost


async def test_a_paused_leader_wakes_up_fenced(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    key = keys_led_by("a", "abc", 1)[0]
    p = partition_for(KIND, key)
    await write(cluster, "a", key, "v1")
    cluster.net.pause("a")
    cluster.update(nodes="bc", view="bc")
    new = primary(cluster, key, "bc")
    await write(cluster, new, key, "v2")
    cluster.net.resume("a")
    with pytest.raises(NotLeader, match="fenced") as info:
        await cluster.nodes["a"].commit(KIND, key, rec("stale"))
    assert not info.value.definite
    assert ("a", p, "fenced") in cluster.lost
    assert await read(cluster, key, new) == "v2"
    for node in "bc":  # the stale write never replaced the newer one
        entry = cluster.nodes[node].store.get(p, KIND, key)
        assert entry is not None and entry.state == b"v2"


async def test_a_join_and_a_kill_at_once(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    keys = [f"key{i}" for i in range(80)]
    for key in keys:
        await write(cluster, primary(cluster, key), key, f"v-{key}")
    await cluster.kill("a")
    await cluster.start("d")
    await cluster.start("e")  # two joiners: some sets get two new members at once
    cluster.update()
    assert [await read(cluster, key) for key in keys] == [f"v-{key}" for key in keys]


async def test_a_replica_restarted_without_its_data_is_caught_up(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    keys = keys_led_by("a", "abc", 5)
    for key in keys:
        await write(cluster, "a", key, "v1")
    await cluster.kill("c")
    await cluster.start("c")  # same name, empty memory: unsynced
    cluster.update()
    for key in keys:
        await cluster.nodes["a"].commit(KIND, key, rec("v2"))  # c refuses; a and b commit
    # The refusal made a re-elect and catch c up.
    c = cluster.nodes["c"]
    for _ in range(100):
        states = [c.store.partition(partition_for(KIND, key)) for key in keys]
        if all(state is not None and state.synced for state in states):
            break
        await cluster.clock.sleep(0.01)
    assert all(c.store.get(partition_for(KIND, key), KIND, key) for key in keys)
    await cluster.kill("b")
    cluster.update()
    assert [await read(cluster, key) for key in keys] == ["v2"] * len(keys)


async def test_a_majority_that_lost_its_memory_leaves_the_remembering_replica_to_serve(
        make: Callable[..., ReplicaCluster], caplog: pytest.LogCaptureFixture) -> None:
    cluster = make()
    await cluster.start_all("abc")
    key = keys_led_by("a", "abc", 1)[0]
    await write(cluster, "a", key, "v1")
    for name in "bc":
        await cluster.kill(name)
        await cluster.start(name)
    cluster.update()
    # b and c forgot what they stored (no data_dir): the write in flight cannot know
    # whether it reached a majority.
    with pytest.raises(NoQuorum) as info:
        await cluster.nodes["a"].commit(KIND, key, rec("v2"))
    assert not info.value.definite
    # Whatever only b and c held is gone with their memory, and waiting would never bring
    # it back: a re-elects from what it remembers, says so, and catches b and c up.
    with caplog.at_level(logging.WARNING, logger="phoenix_cluster.replication"):
        got = await cluster.nodes["a"].load(KIND, key)
    # v2 failed indefinitely: a stored it, so it may be adopted; v1 is never lost.
    assert got in (rec("v1"), rec("v2"))
    assert any("lost its memory" in r.getMessage() for r in caplog.records)
    await write(cluster, "a", key, "v3")
    await cluster.kill("a")
    cluster.update()
    assert await read(cluster, key) == "v3"
    # When all three forgot, the partition starts empty.
    for name in "bc":
        await cluster.kill(name)
    for name in "abc":
        await cluster.start(name)
    cluster.update()
    assert await read(cluster, key) is None


async def lose_b_and_c(cluster: ReplicaCluster) -> tuple[str, Replicator]:
    """Write v1 to a key b leads, kill b and c; returns the key and survivor a."""
    await cluster.start_all("abc")
    key = keys_led_by("b", "abc", 1)[0]
    await write(cluster, "b", key, "v1")
    for name in "bc":
        await cluster.kill(name)
    cluster.update()
    return key, cluster.nodes["a"]


async def test_downed_members_without_data_dir_count_as_lost_after_the_margin(
        make: Callable[..., ReplicaCluster]) -> None:
    """A 2|1 cut leaves a with a set whose other two members were downed (split-brain
    keep): memory-only, they are gone with their memory once the margin has passed."""
    cluster = make()
    key, a = await lose_b_and_c(cluster)
    with pytest.raises(NoQuorum, match="no majority"):
        await a.load(KIND, key)
    a.members_lost(["b", "c"], after_s=30.0)
    with pytest.raises(NoQuorum, match="lost: \\[\\]"):
        await a.load(KIND, key)  # within the margin: they may still be stopping
    await cluster.clock.sleep(31.0)
    assert await a.load(KIND, key) == rec("v1")
    await a.commit(KIND, key, rec("v2"))
    # Back as new (empty) incarnations, they answer for themselves and are caught up.
    for name in "bc":
        await cluster.start(name)
    cluster.update()
    assert await read(cluster, key) == "v2"


async def test_downed_members_with_data_dir_are_waited_for(
        make: Callable[..., ReplicaCluster], tmp_path: Path) -> None:
    """Durable members keep their data over a restart: never adopt without them."""
    cluster = make(data_dir=tmp_path)
    key, a = await lose_b_and_c(cluster)
    a.members_lost(["b", "c"], after_s=0.0)
    await cluster.clock.sleep(1.0)
    with pytest.raises(NoQuorum, match="no majority"):
        await a.load(KIND, key)
    await cluster.start("b")
    cluster.update()
    assert await read(cluster, key) == "v1"


async def test_async_durability_replies_first(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    kept, lost = keys_led_by("a", "abc", 2)
    a = cluster.nodes["a"]
    await a.load(KIND, kept)
    await a.commit(KIND, kept, rec("async"), "async")
    p = partition_for(KIND, kept)
    for _ in range(100):
        if all(cluster.nodes[n].store.get(p, KIND, kept) is not None for n in "bc"):
            break
        await cluster.clock.sleep(0.01)
    await a.load(KIND, lost)
    cluster.net.isolate("a", "bc")
    await a.commit(KIND, lost, rec("async"), "async")  # returns: not replicated yet
    await cluster.kill("a")  # ... and never will be: async may lose the last writes
    cluster.net.heal()
    cluster.update()
    assert await read(cluster, kept) == "async"
    assert await read(cluster, lost) is None


async def test_a_table_move_hands_the_partition_over(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    moved = next(k for k in (f"m{i}" for i in range(5000))
                 if primary(cluster, k, "abc") == "a" and primary(cluster, k, "abcd") == "d")
    await write(cluster, "a", moved, "v1")
    p = partition_for(KIND, moved)
    await cluster.start("d")
    cluster.update()
    assert ("a", p, "moved") in cluster.lost and cluster.nodes["a"].leads(p) is None
    assert await read(cluster, moved) == "v1"
    await write(cluster, "d", moved, "v2")
    # Old replicas outside the new set were released.
    new_set = table_of("abcd").replica_set(p)
    for node in set("abc") - set(new_set):
        state = cluster.nodes[node].store.partition(p)
        assert state is not None and state.records == {}


async def test_eager_elections_lead_every_primary_partition(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make(settings=ReplicationSettings())
    await cluster.start_all("abc")
    table = table_of("abc")
    for _ in range(1000):
        if sum(len([p for p in range(4096) if cluster.nodes[n].leads(p)]) for n in "abc") == 4096:
            break
        await cluster.clock.sleep(0.01)
    for n in "abc":
        led = {p for p in range(4096) if cluster.nodes[n].leads(p)}
        assert led == {p for p in range(4096) if table.owner(p) == n}


async def test_failed_eager_elections_retry_in_batches_not_all_at_once(
        make: Callable[..., ReplicaCluster]) -> None:
    # After a node's death every partition it led fails its first elections together
    # while the survivors are busy; retrying them all at once swamped a loaded loop (a
    # crashed-owner test timed out behind thousands of elections). Retries go back
    # through the batched queue, so a node never runs more than EAGER_BATCH at a time.
    cluster = make(settings=ReplicationSettings())
    cluster.net.isolate("a", "bc")  # a's elections all fail until the heal
    await cluster.start_all("abc")
    table = table_of("abc")
    mine = {p for p in range(4096) if table.owner(p) == "a"}
    a = cluster.nodes["a"]
    busiest = 0
    for _ in range(2000):  # 20 s of virtual time: failures and retries, batch by batch
        busiest = max(busiest, len(a._elections))
        await cluster.clock.sleep(0.01)
    assert a._elections_failed > EAGER_BATCH  # retried ones among them
    assert 0 < busiest <= EAGER_BATCH  # 1,316 at once before the fix
    assert not any(a.leads(p) for p in mine)
    cluster.net.heal()
    for _ in range(3000):
        if all(a.leads(p) for p in mine):
            break
        busiest = max(busiest, len(a._elections))
        await cluster.clock.sleep(0.01)
    assert all(a.leads(p) for p in mine)
    assert busiest <= EAGER_BATCH


async def test_a_primary_that_lost_its_lead_without_a_move_runs_again_without_traffic(
        make: Callable[..., ReplicaCluster]) -> None:
    # A write that finds no quorum costs its leader the lead ("no_quorum"); the table
    # still names it primary, and before, nobody elected the partition again until a
    # call came (its lagging replicas stayed behind: a chaos run found partitions
    # without a leader 20 s after a heal). It runs again after retry_s by itself.
    cluster = make(settings=ReplicationSettings())
    await cluster.start_all("abc")
    key = keys_led_by("a", "abc", 1, prefix="lost-")[0]
    p = partition_for(KIND, key)
    for _ in range(1000):
        if cluster.nodes["a"].leads(p):
            break
        await cluster.clock.sleep(0.01)
    a = cluster.nodes["a"]
    assert a.leads(p)
    cluster.net.isolate("a", "bc")
    with pytest.raises(NoQuorum):
        await write(cluster, "a", key, "v1")
    assert not a.leads(p)
    cluster.net.heal()
    for _ in range(500):  # 5 s of virtual time, no call
        if a.leads(p):
            break
        await cluster.clock.sleep(0.01)
    assert a.leads(p)


async def test_eager_elections_lead_the_partitions_with_data_after_a_failover(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make(settings=ReplicationSettings())
    await cluster.start_all("abc")
    keys = [f"key{i}" for i in range(30)]
    for key in keys:
        await write(cluster, primary(cluster, key), key, f"v-{key}")
    victim = primary(cluster, keys[0])
    moved = [k for k in keys if primary(cluster, k) == victim]
    await cluster.kill(victim)
    cluster.update()
    # The survivors now primary for the victim's partitions elect themselves without
    # waiting for a call, adopting the data.
    want = {partition_for(KIND, k): primary(cluster, k) for k in moved}
    for _ in range(1000):
        if all(cluster.nodes[n].leads(p) for p, n in want.items()):
            break
        await cluster.clock.sleep(0.01)
    assert all(cluster.nodes[n].leads(p) for p, n in want.items())
    for key in moved:
        assert await read(cluster, key) == f"v-{key}"


async def test_durable_replicas_keep_everything_over_a_whole_set_restart(
        make: Callable[..., ReplicaCluster], tmp_path: Path) -> None:
    cluster = make(clock=SystemClock(), data_dir=tmp_path)
    await cluster.start_all("abc")
    keys = [f"key{i}" for i in range(40)]
    for key in keys:
        await write(cluster, primary(cluster, key), key, f"v-{key}")
    epochs = {n: cluster.nodes[n].leads(partition_for(KIND, keys[0])) for n in "abc"}
    for name in "abc":
        await cluster.kill(name)
    for name in "abc":
        await cluster.start(name)
    cluster.update()
    assert [await read(cluster, key) for key in keys] == [f"v-{key}" for key in keys]
    old = max(e for e in epochs.values() if e is not None)
    new = cluster.nodes[primary(cluster, keys[0])].leads(partition_for(KIND, keys[0]))
    assert new is not None and new > old  # epochs continue from disk


async def test_without_data_dir_a_whole_set_restart_starts_empty(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    await write(cluster, "a", "k", "v")
    for name in "abc":
        await cluster.kill(name)
        await cluster.start(name)
    cluster.update()
    assert await read(cluster, "k") is None


# ----------------------------------------------------------------- the handler

async def test_bad_batches_are_refused_and_change_nothing(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("a")
    a = cluster.nodes["a"]
    with pytest.raises(ProtocolError, match="no method 'nope'"):
        await a.handle("nope", b"")
    with pytest.raises(ProtocolError, match="malformed replication batch"):
        await a.handle("batch", b"\xc1garbage")
    with pytest.raises(ProtocolError, match="partition 50000"):
        await a.handle("batch", encode(Batch((Prepare(1, Epoch(9, "x#1"), ()),
                                              Prepare(50000, Epoch(9, "x#1"), ())))))
    assert a.store.partition(1) is None  # the valid first item was not applied either
    reply = await a.handle("batch", encode(Batch((Prepare(1, Epoch(9, "x#1"), ()),))))
    assert msgspec.msgpack.decode(reply)


async def test_batches_are_answered_on_the_reader_unless_a_transaction_must_finish(
        make: Callable[..., ReplicaCluster], tmp_path: Path) -> None:
    batch = encode(Batch((Prepare(1, Epoch(9, "x#1"), ()),)))
    memory = make()
    await memory.start_all("a")
    a = memory.nodes["a"]
    reply = a.handle_now("batch", batch)  # no data_dir: nothing to wait for
    assert reply is not None and msgspec.msgpack.decode(reply)
    assert a.store.promised(1) == Epoch(9, "x#1")
    with pytest.raises(ProtocolError, match="malformed replication batch"):
        a.handle_now("batch", b"\xc1garbage")
    durable = make(clock=SystemClock(), data_dir=tmp_path)
    await durable.start_all("a")
    d = durable.nodes["a"]
    assert d.handle_now("batch", batch) is None  # its reply waits for the transaction
    assert d.store.partition(1) is None  # ... and the task applies it, not the reader


async def test_a_malformed_stored_window_fails_the_load_of_its_key_only(
        make: Callable[..., ReplicaCluster]) -> None:
    # Replicas store a write's dedup window without parsing it (types.Entry): a window
    # that is not one shows when its key is loaded, as a typed error.
    cluster = make()
    await cluster.start_all("abc")
    a = cluster.nodes["a"]
    bad, good = keys_led_by("a", "abc", 2)
    await write(cluster, "a", good, "fine")
    p = partition_for(KIND, bad)
    await a.load(KIND, bad)
    epoch = a.leads(p)
    assert epoch is not None
    entry = Entry(epoch.counter, epoch.leader, 10**6, b"state", msgspec.Raw(b"\x05"))
    assert a.store.accept(Accept(p, epoch, (("a", "b", "c"),), ((KIND, bad, entry),))).ok
    with pytest.raises(ProtocolError, match="dedup window"):
        await a.load(KIND, bad)
    assert await read(cluster, good, "a") == "fine"


async def test_a_durable_replicator_loads_before_it_takes_a_table(tmp_path: Path) -> None:
    from phoenix_cluster._foundation.env import Env
    from phoenix_cluster._replication.service import Replicator
    from phoenix_cluster._replication.storage import SqliteStorage

    async def rpc(node: str, method: str, payload: bytes, timeout_s: float) -> bytes:
        raise AssertionError("not called")

    storage = SqliteStorage(tmp_path / "a.sqlite3", cluster="c", node="a")
    rep = Replicator("a", rpc, Env(clock=SimClock()), storage=storage)
    with pytest.raises(RuntimeError, match="start"):
        rep.update(table_of("a"), ["a"])
    await rep.start()
    rep.update(table_of("a"), ["a"])
    await rep.aclose()


async def test_closed_replicators_refuse_work(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("a")
    a = cluster.nodes["a"]
    await cluster.kill("a")
    with pytest.raises(NodeClosed):
        await a.load(KIND, "k")
    await a.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="already started"):
        await a.start()


async def test_telemetry_reports_elections_commits_and_fencing(
        make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    seen: list[tuple[tuple[str, ...], dict[str, object]]] = []
    bus = TelemetryBus()
    bus.attach("t", [events.REPLICATION_EPOCH_CHANGED, events.REPLICATION_COMMITTED,
                     events.REPLICATION_FENCED],
               lambda name, _m, meta: seen.append((name, dict(meta))))
    for rep in cluster.nodes.values():
        rep._bus = bus
    key = keys_led_by("a", "abc", 1)[0]
    await write(cluster, "a", key, "v")
    cluster.update(nodes="bc", view="bc")
    await write(cluster, primary(cluster, key, "bc"), key, "w")
    with pytest.raises((NotLeader, NoQuorum)):
        await cluster.nodes["a"].commit(KIND, key, rec("x"))
    names = [name for name, _ in seen]
    assert names.count(events.REPLICATION_EPOCH_CHANGED) == 2
    assert names.count(events.REPLICATION_COMMITTED) == 2
    fenced = [meta for name, meta in seen if name == events.REPLICATION_FENCED]
    assert fenced and fenced[0]["node"] == "a" and fenced[0]["reason"] == "fenced"


async def test_writes_to_one_partition_in_one_tick_share_an_accept(
        make: Callable[..., ReplicaCluster]) -> None:
    import asyncio

    cluster = make()
    await cluster.start_all("abc")
    a = cluster.nodes["a"]
    p = partition_for(KIND, keys_led_by("a", "abc", 1)[0])
    same = [k for k in (f"s{i}" for i in range(20000)) if partition_for(KIND, k) == p][:8]
    for key in same:
        await a.load(KIND, key)
    items = a.statistics().items_sent
    await asyncio.gather(*(a.commit(KIND, key, rec(key)) for key in same))
    assert a.statistics().commits == len(same)
    assert a.statistics().items_sent - items == 2  # one accept to each of b and c
    for node in "bc":
        assert all(cluster.nodes[node].store.get(p, KIND, k) for k in same)


async def test_writes_to_many_partitions_in_one_tick_share_a_batch_and_keep_own_verdicts(
        make: Callable[..., ReplicaCluster]) -> None:
    import asyncio

    cluster = make()
    await cluster.start_all("abc")
    a = cluster.nodes["a"]
    keys: dict[int, str] = {}
    for key in keys_led_by("a", "abc", 400):
        keys.setdefault(partition_for(KIND, key), key)
    spread = list(keys.values())[:8]  # eight keys in eight partitions
    for key in spread:
        await a.load(KIND, key)
    before = a.statistics()
    await asyncio.gather(*(a.commit(KIND, key, rec(key)) for key in spread))
    after = a.statistics()
    assert after.commits - before.commits == len(spread)
    assert after.batches_sent - before.batches_sent == 2  # one batch to each of b and c
    assert after.items_sent - before.items_sent == 2 * len(spread)  # an accept each
    for node in "bc":
        assert all(cluster.nodes[node].store.get(partition_for(KIND, k), KIND, k)
                   for k in spread)

    # One partition's replicas promised a newer leader: in the same batches, only its
    # write is fenced; the others commit.
    fenced_p = partition_for(KIND, spread[0])
    for node in "bc":
        assert cluster.nodes[node].store.prepare(Prepare(fenced_p, Epoch(99, "x#1"),
                                                         (("a", "b", "c"),))).ok
    results = await asyncio.gather(*(a.commit(KIND, key, rec("v2")) for key in spread),
                                   return_exceptions=True)
    assert isinstance(results[0], NotLeader) and not results[0].definite
    assert results[1:] == [None] * (len(spread) - 1)
    assert a.leads(fenced_p) is None
    assert all(a.leads(partition_for(KIND, k)) is not None for k in spread[1:])
    assert await read(cluster, spread[1], "a") == "v2"


async def test_flush_waits_for_async_writes(make: Callable[..., ReplicaCluster]) -> None:
    cluster = make()
    await cluster.start_all("abc")
    a = cluster.nodes["a"]
    keys = keys_led_by("a", "abc", 5)
    for key in keys:
        await a.load(KIND, key)
        await a.commit(KIND, key, rec("v"), "async")
    await a.flush()
    assert a.statistics().commits == len(keys)
    cluster.net.isolate("a", "bc")
    await a.commit(KIND, keys[0], rec("w"), "async")
    await a.flush()  # decided: failed, logged, and a stepped down
    assert a.statistics().commit_failures == 1
    assert a.leads(partition_for(KIND, keys[0])) is None


async def test_the_micro_benchmark_runs() -> None:
    from phoenix_cluster._replication.simulation import bench_commits

    result = await bench_commits(commits=400, concurrency=8)
    assert result.commits == 400 and result.per_second > 0 and result.batches > 0
