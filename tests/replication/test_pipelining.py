"""Two batches in flight to a peer (pipelining), with the commit semantics unchanged.

Three replicators on the memory network under a :class:`ManualClock` that moves only
when a test advances it, so a batch held at a replica stays in flight (no timeout fires)
until the test lets it through, fences its partition or advances past the deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

from phoenix_cluster._foundation.env import ManualClock
from phoenix_cluster._replication.core import ReplicationStatistics
from phoenix_cluster._replication.messages import (
    Ack,
    BatchReply,
    Mark,
    Prepare,
    Reply,
    decode_batch,
    encode,
    encode_item,
)
from phoenix_cluster._replication.sending import Answered, Sender
from phoenix_cluster._replication.service import ReplicationSettings, Replicator, partition_for
from phoenix_cluster._replication.simulation import ReplicaCluster
from phoenix_cluster._replication.types import Epoch, Record
from phoenix_cluster._transport.tasks import TaskSet
from phoenix_cluster.errors import NodeClosed, NodeUnavailable, NoQuorum, NotLeader, PhoenixError

KIND = "counter"
SETTINGS = ReplicationSettings(eager=False, rpc_timeout_s=2.0)


OPENED_AT_TEARDOWN: list[Gate] = []


class Gate:
    """Holds the batches arriving at a replica until :meth:`open`; counts them."""

    def __init__(self, handle: Callable[[str, bytes], Awaitable[bytes]]) -> None:
        self._handle = handle
        self._open = asyncio.Event()
        self.arrived = 0

    async def __call__(self, method: str, payload: bytes) -> bytes:
        self.arrived += 1
        await self._open.wait()
        return await self._handle(method, payload)

    def open(self) -> None:
        self._open.set()


async def arrived(gates: dict[str, Gate], n: int) -> None:
    """Run the loop until ``n`` batches arrived at every gate (time stands still: no
    timer fires), and a few turns more (a batch sent late would show)."""
    for _ in range(200):
        if all(g.arrived >= n for g in gates.values()):
            break
        await asyncio.sleep(0)
    await turns()
    got = sorted(g.arrived for g in gates.values())
    assert got == [n] * len(gates), f"batches in flight to each peer: {got}, expected {n}"


async def turns(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture
async def cluster() -> AsyncIterator[ReplicaCluster]:
    made = ReplicaCluster(ManualClock(), settings=SETTINGS)
    await made.start_all("abc")
    yield made
    for gate in OPENED_AT_TEARDOWN:  # a failed test leaves no batch held
        gate.open()
    OPENED_AT_TEARDOWN.clear()
    await made.aclose()


def same_partition_keys(n: int) -> list[str]:
    """``n`` keys of one partition (every node is in every replica set of three)."""
    by_p: dict[int, list[str]] = {}
    for i in range(20_000):
        key = f"k{i}"
        keys = by_p.setdefault(partition_for(KIND, key), [])
        keys.append(key)
        if len(keys) == n:
            return keys
    raise AssertionError("no partition with enough keys")


async def gated(cluster: ReplicaCluster, leader: Replicator,
                keys: list[str]) -> dict[str, Gate]:
    """Load ``keys`` on ``leader`` (ungated: the election), then hold every batch to
    the other two."""
    for key in keys:
        await leader.load(KIND, key)
    gates: dict[str, Gate] = {}
    for name, rep in cluster.nodes.items():
        if rep is not leader:
            gates[name] = Gate(rep.handle)
            OPENED_AT_TEARDOWN.append(gates[name])
            cluster.net.attach(name, gates[name])
    return gates


@dataclass
class Held:
    """Three writes to one partition whose batches the replicas hold (see
    :func:`held_writes`), and what a test checks them against."""

    leader: Replicator
    keys: list[str]
    partition: int
    gates: dict[str, Gate]
    before: ReplicationStatistics
    writes: list[asyncio.Task[None]]


async def held_writes(cluster: ReplicaCluster) -> Held:
    """On ``a``: commit ``keys[0]`` (state ``1``), ``keys[0]`` again (``2``), then
    ``keys[1]`` (``3``), one per loop turn, waiting until the first two batches are in
    flight to each peer; the third is queued behind them."""
    leader = cluster.nodes["a"]
    keys = same_partition_keys(3)
    gates = await gated(cluster, leader, keys)
    before = leader.statistics()
    writes: list[asyncio.Task[None]] = []
    for i, key in enumerate([keys[0], keys[0], keys[1]]):
        record = Record(str(i + 1).encode(), ())
        writes.append(asyncio.create_task(leader.commit(KIND, key, record)))
        await arrived(gates, min(i + 1, 2))
    return Held(leader, keys, partition_for(KIND, keys[0]), gates, before, writes)


async def test_a_second_batch_leaves_while_the_first_is_in_flight_and_no_third(
        cluster: ReplicaCluster) -> None:
    held = await held_writes(cluster)
    a, keys, p, gates, before, writes = (held.leader, held.keys, held.partition,
                                         held.gates, held.before, held.writes)
    # Two batches to each of b and c before either answered; the third write waits.
    assert [g.arrived for g in gates.values()] == [2, 2]
    assert a.statistics().batches_sent - before.batches_sent == 4
    assert not any(w.done() for w in writes)
    for gate in gates.values():
        gate.open()
    await asyncio.gather(*writes)
    assert [g.arrived for g in gates.values()] == [3, 3]
    assert a.statistics().commits - before.commits == 3
    # Every replica holds the partition's writes in the order made: the second write
    # of keys[0] (the second batch) over its first.
    for node in "abc":
        first, second = (cluster.nodes[node].store.get(p, KIND, k) for k in keys[:2])
        assert first is not None and first.state == b"2"
        assert second is not None and second.state == b"3"


async def test_one_batch_in_flight_when_the_window_is_one() -> None:
    single = ReplicaCluster(ManualClock(), settings=ReplicationSettings(
        eager=False, batches_in_flight=1))
    await single.start_all("abc")
    try:
        a = single.nodes["a"]
        keys = same_partition_keys(2)
        gates = await gated(single, a, keys)
        first = asyncio.create_task(a.commit(KIND, keys[0], Record(b"v", ())))
        await arrived(gates, 1)
        second = asyncio.create_task(a.commit(KIND, keys[1], Record(b"v", ())))
        await arrived(gates, 1)  # the second batch waits for the first one's answer
        for gate in gates.values():
            gate.open()
        await asyncio.gather(first, second)
    finally:
        await single.aclose()


async def test_a_fenced_leader_fails_the_writes_of_both_batches_in_flight(
        cluster: ReplicaCluster) -> None:
    held = await held_writes(cluster)
    a, keys, p, gates, writes = (held.leader, held.keys, held.partition, held.gates,
                                 held.writes)
    # While both batches are held, b and c promise a newer leader of the partition.
    for node in "bc":
        assert cluster.nodes[node].store.prepare(
            Prepare(p, Epoch(99, "x#1"), (("a", "b", "c"),))).ok
    for gate in gates.values():
        gate.open()
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:  # both batches' writes and the one queued behind them
        assert isinstance(result, NotLeader), result
        assert not result.definite  # the local replica stored it: outcome unknown
    assert a.leads(p) is None
    assert ("a", p, "fenced") in cluster.lost
    for node in "bc":  # the fenced writes never reached the replicas' stores
        assert all(cluster.nodes[node].store.get(p, KIND, k) is None for k in keys[:2])


async def test_a_leader_cut_off_fails_the_writes_of_both_batches_as_unknown(
        cluster: ReplicaCluster) -> None:
    held = await held_writes(cluster)
    a, keys, p, gates, writes = (held.leader, held.keys, held.partition, held.gates,
                                 held.writes)
    # The batches reach b and c and are stored, but every reply is lost.
    cluster.net.cut("bc", "a", both=False)
    for gate in gates.values():
        gate.open()
    await turns()
    assert not any(w.done() for w in writes)
    clock = cluster.clock
    assert isinstance(clock, ManualClock)
    for _ in range(3):  # the deadline of the two batches, then of the third one's
        clock.advance(SETTINGS.rpc_timeout_s + 0.1)
        await turns()
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        assert isinstance(result, NoQuorum | NotLeader), result
        assert not result.definite
    assert isinstance(results[0], NoQuorum) and isinstance(results[1], NoQuorum)
    assert a.leads(p) is None
    # Both batches were stored by b and c (only the replies were lost): the outcome
    # was indeed unknown, and the next leader adopts them.
    for node in "bc":
        assert all(cluster.nodes[node].store.get(p, KIND, k) is not None for k in keys[:2])
        entry = cluster.nodes[node].store.get(p, KIND, keys[0])
        assert entry is not None and entry.state == b"2"


# ----------------------------------------------------------------- the sender alone


class Peer:
    """An ``rpc`` whose batches wait until the test answers or fails them, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, asyncio.Future[bytes]]] = []

    async def __call__(self, peer: str, method: str, payload: bytes,
                       timeout_s: float) -> bytes:
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.calls.append((len(decode_batch(payload).items), answer))
        return await answer

    def answer(self, i: int) -> None:
        n, answer = self.calls[i]
        answer.set_result(encode(BatchReply((ACK,) * n)))

    def fail(self, i: int) -> None:
        self.calls[i][1].set_exception(NodeUnavailable("connection broke", definite=False))


