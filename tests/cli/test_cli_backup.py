"""``phx backup`` and ``phx restore`` between real clusters: a 3-node cluster's agents
of two kinds restored into clusters of 1, 2 and 3 nodes and compared key by key, the
restored state surviving kill -9 of a node, and bad input refused before anything is
written."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest
from backup_agents import Account, Profile

from phoenix_cluster import Node
from phoenix_cluster._cli.backup_file import BackupWriter, read_records, validate
from phoenix_cluster.testing import LocalCluster, free_port, wait_until

ACCOUNTS = [f"acct-{i}" for i in range(120)]
PROFILES = [f"user-{i}" for i in range(40)]


def phx(*args: str, cookie: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phoenix_cluster", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PHX_COOKIE": cookie},
    )


Snapshot = dict[tuple[str, str], object]
T = TypeVar("T")


async def each(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await ``calls`` (one per key) a few at a time; their results in order."""
    slots = asyncio.Semaphore(16)

    async def one(call: Awaitable[T]) -> T:
        async with slots:
            return await call

    return await asyncio.gather(*(one(call) for call in calls))


async def fill(client: Node) -> Snapshot:
    """Deposits and fields for every key (keys side by side, each key's in order)."""
    async def account(i: int, key: str) -> None:
        for amount in range(1 + i % 3):
            await client.ref(Account, key).deposit(10 * i + amount)

    async def profile(i: int, key: str) -> None:
        await client.ref(Profile, key).set("name", f"name {i} \u00e9")
        await client.ref(Profile, key).set("tier", str(i % 4))

    await each([*(account(i, key) for i, key in enumerate(ACCOUNTS)),
                *(profile(i, key) for i, key in enumerate(PROFILES))])
    return await read_all(client)


async def read_all(client: Node) -> Snapshot:
    accounts = await each(client.ref(Account, key).read() for key in ACCOUNTS)
    profiles = await each(client.ref(Profile, key).read() for key in PROFILES)
    state: Snapshot = {}
    for key, (balance, history) in zip(ACCOUNTS, accounts, strict=True):
        state[("account", key)] = (balance, list(history))
    for key, fields in zip(PROFILES, profiles, strict=True):
        state[("profile", key)] = dict(fields)
    return state


def contents(path: Path) -> dict[tuple[str, str], bytes]:
    return {(r.kind, r.key): r.state for r in read_records(path)}


def restore(cluster: LocalCluster, path: Path) -> subprocess.CompletedProcess[str]:
    done = phx("restore", "--seed", cluster.addresses[-1], str(path), cookie=cluster.cookie)
    assert done.returncode == 0, done.stderr
    assert f"restored {len(ACCOUNTS) + len(PROFILES)} agents of 2 kinds" in done.stdout
    return done


def agents_in(cluster: LocalCluster, tmp_path: Path) -> int:
    """How many agents hold committed state in ``cluster`` (a backup of it)."""
    out = tmp_path / f"check-{free_port()}.phxb"
    done = phx("backup", "--seed", cluster.addresses[0], "--out", str(out),
               cookie=cluster.cookie)
    assert done.returncode == 0, done.stderr
    return validate(out).records


