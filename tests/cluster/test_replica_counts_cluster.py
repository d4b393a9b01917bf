"""``replicas=`` per kind on real node processes: acknowledged writes survive kill -9 of
``replicas - 1`` of a kind's replicas.

How to read "kills replicas-1 of its replicas without loss" (issue 13): a quorum of N
replicas is ``N // 2 + 1``, so writes keep going while ``(N - 1) // 2`` of them are down
at once. Killing more at once (up to ``N - 1``) loses no acknowledged write either,
because every acknowledged write is on a majority and an election reads a majority, but
the survivors may serve the group only once the cluster has decided the dead members
are gone (a split-brain decision; replication.md, "Lost members"): until then they
cannot tell a dead member from a slow one that holds newer writes. These tests kill
``N - 1`` replicas and check that every acknowledged write is read back afterwards.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from replica_count_agents import Pair, Quint

from phoenix_cluster import Node, PhoenixError
from phoenix_cluster.testing import LocalCluster

pytestmark = pytest.mark.slow

IMPORTS = ["replica_count_agents"]


async def read_when_served(client: Node, kind: Any, key: str, deadline: float) -> list[int]:
    """``kind/key``'s state, calling again after each failure until ``deadline``."""
    while True:
        try:
            seen: list[int] = await client.ref(kind, key).read()
            return seen
        except PhoenixError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_two_replicas_lose_no_acknowledged_write_when_one_is_killed() -> None:
    """replicas=2 on 3 nodes: kill -9 one node (replicas - 1 = 1 of the pair of every
    group it was in). Keys whose pair lost a member are served again once the other
    two nodes downed it (keep-majority, ``stable_after`` 2 s here) and the margin has
    passed; each holds every acknowledged add. A replicas=5 kind on the same 3 nodes
    (capped: 3 replicas, quorum 2) serves at once after the failover."""
    env = {"PHX_SPLIT_BRAIN_STABLE_AFTER_S": "2"}
    async with LocalCluster(3, IMPORTS, env=env) as cluster:
        client = await cluster.client()
        keys = [f"k{i}" for i in range(30)]
        acked: dict[tuple[str, str], list[int]] = {}
        for kind in (Pair, Quint):
            for i, key in enumerate(keys):
                for n in (i, i + 100):
                    await client.ref(kind, key).add(n)
                    acked.setdefault((kind.__name__, key), []).append(n)
        cluster.kill(2)
        deadline = time.monotonic() + 60
        for kind in (Quint, Pair):
            for key in keys:
                got = await read_when_served(client, kind, key, deadline)
                assert got == acked[(kind.__name__, key)], (kind.__name__, key)
        # Served by the survivors' new pairs: a write needs both of them, and works.
        for key in keys:
            assert await client.ref(Pair, key).add(7) == 3
