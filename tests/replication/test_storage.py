"""Durable replica storage: round trips, group commit, and bad files refused loudly."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Literal

import pytest

from phoenix_cluster._replication.replica import DropChange, MetaChange, PutChange
from phoenix_cluster._replication.storage import LoadedPartition, SqliteStorage, storage_path
from phoenix_cluster._replication.types import Entry, Epoch, Record, encode_replies
from phoenix_cluster.errors import StorageError

ABC = (("a", "b", "c"),)
E1, E2 = Epoch(1, "a#1"), Epoch(2, "b#7")


def meta(p: int, promised: Epoch = E1, synced: bool = True) -> MetaChange:
    return MetaChange(p, promised, E1, ABC, (("b", "c", "d"),), synced)


def put(p: int, key: str, seq: int, state: bytes = b"s") -> PutChange:
    return PutChange(p, "kind", key, Entry(1, "a#1", seq, state, encode_replies(((7, b"reply"),))))


async def open_store(path: Path, *, fsync: Literal["full", "normal"] = "full"
                     ) -> tuple[SqliteStorage, list[LoadedPartition]]:
    storage = SqliteStorage(path, cluster="c1", node="a", fsync=fsync)
    return storage, await storage.open()


async def test_everything_written_is_read_back(tmp_path: Path) -> None:
    path = storage_path(tmp_path / "data", "node/a")
    assert path.name == "replication-node_a.sqlite3"
    storage, loaded = await open_store(path)
    assert loaded == [] and path.exists()
    await storage.write([meta(3), put(3, "k1", 1), put(3, "k2", 1), put(3, "k1", 2, b"new"),
                         meta(9, E2, synced=False), put(9, "x", 1), DropChange(9)])
    await storage.aclose()
    storage, loaded = await open_store(path)
    assert [lp.meta for lp in loaded] == [meta(3), meta(9, E2, synced=False)]
    records = loaded[0].records
    assert records[("kind", "k1")].record == Record(b"new", ((7, b"reply"),))
    assert records[("kind", "k1")].version == (1, "a#1", 2)
    assert set(records) == {("kind", "k1"), ("kind", "k2")}
    assert loaded[1].records == {}
    await storage.aclose()


async def test_concurrent_writes_share_transactions(tmp_path: Path) -> None:
    storage, _ = await open_store(tmp_path / "s.sqlite3", fsync="normal")
    await storage.write([meta(1)])
    before = storage.transactions
    await asyncio.gather(*(storage.write([put(1, f"k{i}", 1)]) for i in range(200)),
                         storage.write([]))
    assert storage.transactions - before < 200  # grouped
    assert storage.changes_written == 201
    assert "fsync=normal" in repr(storage)
    await storage.aclose()


async def test_a_write_failure_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    storage, _ = await open_store(path)
    _sqlite(path, "DROP TABLE records;")  # the disk went bad under us
    with pytest.raises(StorageError, match=r"writing replica store .* failed: no such table"):
        await storage.write([put(1, "k", 1)])
    await storage.write([meta(1)])  # the store still takes other changes
    await storage.aclose()
    storage2 = SqliteStorage(tmp_path / "t.sqlite3", cluster="c1", node="a")
    with pytest.raises(StorageError, match="not open"):
        await storage2.write([meta(1)])  # never opened
    await storage2.aclose()


def _sqlite(path: Path, script: str) -> None:
    db = sqlite3.connect(path)
    db.executescript(script)
    db.commit()
    db.close()


async def _refused(path: Path, match: str, **kw: str) -> None:
    storage = SqliteStorage(path, cluster=kw.get("cluster", "c1"), node=kw.get("node", "a"))
    with pytest.raises(StorageError, match=match) as info:
        await storage.open()
    assert str(path) in str(info.value)
    await storage.aclose()


async def test_garbage_and_foreign_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database at all" * 100)
    await _refused(garbage, "not a readable SQLite database|file is not a database")

    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")  # truncated: never treated as a fresh store
    await _refused(empty, "no meta table")

    other_app = tmp_path / "other.sqlite3"
    _sqlite(other_app, "CREATE TABLE users (id INTEGER);")
    await _refused(other_app, "no meta table .tables: users")

    good = tmp_path / "good.sqlite3"
    storage, _ = await open_store(good)
    await storage.aclose()
    await _refused(good, "cluster is 'c1', expected 'c2'", cluster="c2")
    await _refused(good, "node is 'a', expected 'b'", node="b")

    _sqlite(good, "UPDATE meta SET value = '99' WHERE key = 'schema';")
    await _refused(good, "schema is '99', expected '1'")
    _sqlite(good, "UPDATE meta SET value = 'nope' WHERE key = 'magic';")
    await _refused(good, "magic is 'nope'")


async def test_corrupt_rows_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.sqlite3"
    storage, _ = await open_store(path)
    await storage.write([meta(1), put(1, "k", 1)])
    await storage.aclose()
    _sqlite(path, "UPDATE partitions SET config = x'c1c1c1';")
    await _refused(path, "corrupt row")

    path3 = tmp_path / "window.sqlite3"  # a dedup window is checked on load, not on use
    storage, _ = await open_store(path3)
    await storage.write([meta(1), put(1, "k", 1)])
    await storage.aclose()
    _sqlite(path3, "UPDATE records SET replies = x'91a1';")
    await _refused(path3, "corrupt row")

    path2 = tmp_path / "orphans.sqlite3"
    storage, _ = await open_store(path2)
    await storage.write([meta(1), put(1, "k", 1)])
    await storage.aclose()
    _sqlite(path2, "DELETE FROM partitions;")
    await _refused(path2, "without a promise row")


def test_fsync_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="fsync"):
        SqliteStorage("x", cluster="c", node="a", fsync="sometimes")  # type: ignore[arg-type]
