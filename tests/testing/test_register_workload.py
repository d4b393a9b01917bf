"""The register workload records what its clients saw (on an embedded node, in-process),
and ``lost_writes`` counts the acknowledged writes a final read shows were lost."""

from __future__ import annotations

import asyncio
import random

import phoenix_cluster as phx
from phoenix_cluster.testing.linearizability import Op, Outcome, check_history
from phoenix_cluster.testing.register import FINAL_READER, RegisterWorkload, lost_writes


def write(value: int, start: float, end: float | None, outcome: Outcome = "ok") -> Op:
    return Op("k", "write", start, end, outcome, value=value)


def final(output: int | None, at: float = 100.0) -> Op:
    return Op("k", "read", at, at + 1, "ok", output=output, client=FINAL_READER)


def test_no_write_is_lost_when_the_final_read_sees_the_last_one() -> None:
    assert lost_writes([write(1, 0, 1), write(2, 2, 3), final(2)]) == {}
    # Concurrent writes: either may be last.
    assert lost_writes([write(1, 0, 3), write(2, 1, 4), final(1)]) == {}


def test_writes_that_began_after_the_value_read_was_written_are_lost() -> None:
    assert lost_writes([write(1, 0, 1), write(2, 2, 3), write(3, 4, 5), final(1)]) == {"k": 2}
    assert lost_writes([write(1, 0, 1), write(2, 2, 3), final(None)]) == {"k": 2}


def test_a_final_read_of_a_timed_out_write_loses_nothing_it_cannot_prove() -> None:
    assert lost_writes([write(1, 0, 1), write(2, 0.5, None, "info"), final(2)]) == {}


async def test_the_workload_records_a_linearizable_history_on_one_node() -> None:
    async with phx.Node() as node:
        workload = RegisterWorkload(node, slots=2, ops_per_key=50)
        stop = asyncio.Event()
        clients = [asyncio.create_task(workload.run_client(c, random.Random(c), stop))
                   for c in range(5)]
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*clients)
        assert await workload.read_all(5.0) == []
    history = workload.history
    assert workload.counts()["ok"] == len(history) > 100
    assert {op.kind for op in history} == {"read", "write", "cas"}
    assert all(op.complete is not None and op.invoke <= op.complete for op in history)
    assert len(workload.used) > 2  # keys were replaced after 50 operations
    finals = [op for op in history if op.client == FINAL_READER]
    assert {op.key for op in finals} == set(workload.used)
    results = check_history(history)
    assert all(r.linearizable is True for r in results.values())
    assert lost_writes(history) == {}