ACK = Ack(1, True, Epoch(1, "a#1"))


async def test_one_batch_at_a_time_until_the_peer_answers_then_two() -> None:
    peer, tasks = Peer(), TaskSet("test")
    sender = Sender("a", peer, ManualClock(), tasks, batch_max_bytes=1 << 20,
                    timeout_s=2.0, window=2)
    mark = Mark(1, Epoch(1, "a#1"), (("a", "b", "c"),))
    try:
        # A fresh link: the second batch waits for the first answer (it could dial a
        # connection of its own and overtake the first).
        replies = [sender.send("b", mark)]
        await turns()
        replies.append(sender.send("b", mark))
        await turns()
        assert len(peer.calls) == 1
        peer.answer(0)
        await turns()
        assert len(peer.calls) == 2 and replies[0].result() == ACK
        # Answered: a second batch leaves while the first is in flight; a third waits.
        replies += [sender.send("b", mark)]
        await turns()
        replies += [sender.send("b", mark), sender.send("b", mark)]
        await turns()
        assert [n for n, _ in peer.calls] == [1, 1, 1]
        assert sender.most_in_flight == 2
        # A failure: its items fail, and the link is back to one batch at a time.
        peer.fail(1)
        await turns()
        assert isinstance(replies[1].exception(), NodeUnavailable)
        replies.append(sender.send("b", mark))
        await turns()
        assert len(peer.calls) == 3  # batch 2 in flight, the last answer a failure
        peer.answer(2)
        await turns()
        assert [n for n, _ in peer.calls] == [1, 1, 1, 3]  # the queued three, together
        replies.append(sender.send("b", mark))
        await turns()
        assert len(peer.calls) == 5  # answered again: two in flight
        peer.answer(3)
        peer.answer(4)
        await turns()
        assert [r.result() for r in replies if r is not replies[1]] == [ACK] * 6
    finally:
        tasks.cancel()
        await turns()


