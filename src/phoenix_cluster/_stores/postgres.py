"""A state store in PostgreSQL (``postgresql://user:password@host:port/database``).

For state that must outlive the cluster in the database its users already run. Needs
the ``[postgres]`` extra (asyncpg), imported only when such a store is first used, so
the core install stays free of it.

Each write is one transaction over a pooled connection. The outcome of a failure is
reported exactly (``StoreUnavailable.definite``): a connection that cannot be had, or a
statement that fails, leaves nothing written (PostgreSQL rolls back the transaction of
a connection that breaks before its ``COMMIT``); only a connection lost while the
``COMMIT`` itself is in flight makes the outcome unknown. The pool reconnects by itself
once the server is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .._foundation.extras import require_extra
from .._foundation.settings import redact_url
from ..errors import StoreUnavailable
from .base import StoredEvents, StoredState, write_conflict

__all__ = ["PostgresStore"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS phx_state (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version BIGINT NOT NULL,
    state_version INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS phx_events (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (kind, key, seq)
);
"""

# Any fixed number: serializes concurrent schema creation by several nodes.
_SCHEMA_LOCK = 0x70686F656E6978


class _Conflict(Exception):
    """A conditional write found another version (turned into ``WriteConflict``)."""


class PostgresStore:
    """A :class:`~phoenix_cluster.StateStore` in a PostgreSQL database.

    Args:
        url: ``postgresql://user:password@host:port/database`` (any libpq-style URL
            asyncpg accepts). The password never appears in a repr or a log line.
        max_connections: the pool's size.
        timeout_s: how long connecting, and each statement, may take before the
            operation fails with ``StoreUnavailable``.

    The tables (``phx_state``, ``phx_events``) are created on first use if missing.
    """

    def __init__(self, url: str, *, max_connections: int = 10, timeout_s: float = 5.0) -> None:
        self.url = url
        self._max = max_connections
        self._timeout_s = timeout_s
        self._pool: Any = None  # an asyncpg.Pool (asyncpg ships no type information)
        self._starting: asyncio.Lock | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

    # ----------------------------------------------------------------- connections

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._pool is None:
                require_extra("postgres", "a postgresql:// state store")
                import asyncpg  # type: ignore[import-untyped]

                pool = await asyncpg.create_pool(self.url, min_size=0, max_size=self._max,
                                                 timeout=self._timeout_s,
                                                 command_timeout=self._timeout_s)
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                        await conn.execute(_SCHEMA)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
            return self._pool

    async def _run(self, fn: Callable[[Any], Awaitable[_T]], *, writes: bool) -> _T:
        """Run ``fn(connection)`` in a transaction; map every failure to a typed error
        that says whether anything may have been written."""
        if self._closed:
            raise StoreUnavailable(f"{self!r} is closed", definite=True)
        committing = False
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self._timeout_s) as conn:
                tr = conn.transaction()
                await tr.start()
                try:
                    out = await fn(conn)
                except BaseException:
                    if not conn.is_closed():
                        await tr.rollback()
                    raise
                committing = writes
                await tr.commit()
                return out
        except _Conflict:
            raise
        except Exception as exc:
            if _is_unique_violation(exc):
                raise _Conflict() from exc
            what = "the commit was in flight; it may have been written" if committing else (
                "nothing was written" if writes else "nothing was read")
            raise StoreUnavailable(f"{self!r}: {type(exc).__name__}: {exc} ({what})",
                                   definite=not committing) from exc

    # ----------------------------------------------------------------- the protocol

    async def read(self, kind: str, key: str) -> StoredState | None:
        async def read(conn: Any) -> StoredState | None:
            row = await conn.fetchrow("SELECT version, state_version, data FROM phx_state "
                                      "WHERE kind = $1 AND key = $2", kind, key)
            return None if row is None else StoredState(row[0], row[1], bytes(row[2]))

        return await self._run(read, writes=False)

    async def write(self, kind: str, key: str, data: bytes, *, state_version: int,
                    expected: int) -> int:
        async def write(conn: Any) -> None:
            if expected == 0:
                status = await conn.execute(
                    "INSERT INTO phx_state VALUES ($1, $2, 1, $3, $4) "
                    "ON CONFLICT (kind, key) DO NOTHING", kind, key, state_version, data)
            else:
                status = await conn.execute(
                    "UPDATE phx_state SET version = $1, state_version = $2, data = $3 "
                    "WHERE kind = $4 AND key = $5 AND version = $6",
                    expected + 1, state_version, data, kind, key, expected)
            if not status.endswith(" 1"):
                raise _Conflict()

        try:
            await self._run(write, writes=True)
        except _Conflict:
            raise write_conflict(kind, key, expected) from None
        return expected + 1

    async def read_events(self, kind: str, key: str) -> StoredEvents:
        async def read(conn: Any) -> StoredEvents:
            row = await conn.fetchrow("SELECT version, state_version, data FROM phx_state "
                                      "WHERE kind = $1 AND key = $2", kind, key)
            snapshot = None if row is None else StoredState(row[0], row[1], bytes(row[2]))
            after = 0 if snapshot is None else snapshot.version
            rows = await conn.fetch("SELECT data FROM phx_events WHERE kind = $1 AND key = $2 "
                                    "AND seq > $3 ORDER BY seq", kind, key, after)
            return StoredEvents(snapshot, tuple(bytes(r[0]) for r in rows))

        return await self._run(read, writes=False)

    async def append(self, kind: str, key: str, events: Sequence[bytes], *, expected: int,
                     snapshot: bytes | None = None, state_version: int = 1) -> int:
        last = expected + len(events)

        async def append(conn: Any) -> None:
            await conn.executemany("INSERT INTO phx_events VALUES ($1, $2, $3, $4)",
                                   [(kind, key, expected + 1 + i, e)
                                    for i, e in enumerate(events)])
            if snapshot is not None:
                await conn.execute(
                    "INSERT INTO phx_state VALUES ($1, $2, $3, $4, $5) "
                    "ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, "
                    "state_version = excluded.state_version, data = excluded.data "
                    "WHERE phx_state.version < excluded.version",
                    kind, key, last, state_version, snapshot)

        try:
            await self._run(append, writes=True)
        except _Conflict:
            raise write_conflict(kind, key, expected) from None
        return last

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._timeout_s)
            except (TimeoutError, Exception):
                pool.terminate()


def _is_unique_violation(exc: BaseException) -> bool:
    return type(exc).__name__ == "UniqueViolationError"

