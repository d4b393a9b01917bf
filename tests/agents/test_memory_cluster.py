"""Agents on several whole nodes in one process: routing, de-duplication, replication,
rollback, casts and failover on the in-memory network, in virtual time
(``phoenix_cluster.testing.memory``).

Tests that leave the cluster as they found it share one cluster (``shared``); a test
that kills a node starts its own. A cluster lives through tens of virtual seconds
(probes, elections, timeouts) in about a second of wall time.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator

import pytest
from shared_cluster import SharedCluster as Shared
from shared_cluster import key_hosted_by, shared_cluster

import phoenix_cluster as phx
from phoenix_cluster._agents.kinds import KindSpec, kind_spec
from phoenix_cluster._agents.state import StateStore
from phoenix_cluster._node import NodeState
from phoenix_cluster._replication.types import Record
from phoenix_cluster._transport.base import PeerConnection
from phoenix_cluster._transport.memory import MemoryConnection, MemoryTransport
from phoenix_cluster._wire.codec import decode_payload, encode_payload
from phoenix_cluster._wire.messages import Call, Cast, Error, Redirect, Reply
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual, wait_for

REPLICATED_REPLIES = 32
"""The replies committed with each state change (``REPLICATED_REPLIES`` of the agent
runtime): a call resent after a failover is answered from them instead of running again."""

GATE = asyncio.Event()
"""Holds ``Gate.hold`` (the nodes share this process, so a test can open it)."""


class Tally(phx.Agent, kind="tests.memory.tally"):
    def __init__(self) -> None:
        self.total = 0
        self.runs = 0

    async def add(self, n: int) -> int:
        self.total += n
        self.runs += 1
        return self.total

    async def add_then_fail(self, n: int) -> int:
        self.total += n
        self.runs += 1
        raise ValueError(f"refusing {n}")

    async def add_unencodable(self, n: int) -> object:
        self.total += n
        self.runs += 1
        return object()  # no wire format carries it

    async def read(self) -> list[int]:
        return [self.total, self.runs]

    async def host(self) -> str:
        return str(self.node.name)


class Gate(phx.Agent, kind="tests.memory.gate", mailbox_limit=1):
    def __init__(self) -> None:
        self.notes: list[int] = []

    async def hold(self) -> None:
        await GATE.wait()

    async def note(self, n: int) -> None:
        self.notes.append(n)

    async def seen(self) -> list[int]:
        return self.notes


RESETS: list[Callable[[], object]] = []
"""What ``Flaky.add`` runs after changing its state (a test breaks a connection there)."""


class Flaky(phx.Agent, kind="tests.memory.flaky"):
    def __init__(self) -> None:
        self.total = 0
        self.runs = 0

    async def add(self, n: int) -> int:
        self.total += n
        self.runs += 1
        while RESETS:
            RESETS.pop()()
        return self.total

    async def read(self) -> list[int]:
        return [self.total, self.runs]


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    yield from shared_cluster(3)


_request_ids = itertools.count(7 << 50)  # far from any node's own sequence


async def send_add(probe: MemoryTransport, node: phx.Node, key: str, n: int,
                   request_id: int) -> int:
    """``Tally(key).add(n)`` as a hand-made frame with ``request_id``, to ``node``."""
    conn = await probe.connect(node.address or "")
    call = Call(request_id=request_id, kind="tests.memory.tally", key=key, method="add",
                payload=encode_payload([[n], {}]), timeout_ms=5000)
    answer = await conn.request(call, 5.0)
    assert isinstance(answer, Reply), answer
    result: int = decode_payload(answer.payload, int)
    return result


# ----------------------------------------------------------------------------- routing


def test_a_call_runs_on_the_owner_another_node(shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1, n2, n3 = cluster.nodes
        key = await key_hosted_by(n1, "n2", prefix="route-", kind=Tally)
        tally = n1.ref(Tally, key)
        here, there = n1.statistics().agents.active_agents, n2.statistics().agents.active_agents
        assert await tally.add(2) == 2
        assert await tally.add(3) == 5
        assert await tally.host() == "n2"
        assert n1.statistics().agents.active_agents == here  # nothing ran on the caller
        assert n2.statistics().agents.active_agents == there + 1
        # Any node reaches the same activation.
        assert await n3.ref(Tally, key).read() == [5, 2]

    shared.run(scenario)


def test_a_resent_request_id_runs_once_on_the_owner(shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, "n3", prefix="dedup-", kind=Tally)
        owner = cluster.node("n3")
        probe = cluster.wire_client("probe-dedup")
        rid = next(_request_ids)
        assert await send_add(probe, owner, key, 5, rid) == 5
        assert await send_add(probe, owner, key, 5, rid) == 5  # the first run's answer
        assert await send_add(probe, owner, key, 1, next(_request_ids)) == 6  # a new id runs
        assert await n1.ref(Tally, key).read() == [6, 2]
        await probe.aclose()

    shared.run(scenario)


def test_a_call_whose_connection_breaks_is_resent_and_runs_once(shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, "n2", prefix="reset-", kind=Flaky)
        flaky = n1.ref(Flaky, key)
        assert await flaky.add(1) == 1
        # The handler runs, then the connection breaks before the reply leaves n2: the
        # caller cannot know it ran, resends the same request id on a new connection,
        # and the owner answers from its de-duplication window.
        RESETS.append(lambda: cluster.network.disconnect("n1", "n2"))
        assert await flaky.add(2) == 3
        assert not RESETS  # the reset did happen
        assert await flaky.read() == [3, 2]

    shared.run(scenario)


def test_a_definite_refusal_after_a_resend_is_reported_as_indefinite(
    shared: Shared,
) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        # A scripted owner (a bare transport on the network, nothing distributed about
        # it): the first attempt reaches it and the connection breaks before the answer,
        # as when the owner ran the call and then paused or crashed; the resend is
        # refused definitely (Overloaded: this attempt queued nothing). The caller must
        # not report "nothing happened": the first attempt may have run.
        attempts: list[int] = []

        async def owner(peer: PeerConnection, msg: Call | Cast) -> Error | None:
            attempts.append(msg.request_id)
            if len(attempts) == 1:
                assert isinstance(peer, MemoryConnection)
                peer.fail("reset after the call arrived")
                return None
            return Error(request_id=msg.request_id, code="overloaded",
                         message="mailbox full", definite=True)

        probe = cluster.wire_client("scripted-owner")
        fake = cluster.network.transport("scripted-owner", 1, probe.secret, env=probe.env,
                                         bus=probe.bus, max_frame_bytes=8 << 20,
                                         handler=owner)
        address = await fake.start("127.0.0.1:0")
        n1 = cluster.nodes[0]
        router = n1._runtime.router
        assert router is not None
        spec = kind_spec(Tally)
        rid = n1._runtime.next_request_id()
        with pytest.raises(phx.Overloaded) as caught:
            await router.call(spec, "scripted", spec.methods["add"],
                              encode_payload([[1], {}]), 5.0, rid, address)
        assert attempts == [rid, rid]  # the same request id, resent once
        assert caught.value.definite is False
        assert "may have run" in caught.value.message
        await fake.aclose()

    shared.run(scenario)


attempts_of: dict[str, list[int]] = {}
"""Request ids each scripted owner was sent, in order."""


async def _scripted_owner(
        cluster: MemoryCluster, name: str,
        answers: Callable[[int, int], Error | Reply]) -> tuple[MemoryTransport, str]:
    """A bare transport (nothing distributed about it) that answers the ``n``-th call it
    gets (from 0) with ``answers(n, request_id)``; ``attempts_of[name]`` lists them."""
    attempts = attempts_of[name] = []

    async def owner(peer: PeerConnection, msg: Call | Cast) -> Error | Reply:
        attempts.append(msg.request_id)
        return answers(len(attempts) - 1, msg.request_id)

    probe = cluster.wire_client(f"{name}-probe")
    fake = cluster.network.transport(name, 1, probe.secret, env=probe.env, bus=probe.bus,
                                     max_frame_bytes=8 << 20, handler=owner)
    return fake, await fake.start("127.0.0.1:0")


@pytest.mark.parametrize(("code", "definite"), [
    ("not_leader", False),  # fenced while it committed: the change may be stored
    ("no_quorum", False),  # its quorum broke while it committed
    ("node_unavailable", True),  # a previous holder did not answer its release
], ids=["fenced-mid-commit", "quorum-lost-mid-commit", "holder-unreachable"])
def test_a_call_refused_while_its_partition_changes_hands_is_sent_again_with_its_id(
        shared: Shared, monkeypatch: pytest.MonkeyPatch, code: str, definite: bool) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        # The owner answers the first attempt with the error, the second with a reply (as
        # the next leader does: from its replicated reply window when the first attempt's
        # change was adopted, by running it when not). The caller gets the reply.
        name = f"scripted-{code}"
        fake, address = await _scripted_owner(
            cluster, name, lambda attempt, rid: Error(
                request_id=rid, code=code, message="moving", definite=definite)
            if attempt == 0 else Reply(rid, encode_payload(7)))
        router = cluster.nodes[0]._runtime.router
        assert router is not None

        async def still_there(*_: object) -> str:
            return address  # the next leader answers at the same address

        monkeypatch.setattr(router, "_reroute", still_there)
        spec = kind_spec(Tally)
        rid = cluster.nodes[0]._runtime.next_request_id()
        result = await router.call(spec, "scripted", spec.methods["add"],
                                   encode_payload([[1], {}]), 5.0, rid, address)
        assert result == 7
        assert attempts_of[name] == [rid, rid]  # the same request id: at most once
        await fake.aclose()

    shared.run(scenario)


def test_a_call_fenced_mid_commit_until_its_deadline_stays_indefinite(
        shared: Shared, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        # Every attempt meets an owner that lost its lead while it committed: sent again
        # until the deadline, and then the caller learns the outcome is unknown.
        name = "scripted-fenced-always"
        fake, address = await _scripted_owner(
            cluster, name, lambda attempt, rid: Error(
                request_id=rid, code="not_leader", message="fenced", definite=False))
        router = cluster.nodes[0]._runtime.router
        assert router is not None

        async def still_there(*_: object) -> str:
            return address

        monkeypatch.setattr(router, "_reroute", still_there)
        spec = kind_spec(Tally)
        rid = cluster.nodes[0]._runtime.next_request_id()
        with pytest.raises(phx.NotLeader) as caught:
            await router.call(spec, "scripted", spec.methods["add"],
                              encode_payload([[1], {}]), 0.5, rid, address)
        assert caught.value.definite is False
        assert len(attempts_of[name]) >= 3
        assert set(attempts_of[name]) == {rid}
        await fake.aclose()

    shared.run(scenario)


@pytest.mark.parametrize("stored", [True, False], ids=["kept-by-the-quorum", "not-stored"])
def test_a_local_call_fenced_mid_commit_is_sent_again_with_its_id_and_runs_once(
        shared: Shared, monkeypatch: pytest.MonkeyPatch, stored: bool) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        # The caller is the owner itself. Its commit is fenced after the quorum stored
        # the change (or before it stored anything): the same request id goes again,
        # and the agent, activated again from its replicas, answers from the reply
        # window committed with the change, or runs it when nothing was stored.
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, "n1", prefix=f"local-fence-{stored}-", kind=Tally)
        tally = n1.ref(Tally, key)
        assert await tally.add(1) == 1
        state = n1._runtime.state
        real_commit = StateStore.commit
        fenced: list[str] = []

        async def fenced_once(self: StateStore, spec: KindSpec, key_: str, record: Record,
                              route: str) -> None:
            if self is not state or key_ != key or fenced:
                return await real_commit(self, spec, key_, record, route)
            if stored:
                await real_commit(self, spec, key_, record, route)
            fenced.append(key_)
            raise phx.NotLeader("fenced while it committed", definite=False)

        monkeypatch.setattr(StateStore, "commit", fenced_once)
        assert await tally.add(10) == 11
        assert fenced == [key]
        assert await tally.read() == [11, 2]  # ran once, whichever way

    shared.run(scenario)


def test_the_runtime_reaches_the_parts_its_node_built_after_it(shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        for node in cluster.nodes:
            runtime, stack = node._runtime, node._stack
            # One seam given at construction; the parts were built on the runtime.
            assert runtime.cluster is stack and runtime.state.cluster is stack
            assert stack.router is not None and stack.placement is not None
            assert runtime.router is stack.router and stack.router.runtime is runtime
            assert runtime.placement is stack.placement is stack.router.placement
            assert stack.placement.runtime is runtime
            assert runtime.replicator is stack.replicator is not None
            with pytest.raises(AttributeError):
                runtime.router = None  # type: ignore[misc]  # read-only: no late wiring

    shared.run(scenario)


def test_a_call_sent_to_a_node_that_does_not_host_the_key_is_redirected(
        shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1, n2, _ = cluster.nodes
        key = await key_hosted_by(n1, "n2", prefix="redirect-", kind=Tally)
        probe = cluster.wire_client("probe-redirect")
        conn = await probe.connect(n1.address or "")
        call = Call(request_id=next(_request_ids), kind="tests.memory.tally", key=key,
                    method="add", payload=encode_payload([[1], {}]), timeout_ms=5000)
        answer = await conn.request(call, 5.0)
        assert isinstance(answer, Redirect), answer
        assert (answer.owner, answer.address) == ("n2", n2.address)
        assert await n1.ref(Tally, key).read() == [0, 0]  # nothing ran anywhere
        await probe.aclose()

    shared.run(scenario)


@pytest.mark.parametrize(("payload", "method", "codes"), [
    # The owner checks what a peer sends before queueing it (check_payload).
    (b"\xc1", "add", {"serialization_error"}),  # not msgpack at all
    (encode_payload([["five"], {}]), "add", {"serialization_error"}),  # add(n: int)
    (encode_payload({"n": 1}), "add", {"serialization_error"}),  # not [args, kwargs]
    (encode_payload([[1], {}]), "no_such_method", {"agent_not_found"}),
], ids=["garbage", "wrong-type", "not-args-kwargs", "unknown-method"])
def test_a_malformed_call_gets_a_definite_error_and_the_owner_keeps_serving(
        shared: Shared, payload: bytes, method: str, codes: set[str]) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, "n3", Tally,
                                  prefix=f"bad-{method}-{len(payload)}-")
        probe = cluster.wire_client(f"probe-bad-{len(payload)}-{method}")
        conn = await probe.connect(cluster.node("n3").address or "")
        call = Call(request_id=next(_request_ids), kind="tests.memory.tally", key=key,
                    method=method, payload=payload, timeout_ms=5000)
        answer = await conn.request(call, 5.0)
        assert isinstance(answer, Error), answer
        assert answer.code in codes, answer
        assert answer.definite is True  # nothing was applied
        assert conn.is_open  # bad input costs the sender one answer, not the connection
        assert await n1.ref(Tally, key).add(1) == 1
        await probe.aclose()

    shared.run(scenario)


def test_a_handler_that_raises_is_rolled_back_on_the_owner(shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, "n2", prefix="raise-", kind=Tally)
        tally = n1.ref(Tally, key)
        assert await tally.add(1) == 1
        with pytest.raises(phx.AgentError) as info:
            await tally.add_then_fail(100)
        assert info.value.remote_type.endswith("ValueError")
        assert info.value.definite is True
        assert await tally.read() == [1, 1]  # neither the total nor the run counter moved
        assert await tally.add(1) == 2  # and the agent still serves

    shared.run(scenario)


def test_a_migrated_agent_keeps_its_state_and_calls_follow_it(shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, "n2", prefix="migrate-", kind=Tally)
        tally = n1.ref(Tally, key)
        assert await tally.add(4) == 4
        await n1.migrate(tally, to="n3")
        assert await n1.where(tally) == "n3"
        assert await cluster.nodes[1].where(tally) == "n3"  # the old host knows too
        assert await tally.host() == "n3"
        assert await tally.read() == [4, 1]  # moved with its state, nothing re-ran
        assert await tally.add(1) == 5

    shared.run(scenario)


def test_an_agent_moved_to_a_node_drops_that_nodes_stale_pin_to_another_host(
        shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        # n3 keeps a pin naming n1, as an earlier holder's claim leaves it while n3 was
        # the agent's home (views disagree after a heal). Once the agent is moved to n3
        # the pin is stale: kept, it would send callers to n1 whenever n3 is the home
        # again and has let the agent go, and n1's tombstone would send them back (a
        # redirect loop for the tombstone's lifetime).
        n1, _, n3 = cluster.nodes
        key = await key_hosted_by(n1, "n2", prefix="stale-pin-", kind=Tally)
        tally = n1.ref(Tally, key)
        assert await tally.add(3) == 3
        placement = n3._stack.placement
        assert placement is not None
        pins = placement.directory.pins
        pins[("tests.memory.tally", key)] = "n1"
        await n1.migrate(tally, to="n3")
        assert await tally.host() == "n3"
        assert ("tests.memory.tally", key) not in pins
        assert await tally.add(1) == 4

    shared.run(scenario)


@pytest.mark.parametrize("owner", ["n1", "n2"], ids=["local", "remote"])
def test_a_result_that_cannot_be_encoded_is_definite_and_rolled_back(
        shared: Shared, owner: str) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, owner, prefix=f"unencodable-{owner}-", kind=Tally)
        tally = n1.ref(Tally, key)
        assert await tally.add(2) == 2
        with pytest.raises(phx.SerializationError) as info:
            await tally.add_unencodable(40)
        assert info.value.definite is True
        assert await tally.read() == [2, 1]

    shared.run(scenario)


def test_a_call_that_outlives_its_timeout_is_indefinite_and_still_runs(
        shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, "n3", prefix="slow-", kind=Gate)
        gate = n1.ref(Gate, key)
        GATE.clear()
        try:
            with pytest.raises(phx.CallTimeout) as info:
                await gate.options(timeout=0.5).hold()
            assert info.value.definite is False  # it may have run (it is running)
            await gate.note.cast(7)  # queued behind the running call
        finally:
            GATE.set()
        assert await gate.seen() == [7]  # the timed-out call finished; the cast ran after

    shared.run(scenario)


# ----------------------------------------------------------------------------- casts


def test_a_remote_cast_is_acknowledged_once_queued_or_refused_when_full(
        shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, "n2", prefix="cast-", kind=Gate)
        gate = n1.ref(Gate, key).options(timeout=0.5)
        GATE.clear()
        try:
            await gate.hold.cast()  # acknowledged: queued on n2; it starts and blocks
            await gate.note.cast(1)  # acknowledged: waits in the mailbox (limit 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(phx.Overloaded) as info:
                await gate.note.cast(2)  # no room within the timeout: refused
            assert info.value.definite is True  # never queued, never runs
            assert 0.3 < loop.time() - started <= 0.5  # it waited for room, up to the timeout
        finally:
            GATE.set()
        assert await gate.seen() == [1]
        await gate.note.cast(3)
        assert await gate.seen() == [1, 3]

    shared.run(scenario)


def test_a_cast_to_a_method_the_kind_lacks_is_refused_before_sending(shared: Shared) -> None:
    async def scenario(cluster: MemoryCluster) -> None:
        n1 = cluster.nodes[0]
        key = await key_hosted_by(n1, "n3", prefix="nomethod-", kind=Gate)
        with pytest.raises(phx.AgentNotFound):
            await n1.ref(Gate, key).missing.cast()
        assert await n1.ref(Gate, key).seen() == []

    shared.run(scenario)


# ----------------------------------------------------------------------------- failover


def test_a_killed_node_s_keys_fail_over_with_their_committed_state() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            keys = [await key_hosted_by(n1, "n3", prefix=f"f{i}-", kind=Tally) for i in range(3)]
            for i, key in enumerate(keys):
                assert await n1.ref(Tally, key).add(10 + i) == 10 + i
            with pytest.raises(phx.AgentError):
                await n1.ref(Tally, keys[0]).add_then_fail(1000)
            cluster.kill("n3")
            await cluster.wait_settled()
            for i, key in enumerate(keys):
                tally = n1.ref(Tally, key)
                assert await n1.where(tally) in ("n1", "n2")
                # The committed state survived, the rolled-back change was never
                # replicated, and nothing ran twice.
                assert await tally.read() == [10 + i, 1]
                assert await tally.host() in ("n1", "n2")

    run_virtual(main())


def test_a_call_resent_after_failover_is_answered_from_the_replicated_window() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            key = await key_hosted_by(n1, "n3", prefix="window-", kind=Tally)
            probe = cluster.wire_client()
            calls = REPLICATED_REPLIES + 8
            rids = [next(_request_ids) for _ in range(calls)]
            for i, rid in enumerate(rids):
                assert await send_add(probe, cluster.node("n3"), key, 1, rid) == i + 1
            cluster.kill("n3")
            await cluster.wait_settled()
            new_owner = cluster.node(await n1.where(n1.ref(Tally, key)))
            assert new_owner.name in ("n1", "n2")
            # Every call in the window gets its first answer back and does not run again.
            window = rids[-REPLICATED_REPLIES:]
            for rid in reversed(window):
                assert await send_add(probe, new_owner, key, 1, rid) == rids.index(rid) + 1
            assert await n1.ref(Tally, key).read() == [calls, calls]
            # Older than the window: the new owner cannot know it ran, so it runs again.
            assert await send_add(probe, new_owner, key, 1, rids[0]) == calls + 1
            await probe.aclose()

    run_virtual(main())


def test_a_joining_node_takes_over_its_keys_with_their_state() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            keys = [f"move-{i}" for i in range(30)]
            for i, key in enumerate(keys):
                assert await n1.ref(Tally, key).add(i) == i
            n4 = await cluster.add("n4")
            await cluster.wait_settled()
            joined = [key for key in keys if await n1.where(n1.ref(Tally, key)) == "n4"]
            assert joined  # the ring gave the newcomer some of these keys
            # The rebalancer hands them over (state included) before anyone calls them.
            await wait_for(lambda: n4.statistics().agents.active_agents == len(joined),
                           30.0, what="n4 taking over its keys")
            for i, key in enumerate(keys):
                tally = n1.ref(Tally, key)
                assert await tally.read() == [i, 1], key  # the state moved; nothing re-ran
                assert (await tally.host() == "n4") == (key in joined)

    run_virtual(main())


def test_a_write_no_majority_stored_fails_indefinite_and_never_shows() -> None:
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            key = await key_hosted_by(n1, "n2", prefix="quorum-", kind=Tally)
            assert await n1.ref(Tally, key).add(1) == 1
            probe = cluster.wire_client()  # on no side of the cut: it reaches n2
            conn = await probe.connect(cluster.node("n2").address or "")
            cluster.network.cut({"n2"}, {"n1", "n3"})
            call = Call(request_id=next(_request_ids), kind="tests.memory.tally", key=key,
                        method="add", payload=encode_payload([[5], {}]), timeout_ms=20_000)
            answer = await conn.request(call, 20.0)
            # Only n2 stored it: the caller learns the outcome is unknown.
            assert isinstance(answer, Error), answer
            assert (answer.code, answer.definite) == ("no_quorum", False)
            # The majority removes n2 (split-brain resolution) before the cut heals...
            def majority_downed_n2() -> bool:
                decision = n1.status().last_decision
                return decision is not None and "n2" in decision.down

            await wait_for(majority_downed_n2, 60.0, what="n1 deciding to down n2")
            cluster.network.heal()
            # ...so n2, back in touch, learns it and stops rather than serve stale state.
            reason = await cluster.node("n2").wait_stopped()
            assert reason.startswith("downed by split-brain resolution")
            await cluster.wait_settled()
            tally = n1.ref(Tally, key)
            assert await n1.where(tally) in ("n1", "n3")
            assert await tally.read() == [1, 1]  # the minority's write never surfaced
            await probe.aclose()

    run_virtual(main())


def test_writes_after_a_cut_node_heals_do_not_wait_for_its_elections() -> None:
    # One node cut until the others declare it dead (plus a second), then healed, as in
    # benchmarks/cut_and_heal.py. Right after the heal the views disagree for a moment
    # (the healed node sees one member before the other, and before they see it). Its
    # background elections on that partial table used to depose the working leaders
    # and fail, and writes waited until the views agreed: 0.62 s here, and 16 to 22 calls
    # failed with NoQuorum (on a loaded machine, past a call's timeout). Background
    # elections now ask first, a read-only pre-vote (docs/design/replication.md,
    # "Background elections ask first").
    bound_s = 0.25

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with MemoryCluster(3, seed=0) as cluster:
            client = await cluster.add("c", role="client")
            await cluster.wait_settled()
            stop = asyncio.Event()
            calls: list[tuple[float, float, str]] = []  # (sent, took, error)

            async def write(key: str) -> None:
                tally = client.ref(Tally, key).options(timeout=1.0)
                while not stop.is_set():
                    sent = loop.time()
                    try:
                        await tally.add(1)
                        error = ""
                    except phx.PhoenixError as exc:
                        error = f"{type(exc).__name__}: {exc}"
                    calls.append((sent, loop.time() - sent, error))
                    await asyncio.sleep(0.05 if error else 0.01)

            async with asyncio.TaskGroup() as writers:
                for i in range(30):
                    writers.create_task(write(f"k{i}"))
                await asyncio.sleep(2.0)
                everyone = {n.name for n in cluster.nodes}
                cluster.network.cut({"n3"}, everyone - {"n3"})
                others = [cluster.node("n1"), cluster.node("n2")]
                await wait_for(lambda: all(n.ring is not None and "n3" not in n.ring.members
                                           for n in others), 30.0, what="n3 declared dead")
                await asyncio.sleep(1.0)
                cluster.network.heal()
                healed = loop.time()
                await wait_for(lambda: all(n.ring is not None and "n3" in n.ring.members
                                           for n in [*others, cluster.node("n3")]),
                               30.0, what="every member seeing n3 again")
                await asyncio.sleep(4.0)
                stop.set()
            after = [(took, error) for sent, took, error in calls if sent >= healed]
            assert len(after) > 1000  # the writers kept writing after the heal
            assert [error for _, error in after if error] == []
            assert max(took for took, _ in after) <= bound_s
            assert all(n.state is NodeState.RUNNING for n in cluster.nodes)

    run_virtual(main())


def test_wait_for_names_what_did_not_hold() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError, match="the moon"):
            await wait_for(lambda: False, 5.0, what="the moon")
        assert asyncio.get_running_loop().time() == pytest.approx(5.0, abs=0.1)

    run_virtual(main())


def test_virtual_time_runs_a_minute_of_timers_in_no_wall_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(60.0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30.0):
                await asyncio.Event().wait()
        return loop.time()

    assert run_virtual(main()) == pytest.approx(90.0)
