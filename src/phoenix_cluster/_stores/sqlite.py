"""A state store in one SQLite file (``sqlite:///path/to/file.db``).

Embedded and dependency-free: the default for state that must survive a restart of the
whole cluster on one machine, or of nodes that share a file system. Several processes
may share the file (WAL mode, writes in ``BEGIN IMMEDIATE`` transactions, a busy
timeout); conditional writes keep one writer per agent across all of them.

One connection per store, used only by its worker thread (stdlib ``sqlite3`` objects
belong to the thread that made them), so the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..errors import StoreUnavailable
from .base import StoredEvents, StoredState, write_conflict

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS phx_state (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    state_version INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS phx_events (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (kind, key, seq)
) WITHOUT ROWID;
"""


class SqliteStore:
    """A :class:`~phoenix_cluster.StateStore` in the SQLite file ``path`` (created with
    its directory if missing).

    Args:
        path: the database file.
        synchronous: ``"FULL"`` (default: every commit fsynced) or ``"NORMAL"``.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phx-sqlite-store")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # ----------------------------------------------------------------- worker thread

    async def _run(self, fn: Callable[[sqlite3.Connection], _T], *, writes: bool) -> _T:
        if self._closed:
            raise StoreUnavailable(f"{self!r} is closed", definite=True)

        def work() -> _T:
            db = self._connect()
            if not writes:
                return fn(db)
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return out

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.Error, OSError) as exc:
            # SQLite commits atomically: a failed COMMIT left nothing behind.
            raise StoreUnavailable(f"{self!r}: {exc}", definite=True) from exc

    def _connect(self) -> sqlite3.Connection:
        db = self._db
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0,
                                 check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self._synchronous}")
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
        return db

    # ----------------------------------------------------------------- the protocol

    async def read(self, kind: str, key: str) -> StoredState | None:
        def read(db: sqlite3.Connection) -> StoredState | None:
            row = db.execute("SELECT version, state_version, data FROM phx_state "
                             "WHERE kind = ? AND key = ?", (kind, key)).fetchone()
            return None if row is None else StoredState(row[0], row[1], bytes(row[2]))

        return await self._run(read, writes=False)

    async def write(self, kind: str, key: str, data: bytes, *, state_version: int,
                    expected: int) -> int:
        def write(db: sqlite3.Connection) -> bool:
            if expected == 0:
                cur = db.execute("INSERT OR IGNORE INTO phx_state VALUES (?, ?, 1, ?, ?)",
                                 (kind, key, state_version, data))
            else:
                cur = db.execute("UPDATE phx_state SET version = ?, state_version = ?, "
                                 "data = ? WHERE kind = ? AND key = ? AND version = ?",
                                 (expected + 1, state_version, data, kind, key, expected))
            return cur.rowcount == 1

        if not await self._run(write, writes=True):
            raise write_conflict(kind, key, expected)
        return expected + 1

    async def read_events(self, kind: str, key: str) -> StoredEvents:
        def read(db: sqlite3.Connection) -> StoredEvents:
            db.execute("BEGIN")  # one snapshot of both tables
            try:
                row = db.execute("SELECT version, state_version, data FROM phx_state "
                                 "WHERE kind = ? AND key = ?", (kind, key)).fetchone()
                snapshot = None if row is None else StoredState(row[0], row[1], bytes(row[2]))
                after = 0 if snapshot is None else snapshot.version
                events = tuple(bytes(r[0]) for r in db.execute(
                    "SELECT data FROM phx_events WHERE kind = ? AND key = ? AND seq > ? "
                    "ORDER BY seq", (kind, key, after)))
            finally:
                db.execute("COMMIT")
            return StoredEvents(snapshot, events)

        return await self._run(read, writes=False)

    async def append(self, kind: str, key: str, events: Sequence[bytes], *, expected: int,
                     snapshot: bytes | None = None, state_version: int = 1) -> int:
        last = expected + len(events)

        def append(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO phx_events VALUES (?, ?, ?, ?)",
                           [(kind, key, expected + 1 + i, e) for i, e in enumerate(events)])
            if snapshot is not None:
                db.execute("INSERT INTO phx_state VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, "
                           "state_version = excluded.state_version, data = excluded.data "
                           "WHERE phx_state.version < excluded.version",
                           (kind, key, last, state_version, snapshot))

        try:
            await self._run(append, writes=True)
        except sqlite3.IntegrityError:
            raise write_conflict(kind, key, expected) from None
        return last

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)

