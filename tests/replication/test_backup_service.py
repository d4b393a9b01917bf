"""The ``$backup`` node service on replicators in one process (``_replication/export.py``):
export pages, restore through the quorum path, refusals that write nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from phoenix_cluster._replication.export import (
    BackupService,
    ExportPage,
    ExportRequest,
    HeldReply,
    KindsReply,
    KindsRequest,
    KindStatus,
    RestoredRecord,
    RestoreReply,
    RestoreRequest,
)
from phoenix_cluster._replication.service import ReplicationSettings, partition_for
from phoenix_cluster._replication.simulation import ReplicaCluster, SimClock, table_of
from phoenix_cluster._replication.types import Record
from phoenix_cluster.errors import NoQuorum, NotLeader, ProtocolError

KIND = "counter"
LAZY = ReplicationSettings(eager=False)


STATUS: dict[str, KindStatus] = {"counter": "ok", "cache": "unreplicated"}


def kinds(name: str) -> KindStatus:
    return STATUS.get(name, "missing")


@pytest.fixture
async def source() -> AsyncIterator[ReplicaCluster]:
    cluster = ReplicaCluster(SimClock(), settings=LAZY)
    await cluster.start_all("abc")
    yield cluster
    await cluster.aclose()


def service(cluster: ReplicaCluster, name: str, restored: list[int] | None = None
            ) -> BackupService:
    sink = [] if restored is None else restored
    return BackupService(cluster.nodes[name], kinds, sink.append)


async def call(svc: BackupService, method: str, request: msgspec.Struct,
               reply: type[msgspec.Struct]) -> object:
    return msgspec.msgpack.decode(await svc.handle(method, msgspec.msgpack.encode(request)),
                                  type=reply)


def partitions_of(owner: str, members: str) -> list[int]:
    table = table_of(members)
    return [p for p in range(len(table.replicas)) if table.replicas[p][0] == owner]


async def test_export_pages_through_every_committed_record_once(
        source: ReplicaCluster) -> None:
    a = source.nodes["a"]
    mine = set(partitions_of("a", "abc"))
    written: dict[str, bytes] = {}
    i = 0
    while len(written) < 60:
        key = f"k{i}"
        i += 1
        if partition_for(KIND, key) in mine:
            await a.load(KIND, key)
            state = f"{key}-state-{'x' * 40}".encode()
            await a.commit(KIND, key, Record(state))
            written[key] = state
    svc = service(source, "a")
    todo = sorted({partition_for(KIND, k) for k in written})
    got: list[tuple[int, str, bytes]] = []
    after = None
    pages = 0
    while todo:
        page = await call(svc, "export", ExportRequest(tuple(todo), after, max_bytes=300),
                          ExportPage)
        assert isinstance(page, ExportPage)
        pages += 1
        got += [(r.partition, r.key, r.state) for r in page.records]
        todo, after = todo[page.done:], page.after
    assert pages > 5, "300-byte pages split the records"
    assert sorted(k for _, k, _ in got) == sorted(written), "each record exactly once"
    assert {k: s for _, k, s in got} == written
    assert all(p == partition_for(KIND, k) for p, k, _ in got)


async def test_export_of_a_partition_another_member_is_primary_of_is_refused(
        source: ReplicaCluster) -> None:
    theirs = partitions_of("b", "abc")[0]
    with pytest.raises(NotLeader) as caught:
        await service(source, "a").handle("export", msgspec.msgpack.encode(
            ExportRequest((theirs,))))
    assert caught.value.definite


async def test_restore_commits_on_a_majority_of_a_cluster_of_another_size(
        source: ReplicaCluster) -> None:
    target = ReplicaCluster(SimClock(), settings=LAZY)
    await target.start_all("xy")
    try:
        records = [RestoredRecord(KIND, f"r{i}", f"state {i}".encode()) for i in range(40)]
        table = table_of("xy")
        restored: list[int] = []
        for owner in "xy":
            batch = tuple(r for r in records
                          if table.replicas[partition_for(KIND, r.key)][0] == owner)
            reply = await call(service(target, owner, restored), "restore",
                               RestoreRequest(batch), RestoreReply)
            assert reply == RestoreReply(len(batch))
        assert sorted(restored) == sorted({partition_for(KIND, r.key) for r in records})
        for r in records:
            p = partition_for(KIND, r.key)
            # Both replicas stored it (a majority of two), under a version of the leader.
            for name in "xy":
                entry = target.nodes[name].store.get(p, KIND, r.key)
                assert entry is not None and entry.state == r.state, (name, r.key)
    finally:
        await target.aclose()


async def test_a_bad_restore_request_writes_nothing(source: ReplicaCluster) -> None:
    a = source.nodes["a"]
    mine = partitions_of("a", "abc")
    good = next(f"g{i}" for i in range(10_000) if partition_for(KIND, f"g{i}") in mine)
    theirs = next(f"t{i}" for i in range(10_000) if partition_for(KIND, f"t{i}") not in mine)
    unknown = next(f"u{i}" for i in range(10_000) if partition_for("ghost", f"u{i}") in mine)
    svc = service(source, "a")
    bad = [
        (RestoreRequest((RestoredRecord(KIND, good, b"1"), RestoredRecord(KIND, theirs, b"2"))),
         NotLeader),
        (RestoreRequest((RestoredRecord(KIND, good, b"1"),
                         RestoredRecord("ghost", unknown, b"2"))), ProtocolError),
    ]
    for request, error in bad:
        with pytest.raises(error):
            await svc.handle("restore", msgspec.msgpack.encode(request))
    with pytest.raises(ProtocolError):
        await svc.handle("restore", b"\xc1 not msgpack")
    with pytest.raises(ProtocolError):
        await svc.handle("drop_everything", b"")
    assert a.store.get(partition_for(KIND, good), KIND, good) is None


async def test_kinds_names_the_missing_and_the_unreplicated(source: ReplicaCluster) -> None:
    reply = await call(service(source, "a"), "kinds",
                       KindsRequest(("counter", "ghost", "cache", "alien")), KindsReply)
    assert reply == KindsReply(missing=("alien", "ghost"), unreplicated=("cache",))


async def test_held_counts_the_records_of_the_kinds_asked_on_every_replica(
        source: ReplicaCluster) -> None:
    a = source.nodes["a"]
    mine = set(partitions_of("a", "abc"))
    keys = [k for k in (f"h{i}" for i in range(200)) if partition_for(KIND, k) in mine][:5]
    for key in keys:
        await a.load(KIND, key)
        await a.commit(KIND, key, Record(b"x"))
    held = {}
    for name in "abc":
        reply = await call(service(source, name), "held", KindsRequest((KIND, "ghost")),
                           HeldReply)
        assert isinstance(reply, HeldReply)
        assert set(reply.records) <= {KIND}
        held[name] = reply.records.get(KIND, 0)
    # The leader holds each record, and a majority of each replica set (a and b or c).
    assert held["a"] == 5
    assert held["b"] + held["c"] >= 5


async def test_a_write_not_on_a_majority_is_never_exported(source: ReplicaCluster) -> None:
    a = source.nodes["a"]
    mine = set(partitions_of("a", "abc"))
    key = next(f"w{i}" for i in range(10_000) if partition_for(KIND, f"w{i}") in mine)
    p = partition_for(KIND, key)
    await a.load(KIND, key)
    await a.commit(KIND, key, Record(b"committed"))
    source.net.isolate("a", "bc")
    # Stored on the leader alone, on its way to replicas it cannot reach.
    await a.commit(KIND, key, Record(b"only on the leader"), "async")
    with pytest.raises((NoQuorum, NotLeader)):
        await service(source, "a").handle("export", msgspec.msgpack.encode(
            ExportRequest((p,))))
    source.net.heal()
    # b, the next primary once a is gone, leads the partition with the committed state.
    source.update(view="bc")
    b = source.nodes["b"] if table_of("bc").replicas[p][0] == "b" else source.nodes["c"]
    page = await call(BackupService(b, kinds, lambda _: None), "export",
                      ExportRequest((p,)), ExportPage)
    assert isinstance(page, ExportPage)
    assert [(r.key, r.state) for r in page.records] == [(key, b"committed")]
