"""``phx restore``: load a ``phx backup`` file into a cluster of any size.

Before anything is written, the whole file is checked (``backup_file.validate``) and
every member is asked whether it hosts each kind of the file with replicated state and,
unless ``--overwrite``, whether its replicas hold state of those kinds already. Then the
file is read a second time, as a stream, and each record is sent to the primary of its
partition in the target's table (``$backup.restore``, ``_replication/export.py``), which
commits it through the quorum path as a new write. A batch refused because the table
moved is split by the new primaries and sent again; writing the same state twice is
harmless, so a restore that failed half way can simply be run again (with
``--overwrite``: what it wrote is state the target now holds).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import click

from .._foundation.extras import require_extra
from .._replication.export import (
    HeldReply,
    KindsReply,
    KindsRequest,
    RestoredRecord,
    RestoreReply,
    RestoreRequest,
)
from .._replication.service import partition_for
from ..errors import ConfigError
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
from .backup_file import BackupFileError, BackupSummary, read_records, validate

__all__ = ["restore"]

BATCH_BYTES = 256 << 10
BATCH_RECORDS = 256
IN_FLIGHT = 4
"""Batches sent at once (bounds what is read ahead of the cluster)."""
RETRY_S = 0.5


class MissingKinds(Exception):
    """The target cannot take the backup as it is (nothing written): members that do not
    host some of its kinds, or that hold state of them already."""


class RestoreFailed(Exception):
    """A batch could not be written (the message says how many records were)."""


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def check_kinds(cluster: Cluster, kinds: list[str]) -> None:
    """Ask every alive member which of ``kinds`` it cannot host with replicated state.

    Raises:
        MissingKinds: some can't (the message names the kinds and the members).
    """
    members = cluster.members()
    replies = await asyncio.gather(*(cluster.call(m, "kinds", KindsRequest(tuple(kinds)),
                                                  KindsReply) for m in members))
    missing: dict[str, list[str]] = defaultdict(list)
    unreplicated: dict[str, list[str]] = defaultdict(list)
    for member, reply in zip(members, replies, strict=True):
        for kind in reply.missing:
            missing[kind].append(member)
        for kind in reply.unreplicated:
            unreplicated[kind].append(member)
    problems = []
    if missing:
        problems.append("kinds not imported on the target cluster: " + "; ".join(
            f"{kind} (on {', '.join(on)})" for kind, on in sorted(missing.items()))
            + " (start its nodes with --import MODULE)")
    if unreplicated:
        problems.append("kinds without replicated state on the target cluster: " + "; ".join(
            f"{kind} (on {', '.join(on)})" for kind, on in sorted(unreplicated.items())))
    if problems:
        raise MissingKinds("; ".join(problems) + "; nothing was written")


async def check_empty(cluster: Cluster, kinds: list[str]) -> None:
    """Ask every alive member whether its replicas hold state of ``kinds``.

    Raises:
        MissingKinds: some do (the message names the kinds and the members).
    """
    members = cluster.members()
    replies = await asyncio.gather(*(cluster.call(m, "held", KindsRequest(tuple(kinds)),
                                                  HeldReply) for m in members))
    held = {member: reply.records for member, reply in zip(members, replies, strict=True)
            if reply.records}
    if held:
        where = "; ".join(f"{member}: " + ", ".join(
            f"{count(n, 'record')} of {kind}" for kind, n in sorted(records.items()))
            for member, records in sorted(held.items()))
        raise MissingKinds(f"the target cluster already holds state of kinds in the backup "
                           f"({where}); restore into a new cluster, or pass --overwrite to "
                           "replace those agents' state; nothing was written")


class _Load:
    """One restore in progress: batches per primary, a few in flight."""

    def __init__(self, cluster: Cluster, progress: Progress, timeout_s: float) -> None:
        self.cluster = cluster
        self.progress = progress
        self.timeout_s = timeout_s
        self.restored = 0
        self.state_bytes = 0
        self._slots = asyncio.Semaphore(IN_FLIGHT)

    async def run(self, path: str, total: int) -> None:
        """Send every record of ``path`` to its primary.

        Raises:
            PhoenixError, TimeoutError, OSError: a batch could not be written within
                ``timeout_s`` of its first failure (the last error).
        """
        table = self.cluster.table()
        batches: dict[str, list[RestoredRecord]] = defaultdict(list)
        sizes: dict[str, int] = defaultdict(int)
        async with asyncio.TaskGroup() as tasks:
            for record in read_records(path):
                owner = table.replicas[partition_for(record.kind, record.key)][0]
                batch = batches[owner]
                batch.append(RestoredRecord(record.kind, record.key, record.state))
                sizes[owner] += len(record.state) + len(record.key) + 16
                if sizes[owner] >= BATCH_BYTES or len(batch) >= BATCH_RECORDS:
                    await self._slots.acquire()  # read no further ahead than this
                    tasks.create_task(self._send(owner, batches.pop(owner), total))
                    sizes.pop(owner)
            for owner, batch in batches.items():
                await self._slots.acquire()
                tasks.create_task(self._send(owner, batch, total))

    async def _send(self, owner: str, batch: list[RestoredRecord], total: int) -> None:
        try:
            await self._write(owner, batch)
        finally:
            self._slots.release()
        self.restored += len(batch)
        self.state_bytes += sum(len(r.state) for r in batch)
        self.progress.maybe(f"{self.restored:,}/{total:,} agents, "
                            f"{size(self.state_bytes)} of state")

    async def _write(self, owner: str, batch: list[RestoredRecord]) -> None:
        loop = asyncio.get_running_loop()
        first_failure: float | None = None
        todo = {owner: batch}
        while todo:
            member, records = todo.popitem()
            try:
                await self.cluster.call(member, "restore", RestoreRequest(tuple(records)),
                                        RestoreReply)
                continue
            except RETRYABLE:
                now = loop.time()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure > self.timeout_s:
                    raise
            await asyncio.sleep(RETRY_S)  # a primary is changing: route again
            table = self.cluster.table()
            for record in records:
                todo.setdefault(table.replicas[partition_for(record.kind, record.key)][0],
                                []).append(record)


async def _restore(seed: str, path: str, summary: BackupSummary, cookie_file: str | None,
                   timeout_s: float, overwrite: bool) -> str:
    progress = Progress("restore")
    async with connect(seed, cookie_file, timeout_s) as cluster:
        await check_kinds(cluster, sorted(summary.kinds))
        if not overwrite:
            await check_empty(cluster, sorted(summary.kinds))
        members = len(cluster.members())
        load = _Load(cluster, progress, timeout_s)
        try:
            await load.run(path, summary.records)
        except ExceptionGroup as group:  # the batches' TaskGroup
            exc = _first(group)
            if not isinstance(exc, (*RETRYABLE, BackupFileError)):
                raise
            raise RestoreFailed(f"cannot restore into the cluster of {seed}: {exc}; "
                                f"{load.restored:,} of {summary.records:,} agents were "
                                "restored (run phx restore again with --overwrite: "
                                "writing the same state twice is harmless)") from exc
    return (f"restored {count(load.restored, 'agent')} of "
            f"{count(len(summary.kinds), 'kind')} ({size(load.state_bytes)} of state) into "
            f"{count(members, 'member')} in "
            f"{progress.elapsed_s:.1f} s")


@click.command(epilog=EXIT_CODES)
@click.option("--seed", required=True, metavar="HOST:PORT",
              help="Any member of the target cluster.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--cookie-file", metavar="FILE",
              help="File holding the target cluster's secret (or set PHX_COOKIE).")
@click.option("--timeout-s", default=30.0, show_default=True, metavar="SECONDS",
              help="How long to wait to join, and for a partition without a leader.")
@click.option("--overwrite", is_flag=True,
              help="Write over agents of the backup's kinds that already have state "
                   "(refused without it).")
def restore(seed: str, file: str, cookie_file: str | None, timeout_s: float,
            overwrite: bool) -> None:
    """Load a `phx backup` FILE into the cluster SEED belongs to (of any size).

    The whole file is checked first (format version, every frame's checksum, the
    trailer's counts and digest), then every member is asked whether it imports each
    kind in it, and whether it holds state of those kinds already: a damaged file, a
    missing kind or existing state (without --overwrite) is refused before anything is
    written. Each agent's state is then committed on its partition's leader through a
    quorum of replicas, as a new version. With --overwrite, restore while agents of those
    kinds are idle: an agent busy during the restore may write over its restored state.
    """
    require_extra("cli", "phx restore")
    logging.getLogger("phoenix_cluster").setLevel(logging.CRITICAL)
    try:
        summary = validate(file)
    except (BackupFileError, OSError) as exc:
        fail("restore", EXIT_USAGE, f"{file}: {exc}; nothing was written")
    try:
        line = asyncio.run(_restore(seed, file, summary, cookie_file, timeout_s, overwrite))
    except (ConfigError, MissingKinds) as exc:
        fail("restore", EXIT_USAGE, str(exc))
    except RestoreFailed as exc:
        fail("restore", EXIT_FAILURE, str(exc))
    except RETRYABLE as exc:
        fail("restore", EXIT_FAILURE, f"cannot restore into the cluster of {seed}: "
                                      f"{exc or type(exc).__name__}; nothing was written")
    click.echo(f"phx restore: {line}")