class Direct:
    """A ``start`` that takes batches while ``connected``; the test answers them."""

    def __init__(self) -> None:
        self.connected = False
        self.calls: list[tuple[int, Answered]] = []

    def __call__(self, peer: str, method: str, payload: bytes, timeout_s: float,
                 answered: Answered) -> bool:
        if self.connected:
            self.calls.append((len(decode_batch(payload).items), answered))
        return self.connected

    def answer(self, i: int) -> None:
        n, answered = self.calls[i]
        answered(encode(BatchReply((ACK,) * n)))


async def test_batches_leave_without_a_task_once_connected_and_fail_when_closed() -> None:
    peer, direct, tasks = Peer(), Direct(), TaskSet("test")
    sender = Sender("a", peer, ManualClock(), tasks, batch_max_bytes=1 << 20,
                    timeout_s=2.0, window=2, start=direct)
    got: list[Sequence[Reply] | PhoenixError] = []
    item = encode_item(Mark(1, Epoch(1, "a#1"), (("a", "b", "c"),)))
    try:
        # Not connected: a pump takes the batch through rpc (it dials).
        sender.send_all("b", [item], 64, got.append)
        assert (peer.calls, direct.calls) == ([], [])
        await turns()
        assert len(peer.calls) == 1
        peer.answer(0)
        await turns()
        assert got == [(ACK,)]
        # Connected and answered: each part leaves at once, two in flight, a third waits
        # and leaves from the answer's callback, with no loop turn between.
        direct.connected = True
        for _ in range(4):
            sender.send_all("b", [item], 64, got.append)
        assert [n for n, _ in direct.calls] == [1, 1]
        direct.answer(0)
        assert [n for n, _ in direct.calls] == [1, 1, 2] and len(got) == 2
        # Closing fails what is in flight; a late answer changes nothing.
        sender.close()
        assert [type(r) for r in got[2:]] == [NodeClosed] * 3  # both batches (1 + 2 parts)
        direct.answer(1)
        assert len(got) == 5 and len(peer.calls) == 1
    finally:
        tasks.cancel()
        await turns()


