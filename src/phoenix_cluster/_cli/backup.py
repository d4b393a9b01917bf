"""``phx backup``: every agent's committed state from a running cluster, into a file.

The partitions are read on their leaders (the ``$backup.export`` service,
``_replication/export.py``), each member's share in pages, all members at once, and the
records are written to the file as they arrive (``backup_file.py``). A partition whose
leader changes on the way is read again from its new primary, after the last key
already written.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import click

from .._foundation.extras import require_extra
from .._replication.export import CountsReply, CountsRequest, ExportPage, ExportRequest
from .._ring.partitions import PARTITIONS
from ..errors import ConfigError, ProtocolError
from .backup_client import (
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_USAGE,
    RETRYABLE,
    Cluster,
    Progress,
    connect,
    count,
    fail,
    size,
)
from .backup_file import BackupWriter

__all__ = ["backup"]

CHUNK_PARTITIONS = 64
"""Partitions per export request (their leaders confirm them together)."""
PAGE_BYTES = 1 << 20
RETRY_S = 0.5


class _Export:
    """One backup in progress: what is written, and where each partition stands."""

    def __init__(self, cluster: Cluster, writer: BackupWriter, progress: Progress) -> None:
        self.cluster = cluster
        self.writer = writer
        self.progress = progress
        self.cursors: dict[int, tuple[str, str]] = {}
        """Partitions read in part: the last ``(kind, key)`` written."""
        self.done = 0
        self.error: BaseException | None = None
        self.counts: tuple[int, ...] = (3,)
        """Replica counts to read (``_replication/groups.py``)."""

    async def run(self, timeout_s: float) -> None:
        """Read every partition, asking each member for its share, until all are done.

        Raises:
            PhoenixError, TimeoutError, OSError: for ``timeout_s``, no partition left
                could be read (the last error).
        """
        self.counts = await self._counts(timeout_s)
        pending = list(range(PARTITIONS))
        first_failure: float | None = None
        loop = asyncio.get_running_loop()
        while pending:
            before = (self.done, self.writer.records)
            table = self.cluster.table()
            shares: dict[str, list[int]] = {}
            for p in pending:
                shares.setdefault(table.replicas[p][0], []).append(p)
            left = await asyncio.gather(*(self._read(member, share)
                                          for member, share in shares.items()))
            pending = sorted(p for share in left for p in share)
            if pending:
                now = loop.time()
                if first_failure is None or (self.done, self.writer.records) != before:
                    first_failure = now  # failing since this round
                if now - first_failure > timeout_s:
                    assert self.error is not None
                    raise self.error
                await asyncio.sleep(RETRY_S)  # a leader is changing: let it settle

    async def _counts(self, timeout_s: float) -> tuple[int, ...]:
        """Every replica count some member holds records of: a kind's records are on a
        majority of its group, so the union over the members misses none. A member that
        does not answer is asked again (it may be the only one answering for a count)
        while membership has not noticed it died, for up to ``timeout_s``.

        Raises:
            PhoenixError, TimeoutError, OSError: for ``timeout_s``, some member did not
                answer (the last error).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            counts = {3}
            try:
                for member in self.cluster.members():
                    try:
                        reply = await self.cluster.call(member, "counts", CountsRequest(),
                                                        CountsReply)
                    except ProtocolError:
                        continue  # a member of an older release: the default count only
                    counts.update(reply.counts)
            except RETRYABLE:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(RETRY_S)
                continue
            return tuple(sorted(counts))

    async def _read(self, member: str, share: list[int]) -> list[int]:
        """Read ``share`` from ``member``; the partitions left when a call failed."""
        chunks = self._chunks(share)
        for i, chunk in enumerate(chunks):
            while chunk:
                request = ExportRequest(tuple(chunk), self.cursors.get(chunk[0]), PAGE_BYTES,
                                        self.counts)
                try:
                    page = await self.cluster.call(member, "export", request, ExportPage)
                except RETRYABLE as exc:
                    self.error = exc
                    return [p for rest in [chunk, *chunks[i + 1:]] for p in rest]
                chunk = self._write(chunk, page)
        return []

    def _chunks(self, share: list[int]) -> list[list[int]]:
        # A partition read in part starts a request of its own: only the first partition
        # of a request resumes after a key.
        chunks: list[list[int]] = []
        for p in share:
            if not chunks or len(chunks[-1]) >= CHUNK_PARTITIONS or p in self.cursors:
                chunks.append([])
            chunks[-1].append(p)
        return chunks

    def _write(self, chunk: list[int], page: ExportPage) -> list[int]:
        writer = self.writer
        for record in page.records:
            writer.add(record.kind, record.key, record.state)
        for p in chunk[:page.done]:
            self.cursors.pop(p, None)
        self.done += page.done
        rest = chunk[page.done:]
        if page.after is not None and rest:
            self.cursors[rest[0]] = page.after
        self.progress.maybe(f"{self.done:,}/{PARTITIONS:,} partitions, {writer.records:,} "
                            f"agents, {size(writer.bytes_written)}")
        return rest


async def _backup(seed: str, out: str, cookie_file: str | None, timeout_s: float) -> str:
    progress = Progress("backup")
    async with connect(seed, cookie_file, timeout_s) as cluster:
        with BackupWriter(out, source=seed) as writer:
            await _Export(cluster, writer, progress).run(timeout_s)
            writer.finish()
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(writer.kinds.items()))
    return (f"{count(writer.records, 'agent')} of {count(len(writer.kinds), 'kind')}"
            f"{f' ({kinds})' if kinds else ''}, {size(writer.bytes_written)} written to "
            f"{out} in {progress.elapsed_s:.1f} s")


@click.command(epilog=EXIT_CODES)
@click.option("--seed", required=True, metavar="HOST:PORT", help="Any member of the cluster.")
@click.option("--out", required=True, metavar="FILE",
              type=click.Path(dir_okay=False, writable=True),
              help="Where to write the backup (replaced only once it is complete).")
@click.option("--cookie-file", metavar="FILE",
              help="File holding the cluster secret (or set PHX_COOKIE).")
@click.option("--timeout-s", default=30.0, show_default=True, metavar="SECONDS",
              help="How long to wait to join, and for a partition without a leader.")
def backup(seed: str, out: str, cookie_file: str | None, timeout_s: float) -> None:
    """Write every agent's committed state in the cluster SEED belongs to to FILE.

    Each partition is read on its leader: an agent's record is the state a majority of
    its replicas stored, whole (writes in flight are settled first). Agents keep running
    meanwhile; each agent is consistent, the backup as a whole is not a point in time.
    Progress goes to stderr, and a summary line (agents, kinds, bytes) at the end.
    Load it with `phx restore`.
    """
    require_extra("cli", "phx backup")
    logging.getLogger("phoenix_cluster").setLevel(logging.CRITICAL)
    folder = Path(out).absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        fail("backup", EXIT_USAGE, f"cannot write {out}: {folder} is not a writable folder")
    try:
        summary = asyncio.run(_backup(seed, out, cookie_file, timeout_s))
    except ConfigError as exc:
        fail("backup", EXIT_USAGE, str(exc))
    except RETRYABLE as exc:
        fail("backup", EXIT_FAILURE, f"cannot back up the cluster of {seed}: "
                                     f"{exc or type(exc).__name__}; nothing was written")
    click.echo(f"phx backup: {summary}")
