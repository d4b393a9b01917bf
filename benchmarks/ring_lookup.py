"""Micro-benchmark of the consistent-hash ring (``phoenix_cluster._ring``).

For rings of 10, 100 and 1,000 members (160 vnodes each) measures:

- ``owner()`` lookups per second on pre-hashed keys (the routing hot path);
- ``key_hash()`` + ``owner()`` per second (hashing a fresh ``(kind, key)`` too);
- ``replicas(h, 3)`` per second;
- build time from scratch, ``with_member`` / ``without_member`` time (incremental),
  ``PartitionTable.build`` time, and the exact balance (largest share / mean share).

Each figure is the best of ``--repeat`` runs (least disturbed by other processes).

    .venv/bin/python benchmarks/ring_lookup.py [--lookups 200000] [--repeat 5]
        [--members 10,100,1000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections.abc import Callable

from phoenix_cluster._ring.hashing import key_hash
from phoenix_cluster._ring.partitions import PartitionTable
from phoenix_cluster._ring.ring import HashRing


def best(fn: Callable[[], object], repeat: int) -> float:
    """The shortest of ``repeat`` timed runs of ``fn``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(members: int, lookups: int, repeat: int) -> dict[str, float]:
    rng = random.Random(members)
    names = [f"node-{i}" for i in range(members)]
    keys = [f"user-{rng.getrandbits(64):016x}" for _ in range(lookups)]
    hashes = [key_hash("counter", k) for k in keys]

    ring = HashRing(names)
    owner = ring.owner
    replicas = ring.replicas

    def lookups_only() -> None:
        for h in hashes:
            owner(h)

    def hash_and_lookup() -> None:
        for k in keys:
            owner(key_hash("counter", k))

    def replica_sets() -> None:
        for h in hashes:
            replicas(h, 3)

    t_owner = best(lookups_only, repeat)
    t_hash = best(hash_and_lookup, repeat)
    t_replicas = best(replica_sets, repeat)
    builds = max(1, repeat // 2)
    t_build = best(lambda: HashRing(names), builds)
    t_join = best(lambda: ring.with_member("newcomer"), repeat)
    t_leave = best(lambda: ring.without_member(names[0]), repeat)
    t_table = best(lambda: PartitionTable.build(ring), builds)
    return {
        "members": members,
        "owner_per_s": lookups / t_owner,
        "hash_and_owner_per_s": lookups / t_hash,
        "replicas3_per_s": lookups / t_replicas,
        "build_ms": t_build * 1e3,
        "with_member_ms": t_join * 1e3,
        "without_member_ms": t_leave * 1e3,
        "partition_table_ms": t_table * 1e3,
        "max_over_mean": ring.statistics().max_over_mean,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--members", default="10,100,1000")
    parser.add_argument("--json", metavar="FILE", help="also save the figures as JSON")
    args = parser.parse_args()

    rows = [measure(int(n), args.lookups, args.repeat) for n in args.members.split(",")]
    print(f"Python {platform.python_version()} on {platform.machine()}, 160 vnodes per member")
    header = (
        f"{'members':>7} {'owner/s':>11} {'hash+owner/s':>13} {'replicas3/s':>12} "
        f"{'build ms':>9} {'join ms':>8} {'leave ms':>9} {'table ms':>9} {'max/mean':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['members']:>7,.0f} {r['owner_per_s']:>11,.0f} {r['hash_and_owner_per_s']:>13,.0f}"
            f" {r['replicas3_per_s']:>12,.0f} {r['build_ms']:>9.1f} {r['with_member_ms']:>8.2f}"
            f" {r['without_member_ms']:>9.2f} {r['partition_table_ms']:>9.1f}"
            f" {r['max_over_mean']:>9.3f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": platform.python_version(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
