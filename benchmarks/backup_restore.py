"""``phx backup`` and ``phx restore`` of many agents between local clusters.

Fills a 3-node ``LocalCluster`` with ``--agents`` agents (about ``--state-bytes`` of state
each), runs ``phx backup`` of it, then ``phx restore`` of the file into a new cluster of
each size in ``--into``. Prints each command's wall time (its own summary line says the
time after it joined, without the interpreter's start), the file's size and the
command's peak resident memory (``VmHWM``, Linux), which stays flat as the
agent count grows because both commands stream the file.

Run: ``PYTHONPATH=src python benchmarks/backup_restore.py [--agents 100000]``
(the figures in ``docs/operations.md`` come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster


class Profile(phx.Agent, kind="bench.backup_profile"):
    def __init__(self) -> None:
        self.bio = ""

    async def set(self, bio: str) -> None:
        self.bio = bio


# Runs phx in a child that reports its own peak RSS as it exits: VmHWM belongs to the
# process image after exec, whereas the child's ru_maxrss also counts the copy of this
# (large) process it was forked from.
_PHX_WITH_PEAK = """
import atexit, re, sys
def peak():
    status = open("/proc/self/status").read()
    print("peak_kib", re.search(r"VmHWM:\\s*(\\d+)", status).group(1), file=sys.stderr)
atexit.register(peak)
sys.argv[0] = "phx"
from phoenix_cluster._cli.main import main
main()
"""


def run_phx(*args: str, cookie: str) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in KiB and the summary line of ``phx ARGS``."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _PHX_WITH_PEAK, *args],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PHX_COOKIE": cookie})
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"phx {args[0]} failed: {done.stderr.strip()}")
    peak = [line.split()[1] for line in done.stderr.splitlines()
            if line.startswith("peak_kib ")]
    return wall, int(peak[-1]), done.stdout.strip()


async def main(agents: int, state_bytes: int, into: list[int]) -> None:
    path = Path(tempfile.mkdtemp(prefix="phx-backup-bench-")) / "cluster.phxb"
    async with LocalCluster(3, ["backup_restore"]) as source:
        client = await source.client()
        slots = asyncio.Semaphore(64)

        async def fill(i: int) -> None:
            async with slots:
                await client.ref(Profile, f"u{i}").set("x" * state_bytes)

        started = time.monotonic()
        await asyncio.gather(*(fill(i) for i in range(agents)))
        print(f"filled {agents:,} agents in {time.monotonic() - started:.1f} s")
        wall, rss, line = run_phx("backup", "--seed", source.addresses[0], "--out",
                                  str(path), cookie=source.cookie)
        print(f"backup: {wall:.1f} s wall, peak RSS {rss / 1024:.0f} MiB: {line}")
    for size in into:
        async with LocalCluster(size, ["backup_restore"]) as target:
            wall, rss, line = run_phx("restore", "--seed", target.addresses[0], str(path),
                                      cookie=target.cookie)
            print(f"restore into {size}: {wall:.1f} s wall, peak RSS {rss / 1024:.0f} MiB: "
                  f"{line}")
    path.unlink()
    path.parent.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--state-bytes", type=int, default=100)
    parser.add_argument("--into", type=int, nargs="+", default=[3, 1])
    args = parser.parse_args()
    asyncio.run(main(args.agents, args.state_bytes, args.into))
