"""Read leases on the replicas (docs/design/replication.md, "Read leases"): a new leader
waits out the lease of a leader it could not depose, and one that promised a newer
epoch stops answering reads at once, so nobody waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from phoenix_cluster._foundation.env import ManualClock
from phoenix_cluster._replication.service import ReplicationSettings
from phoenix_cluster._replication.simulation import ReplicaCluster
from phoenix_cluster._replication.types import Record
from phoenix_cluster.errors import NotLeader

KIND = "counter"
SETTINGS = ReplicationSettings(eager=False)
KEY = "k1"


@pytest.fixture
async def cluster() -> AsyncIterator[ReplicaCluster]:
    made = ReplicaCluster(ManualClock(), settings=SETTINGS)
    await made.start_all("abc")
    yield made
    await made.aclose()


async def turns(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def advance(cluster: ReplicaCluster, seconds: float) -> None:
    clock = cluster.clock
    assert isinstance(clock, ManualClock)
    clock.advance(seconds)


async def test_a_new_leader_waits_out_the_lease_of_a_leader_it_could_not_depose(
        cluster: ReplicaCluster) -> None:
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    await a.load(KIND, KEY)
    await a.commit(KIND, KEY, Record(b"1", ()))
    assert a.lease_runs(KIND, KEY)
    # b and c lose sight of a (cut off, or paused): a still believes it leads.
    cluster.update(nodes="bc", view="bc")
    election = asyncio.create_task(b.load(KIND, KEY))
    await turns()
    assert not election.done()  # promised by b and c, which acknowledged a just now
    advance(cluster, SETTINGS.confirm_after_s + 0.01)
    await turns()
    assert not a.lease_runs(KIND, KEY)  # a no longer answers reads from memory...
    assert not election.done()  # ...and b serves only after the replicas' hold
    advance(cluster, SETTINGS.lease_hold_s - SETTINGS.confirm_after_s)
    await turns()
    assert election.done()
    record = await election
    assert record is not None and record.state == b"1"
    await b.confirm_lease(KIND, KEY)  # its own lease counts from its prepare: renewed
    assert b.lease_runs(KIND, KEY)


async def test_a_leader_that_promises_a_newer_epoch_stops_reading_and_nobody_waits(
        cluster: ReplicaCluster) -> None:
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    await a.load(KIND, KEY)
    await a.commit(KIND, KEY, Record(b"1", ()))
    election = asyncio.create_task(b.load(KIND, KEY))  # a is asked, and promises
    await turns()
    assert election.done()  # no clock advance: nobody waited
    assert b.lease_runs(KIND, KEY)
    assert not a.lease_runs(KIND, KEY)
    with pytest.raises(NotLeader) as caught:
        await a.confirm_lease(KIND, KEY)
    assert not caught.value.definite


async def test_a_quiet_leader_renews_its_lease_with_one_round(
        cluster: ReplicaCluster) -> None:
    a = cluster.nodes["a"]
    await a.load(KIND, KEY)
    await a.commit(KIND, KEY, Record(b"1", ()))
    advance(cluster, SETTINGS.confirm_after_s + 0.01)
    assert not a.lease_runs(KIND, KEY)
    before = a.statistics().batches_sent
    await a.confirm_lease(KIND, KEY)
    assert a.lease_runs(KIND, KEY)
    assert a.statistics().batches_sent - before == 2  # one empty accept to each peer
