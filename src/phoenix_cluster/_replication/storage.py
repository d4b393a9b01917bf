"""Durable replica storage: one SQLite file per node in ``data_dir``.

Holds what :class:`~.replica.ReplicaStore` holds (per partition the promised epoch,
config and synced flag; per record its version, state and replies), so a whole-cluster
restart loses nothing committed (docs/design/replication.md, Storage). The in-memory
store stays the working copy; this file receives its journal of changes.

One connection, used only by one worker thread (stdlib ``sqlite3`` objects belong to the
thread that made them), so the event loop never blocks on disk. Writes are *group
committed*: changes that arrive while a transaction runs share the next one, and every
caller of :meth:`SqliteStorage.write` waits until its changes (and every change before
them) are committed. WAL mode; ``synchronous=FULL`` by default (each commit fsynced:
survives power loss) or ``NORMAL`` (fsync at checkpoints: survives a process kill, not
an OS crash).

A file that is not SQLite, lacks the magic, has another schema version, or belongs to
another cluster or node raises :class:`~phoenix_cluster.errors.StorageError`; a missing
file is created (atomically: built under a temporary name, then renamed), never an
existing bad one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from ..errors import StorageError
from .replica import Change, DropChange, MetaChange, PutChange
from .types import Config, Entry, Epoch, RecordKey, decode_replies

__all__ = ["MAGIC", "SCHEMA_VERSION", "LoadedPartition", "SqliteStorage", "storage_path"]

MAGIC = "phoenix-replication"
SCHEMA_VERSION = 1

_log = logging.getLogger("phoenix_cluster.replication")
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE partitions (
    partition INTEGER PRIMARY KEY,
    promised_counter INTEGER NOT NULL,
    promised_leader TEXT NOT NULL,
    marked_counter INTEGER NOT NULL,
    marked_leader TEXT NOT NULL,
    config BLOB NOT NULL,
    pending BLOB NOT NULL,
    synced INTEGER NOT NULL,
    amnesiac INTEGER NOT NULL
);
CREATE TABLE records (
    partition INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    counter INTEGER NOT NULL,
    leader TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state BLOB NOT NULL,
    replies BLOB NOT NULL,
    PRIMARY KEY (partition, kind, key)
) WITHOUT ROWID;
"""

_config_decoder = msgspec.msgpack.Decoder(Config)
_encode = msgspec.msgpack.encode