class FailFirst:
    """A replica's handler whose first batch fails (a connection that broke under it)
    and whose later batches are served: the next batch went on a new connection."""

    def __init__(self, handle: Callable[[str, bytes], Awaitable[bytes]]) -> None:
        self._handle = handle
        self.arrived = 0

    async def __call__(self, method: str, payload: bytes) -> bytes:
        self.arrived += 1
        if self.arrived == 1:
            raise NodeUnavailable("the connection broke", definite=False)
        return await self._handle(method, payload)


async def test_committed_waits_for_an_earlier_write_that_a_later_round_overtook(
        cluster: ReplicaCluster) -> None:
    """A write's batch to b is lost and the read's round reaches b after it; c holds
    both. b and a make the round's majority, but the write's own verdict waits for c:
    the read must not return the write as committed before it is, and when c fails it,
    the read fails as the write does."""
    a = cluster.nodes["a"]
    keys = same_partition_keys(1)
    p = partition_for(KIND, keys[0])
    gates = await gated(cluster, a, keys)
    b = FailFirst(cluster.nodes["b"].handle)
    cluster.net.attach("b", b)
    write = asyncio.create_task(a.commit(KIND, keys[0], Record(b"w", ())))
    for _ in range(200):
        if gates["c"].arrived == 1 and b.arrived == 1:
            break
        await asyncio.sleep(0)
    read = asyncio.create_task(a.committed(p))
    for _ in range(200):
        if b.arrived == 2:
            break
        await asyncio.sleep(0)
    await turns()
    assert b.arrived == 2  # the round reached b on the "new connection", and b took it
    assert not write.done()
    assert not read.done(), "the read returned a write whose verdict is still pending"
    # c never stores the write: it is not committed, and the read says so.
    cluster.net.cut(["a"], ["c"], both=False)
    gates["c"].open()
    clock = cluster.clock
    assert isinstance(clock, ManualClock)
    for _ in range(2):
        clock.advance(SETTINGS.rpc_timeout_s + 0.1)
        await turns()
    assert isinstance(write.exception(), NoQuorum)
    error = read.exception()
    assert isinstance(error, NotLeader) and error.definite
    assert a.leads(p) is None
