"""A store-backed kind on real node processes: its state survives a restart of the
whole cluster (every node stopped, a new cluster started on the same PostgreSQL)."""

from __future__ import annotations

import pytest
from stores_cluster_kinds import StoredCounter

from phoenix_cluster.testing import LocalCluster
from phoenix_cluster.testing.postgres import PostgresServer

pytestmark = pytest.mark.slow


async def test_state_survives_a_restart_of_the_whole_cluster(
        postgres: PostgresServer) -> None:
    args = ["--store", f"main={postgres.url}"]
    keys = [f"c{i}" for i in range(12)]
    async with LocalCluster(2, imports=["stores_cluster_kinds"], node_args=args) as cluster:
        client = await cluster.client()
        for i, key in enumerate(keys):
            assert await client.ref(StoredCounter, key).add(i + 1) == i + 1
        for i in range(2):  # stopped gracefully (closing the cluster would kill them)
            assert await cluster.stop(i) == 0
    async with LocalCluster(2, imports=["stores_cluster_kinds"], node_args=args) as cluster:
        client = await cluster.client()
        for i, key in enumerate(keys):
            assert await client.ref(StoredCounter, key).add(100) == i + 101