@pytest.mark.slow
async def test_backup_of_3_nodes_restores_into_1_2_and_3_nodes_key_by_key(
        tmp_path: Path) -> None:
    path = tmp_path / "cluster.phxb"
    async with LocalCluster(3, ["backup_agents"]) as source:
        expected = await fill(await source.client())
        done = phx("backup", "--seed", source.addresses[1], "--out", str(path),
                   cookie=source.cookie)
        assert done.returncode == 0, done.stderr
        # Again, right after kill -9 of a member: its partitions are read on their new
        # leaders once the others see it gone (the backup waits for that).
        source.kill(0)
        again = tmp_path / "again.phxb"
        retried = phx("backup", "--seed", source.addresses[1], "--out", str(again),
                      cookie=source.cookie)
        assert retried.returncode == 0, retried.stderr
        assert contents(again) == contents(path)
    total = len(ACCOUNTS) + len(PROFILES)
    assert (f"phx backup: {total} agents of 2 kinds (backup_tests.account 120, "
            f"backup_tests.profile 40)") in done.stdout
    assert validate(path).kinds == {"backup_tests.account": 120, "backup_tests.profile": 40}

    for size in (1, 2):
        async with LocalCluster(size, ["backup_agents"]) as target:
            done = restore(target, path)
            assert f"into {size} member{'s' if size > 1 else ''} in" in done.stdout
            assert await read_all(await target.client()) == expected, f"{size} nodes"

    async with LocalCluster(3, ["backup_agents"]) as target:
        client = await target.client()
        restore(target, path)
        twice = phx("restore", "--seed", target.addresses[0], str(path), cookie=target.cookie)
        assert twice.returncode == 2, twice.stderr
        assert len(twice.stderr.strip().splitlines()) == 1, twice.stderr
        assert "already holds state of kinds in the backup" in twice.stderr
        assert "records of backup_tests.account" in twice.stderr
        done = phx("restore", "--seed", target.addresses[0], str(path), "--overwrite",
                   cookie=target.cookie)
        assert done.returncode == 0, done.stderr
        target.kill(2)  # kill -9 right after the restore: every record is on a majority
        await target.wait(2)
        await target.wait_converged()  # the others declared it dead
        await wait_until(lambda: any(m.name == "node-2" and m.status == "dead"
                                     for m in client.members()),
                         timeout=30, what="the client to see node-2 dead")
        assert await read_all(client) == expected, "after kill -9 of node-2"


@pytest.mark.slow
async def test_bad_files_and_missing_kinds_are_refused_with_nothing_written(
        tmp_path: Path) -> None:
    good = tmp_path / "good.phxb"
    with BackupWriter(good, source="elsewhere") as writer:
        writer.add("backup_tests.account", "a", b"\x82\xa7balance\x05\xa7history\x91\x05")
        writer.add("backup_tests.profile", "p", b"\x81\xa6fields\x80")
        writer.add("backup_tests.ghost", "g", b"\x80")
        writer.finish()
    data = good.read_bytes()
    truncated = tmp_path / "truncated.phxb"
    truncated.write_bytes(data[:-20])
    corrupt = tmp_path / "corrupt.phxb"
    corrupt.write_bytes(data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])

    # The target imports backup_agents but not the ghost kind.
    async with LocalCluster(1, ["backup_agents"]) as target:
        for bad, why in ((truncated, "truncated"), (corrupt, "corrupt")):
            done = phx("restore", "--seed", target.addresses[0], str(bad),
                       cookie=target.cookie)
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1, done.stderr
            assert lines[0].startswith(f"phx restore: error: {bad}: {why}"), lines
            assert lines[0].endswith("nothing was written")
        done = phx("restore", "--seed", target.addresses[0], str(good), cookie=target.cookie)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert ("kinds not imported on the target cluster: backup_tests.ghost (on node-0)"
                in done.stderr)
        assert "backup_tests.account" not in done.stderr
        assert agents_in(target, tmp_path) == 0, "a refused restore wrote nothing"


def test_backup_and_restore_of_an_unreachable_cluster_exit_1_in_one_line(
        tmp_path: Path) -> None:
    seed = f"127.0.0.1:{free_port()}"
    out = tmp_path / "b.phxb"
    done = phx("backup", "--seed", seed, "--out", str(out), "--timeout-s", "1", cookie="x")
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cannot back up the cluster of" in done.stderr
    assert list(tmp_path.iterdir()) == [], "a failed backup leaves no file"
    nowhere = phx("backup", "--seed", seed, "--out", str(tmp_path / "no" / "b.phxb"),
                  cookie="x")
    assert nowhere.returncode == 2, nowhere.stderr
    assert "is not a writable folder" in nowhere.stderr
    with BackupWriter(out, source="s") as writer:
        writer.finish()
    done = phx("restore", "--seed", seed, str(out), "--timeout-s", "1", cookie="x")
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_help_documents_the_exit_codes() -> None:
    for command in ("backup", "restore"):
        done = phx(command, "--help", cookie="x")
        assert done.returncode == 0
        assert "Exit codes:" in done.stdout
        assert "2  usage or configuration" in done.stdout