def storage_path(data_dir: str | os.PathLike[str], node: str) -> Path:
    """Where node ``node`` keeps its replica store inside ``data_dir``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node)
    return Path(data_dir) / f"replication-{safe}.sqlite3"


@dataclass(frozen=True, slots=True)
class LoadedPartition:
    """One partition as read back from the file."""

    meta: MetaChange
    records: dict[RecordKey, Entry]


class SqliteStorage:
    """The durable copy of one node's replica store.

    Args:
        path: the SQLite file (see :func:`storage_path`).
        cluster: the cluster's identity; a file written for another cluster is refused.
        node: this node's name; a file written by another node is refused.
        fsync: ``"full"`` (default; fsync per commit) or ``"normal"`` (fsync at WAL
            checkpoints: a process kill loses nothing, an OS crash may lose the last
            commits of this node).
    """

    def __init__(self, path: str | os.PathLike[str], *, cluster: str, node: str,
                 fsync: Literal["full", "normal"] = "full") -> None:
        if fsync not in ("full", "normal"):
            raise ValueError(f"fsync must be 'full' or 'normal', got {fsync!r}")
        self.path = Path(path)
        self.created = False
        """:meth:`open` found no file and made a new one (set by ``open``)."""
        self.cluster = cluster
        self.node = node
        self.fsync = fsync
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phx-sqlite")
        self._db: sqlite3.Connection | None = None
        self._pending: list[Change] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.transactions = 0
        self.changes_written = 0

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> list[LoadedPartition]:
        """Open (or create) the file and read everything in it.

        Raises:
            StorageError: the file is unusable (not SQLite, corrupt, foreign).
        """
        return await self._run(self._open_sync)

    async def aclose(self) -> None:
        """Write what is pending, then close the file and stop the worker thread."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._db is not None:
            await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    # ----------------------------------------------------------------- writing

    async def write(self, changes: list[Change]) -> None:
        """Make ``changes``, and every change handed in before them, durable.

        An empty list is a barrier: it returns once earlier changes are committed.

        Raises:
            StorageError: the transaction failed (disk full, I/O error).
        """
        await self.submit(changes)

    def submit(self, changes: list[Change]) -> asyncio.Future[None]:
        """Like :meth:`write`, as a future (no task per caller)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.extend(changes)
        self._waiters.append(future)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self._waiters:
                changes, self._pending = self._pending, []
                waiters, self._waiters = self._waiters, []
                try:
                    if changes:
                        await self._run(self._write_sync, changes)
                except StorageError as exc:
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                    continue
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
        finally:
            self._flusher = None

    async def _run(self, fn: Any, *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        result: _T = await loop.run_in_executor(self._executor, fn, *args)
        return result

    # ----------------------------------------------------------------- worker thread

    def _open_sync(self) -> list[LoadedPartition]:
        if not self.path.exists():
            self._create_sync()
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open replica store {self.path}: {exc}") from exc
        try:
            self._check_sync(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.fsync.upper()}")
            loaded = self._load_sync(db)
        except sqlite3.Error as exc:
            db.close()
            raise StorageError(
                f"replica store {self.path} is not a readable SQLite database: {exc}"
            ) from exc
        except BaseException:
            db.close()
            raise
        self._db = db
        return loaded

    def _create_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.executescript(_SCHEMA)
            db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("magic", MAGIC), ("schema", str(SCHEMA_VERSION)),
                ("cluster", self.cluster), ("node", self.node),
            ])
        finally:
            db.close()
        os.replace(tmp, self.path)
        self.created = True
        _log.info("created replica store %s for node %s", self.path, self.node)

    def _check_sync(self, db: sqlite3.Connection) -> None:
        where = f"replica store {self.path}"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            raise StorageError(f"{where} is not a Phoenix replica store: no meta table "
                               f"(tables: {', '.join(sorted(tables)) or 'none'})")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        expected = {"magic": MAGIC, "schema": str(SCHEMA_VERSION), "cluster": self.cluster,
                    "node": self.node}
        for name, want in expected.items():
            got = meta.get(name)
            if got != want:
                raise StorageError(f"{where}: {name} is {got!r}, expected {want!r}"
                                   + (" (a file of another cluster or node?)"
                                      if name in ("cluster", "node") else ""))
        if not {"partitions", "records"} <= tables:
            raise StorageError(f"{where} lacks the partitions or records table")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StorageError(f"{where} failed SQLite's quick_check: {check!r}")

    def _load_sync(self, db: sqlite3.Connection) -> list[LoadedPartition]:
        where = f"replica store {self.path}"
        parts: dict[int, MetaChange] = {}
        try:
            for row in db.execute(
                    "SELECT partition, promised_counter, promised_leader, marked_counter, "
                    "marked_leader, config, pending, synced, amnesiac FROM partitions"):
                p, pc, pl, mc, ml, config, pending, synced, amnesiac = row
                parts[p] = MetaChange(p, Epoch(pc, pl), Epoch(mc, ml),
                                      _config_decoder.decode(config),
                                      _config_decoder.decode(pending), bool(synced),
                                      bool(amnesiac))
            records: dict[int, dict[RecordKey, Entry]] = {}
            for p, kind, key, counter, leader, seq, state, replies in db.execute(
                    "SELECT partition, kind, key, counter, leader, seq, state, replies "
                    "FROM records"):
                window = msgspec.Raw(bytes(replies))
                decode_replies(window)  # a corrupt window is refused here, not at a load
                records.setdefault(p, {})[(kind, key)] = Entry(
                    counter, leader, seq, bytes(state), window)
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            raise StorageError(f"{where} holds a corrupt row: {exc}") from exc
        orphans = set(records) - set(parts)
        if orphans:
            raise StorageError(f"{where} holds records of partitions without a promise "
                               f"row: {sorted(orphans)[:5]}")
        return [LoadedPartition(meta, records.get(p, {})) for p, meta in sorted(parts.items())]

    def _write_sync(self, changes: list[Change]) -> None:
        db = self._db
        if db is None:
            raise StorageError(f"replica store {self.path} is not open")
        try:
            db.execute("BEGIN")
            for change in changes:
                if isinstance(change, PutChange):
                    e = change.entry
                    db.execute(
                        "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (change.partition, change.kind, change.key, e.counter, e.leader,
                         e.seq, e.state, bytes(e.replies)))
                elif isinstance(change, MetaChange):
                    db.execute(
                        "INSERT OR REPLACE INTO partitions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (change.partition, change.promised.counter, change.promised.leader,
                         change.marked.counter, change.marked.leader, _encode(change.config),
                         _encode(change.pending), int(change.synced), int(change.amnesiac)))
                elif isinstance(change, DropChange):
                    db.execute("DELETE FROM records WHERE partition = ?", (change.partition,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StorageError(f"writing replica store {self.path} failed: {exc}") from exc
        self.transactions += 1
        self.changes_written += len(changes)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __repr__(self) -> str:
        return (f"<SqliteStorage {self.path} [{self.transactions} transactions, "
                f"fsync={self.fsync}]>")
