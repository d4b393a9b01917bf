"""Fault injection on a LocalCluster: the mechanics of partitions, isolation, a flapping
link and SIGSTOP (rules added, counted and removed, also when the body raises; a clear
error without iptables).

Membership is dynamic: after a cut lasting a few seconds, SWIM declares the other side
dead, the rings re-home its keys and the split-brain resolver downs the minority
(tests/cluster/test_split_brain.py covers all that). These tests keep each fault short,
under a second: a call across the cut sent right after it fails (a suspect is only
declared dead at least 1.5 s after a failed probe, so no key has moved yet), and
after ``heal``/``resume`` the same keys answer again. ``stable_after`` is raised so the
resolver stays out of the way on a loaded machine.
Network faults need root and iptables; without them these tests skip (fail under ``CI``).
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
from cluster_agents import Tally

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster, wait_until

pytestmark = pytest.mark.slow

ENV = {"PHX_SPLIT_BRAIN_STABLE_AFTER_S": "60"}
# Short enough that the fault is over before membership could declare anyone dead.
CUT_CALL_TIMEOUT_S = 0.5
CALL_TIMEOUT_S = 1.0
UNREACHABLE = (phx.NodeUnavailable, phx.CallTimeout)
# Reconnect after heal: TCP retransmission backoff on the open connection (seconds) or,
# if it was dropped, a fresh dial; a circuit breaker opened by failed dials waits out
# its 5 s cooldown (_transport/peers.py). Well within this deadline.
RECOVERY_S = 15.0


def require_network_faults() -> None:
    reason = LocalCluster.network_faults_unavailable()
    if reason is not None:
        pytest.skip(reason)


def iptables(*args: str) -> str:
    exe = shutil.which("iptables", path="/usr/sbin:/sbin:/usr/bin:/bin")
    assert exe is not None
    return subprocess.run([exe, "-w", *args], capture_output=True, text=True,
                          check=True).stdout


def iptables_rules_tagged(tag: str) -> list[str]:
    return [line for line in iptables("-S").splitlines() if tag in shlex.split(line)]


async def eventually(probe: Callable[[], Awaitable[object]], *, timeout: float,
                     what: str) -> None:
    """Retry ``probe`` until it stops raising NodeUnavailable/CallTimeout, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await probe()
            return
        except UNREACHABLE as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout}s") from exc
            await asyncio.sleep(0.1)  # a fast failure (open breaker) must not spin


async def owners_by_node(client: phx.Node, cluster: LocalCluster,
                         per_node: int = 1) -> dict[str, list[str]]:
    """``per_node`` keys owned by each node, found by asking the agents where they live."""
    found: dict[str, list[str]] = {n.name: [] for n in cluster.nodes}
    for i in range(200):
        key = f"k{i}"
        owner = await client.ref(Tally, key).where()
        if len(found[owner]) < per_node:
            found[owner].append(key)
        if all(len(keys) == per_node for keys in found.values()):
            return found
    raise AssertionError(f"no {per_node} keys per node among 200: {found}")


async def assert_cut(client: phx.Node, key: str) -> None:
    """A call from ``client`` to ``key`` fails: its owner is on the other side of a cut
    (or paused). ``add(0)``: a call that timed out may still run once the fault heals."""
    started = time.monotonic()
    with pytest.raises(UNREACHABLE):
        await client.ref(Tally, key).options(timeout=CUT_CALL_TIMEOUT_S).add(0)
    assert time.monotonic() - started < 5


async def add(client: phx.Node, key: str, n: int = 1) -> int:
    return int(await client.ref(Tally, key).options(timeout=CALL_TIMEOUT_S).add(n))


def process_state(cluster: LocalCluster, index: int) -> str:
    """The kernel's one-letter state of node ``index``'s process (``T``: stopped)."""
    process = cluster.nodes[index].process
    assert process is not None
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


async def test_partition_cuts_calls_across_it_and_heal_restores_them() -> None:
    require_network_faults()
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        hosts = {n.host for n in cluster.nodes}
        assert len(hosts) == 3  # one loopback address per node
        majority_client = await cluster.client()
        minority_client = await cluster.client()
        keys = await owners_by_node(majority_client, cluster)
        # Both clients are connected to every node before the cut.
        for key in [k for ks in keys.values() for k in ks]:
            assert await add(majority_client, key) == 1
            assert await add(minority_client, key, 0) == 1
        assert cluster.firewall_rules() == []

        cluster.partition([0, minority_client], [1, 2, majority_client])
        # every pair across the cut, both directions: 2 x 3 pairs x 2
        assert len(iptables_rules_tagged(cluster.tag)) == 12
        assert len(cluster.firewall_rules()) == 12
        await asyncio.gather(
            assert_cut(majority_client, keys["node-0"][0]),
            assert_cut(minority_client, keys["node-1"][0]),
            assert_cut(minority_client, keys["node-2"][0]),
        )
        cluster.heal()
        assert iptables_rules_tagged(cluster.tag) == []
        assert cluster.firewall_rules() == []

        for key in [k for ks in keys.values() for k in ks]:
            for client in (majority_client, minority_client):
                await eventually(partial(add, client, key, 0), timeout=RECOVERY_S,
                                 what=f"{key} from {client.name} after heal")
            # Nobody was declared dead: no key moved, every activation kept its state.
            assert await add(majority_client, key) == 2
        await cluster.wait_converged()

        cluster.partition([2])  # node 2 against everyone else, and again healed by aclose
        assert len(iptables_rules_tagged(cluster.tag)) == 2 * 4  # 2 nodes + 2 clients
    assert iptables_rules_tagged(cluster.tag) == []


async def test_pause_stops_the_process_and_resume_brings_its_keys_back() -> None:
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        client = await cluster.client()
        keys = await owners_by_node(client, cluster)
        for key in [k for ks in keys.values() for k in ks]:
            assert await add(client, key) == 1

        cluster.pause(1)
        try:
            await wait_until(lambda: process_state(cluster, 1) == "T", timeout=5,
                             what="node-1 to stop")  # signals arrive asynchronously
            await assert_cut(client, keys["node-1"][0])
        finally:
            cluster.resume(1)
        await wait_until(lambda: process_state(cluster, 1) != "T", timeout=5,
                         what="node-1 to run again")
        assert await add(client, keys["node-0"][0]) == 2
        # Back before anyone declared it dead: same owner, same activation, same state.
        await eventually(partial(add, client, keys["node-1"][0], 0), timeout=RECOVERY_S,
                         what="node-1's key after SIGCONT")
        assert await client.ref(Tally, keys["node-1"][0]).where() == "node-1"
        assert await add(client, keys["node-1"][0]) == 2
        await cluster.wait_converged()


async def test_isolate_and_flap_leave_no_rules_behind() -> None:
    require_network_faults()
    async with LocalCluster(nodes=3, imports=["cluster_agents"], env=ENV) as cluster:
        client = await cluster.client()
        keys = await owners_by_node(client, cluster)

        cluster.isolate(2)
        assert len(iptables_rules_tagged(cluster.tag)) == 2
        await assert_cut(client, keys["node-2"][0])
        cluster.heal()
        assert iptables_rules_tagged(cluster.tag) == []
        assert await add(client, keys["node-0"][0], 0) == 0
        await eventually(partial(add, client, keys["node-2"][0], 0), timeout=RECOVERY_S,
                         what="node-2 after isolation healed")

        # The link 0 <-> 1 goes down and up; the client's links are never touched.
        flapping = asyncio.create_task(cluster.flap(0, 1, period_s=0.4, duration_s=1.2))
        seen_down = False
        while not flapping.done():
            seen_down = seen_down or len(iptables_rules_tagged(cluster.tag)) == 2
            await asyncio.sleep(0.05)
        assert await flapping >= 2
        assert seen_down
        assert iptables_rules_tagged(cluster.tag) == []
        for key in (keys["node-0"][0], keys["node-1"][0]):
            await eventually(partial(add, client, key, 0), timeout=RECOVERY_S,
                             what=f"{key} after the flapping")

        # A flap still running when the cluster closes is cancelled; its rules go too.
        flapping = asyncio.create_task(cluster.flap([0], [1, 2], duration_s=60))
        await wait_until(lambda: bool(iptables_rules_tagged(cluster.tag)), timeout=10,
                         what="the link going down")
    assert flapping.cancelled()
    assert iptables_rules_tagged(cluster.tag) == []


async def test_rules_are_removed_when_the_body_raises() -> None:
    require_network_faults()
    # A rule left by a test process that died without cleaning up (pid beyond pid_max).
    stale = "phx-lc-4194305-deadbeef"
    iptables("-I", "INPUT", "-s", "127.254.254.254", "-d", "127.254.254.253",
             "-m", "comment", "--comment", stale, "-j", "DROP")
    cluster = LocalCluster(nodes=2, imports=["cluster_agents"])

    async def body() -> None:
        async with cluster:
            cluster.partition([0], [1])
            assert len(iptables_rules_tagged(cluster.tag)) == 2
            assert iptables_rules_tagged(stale) == []  # swept by the first fault
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await body()
    assert iptables_rules_tagged(cluster.tag) == []
    with pytest.raises(RuntimeError, match="closed"):
        cluster.partition([0], [1])


async def test_partition_without_iptables_raises_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from phoenix_cluster.testing import _firewall

    monkeypatch.setattr(_firewall.Firewall, "command", "phx-no-such-iptables")
    cluster = LocalCluster(nodes=1)  # the check comes before any process is needed
    try:
        assert "not installed" in (LocalCluster.network_faults_unavailable() or "")
        with pytest.raises(RuntimeError, match="not installed"):
            cluster.partition([0], ["127.0.0.1"])
        with pytest.raises(RuntimeError, match="not installed"):
            await cluster.flap(0, "127.0.0.1", duration_s=1)
    finally:
        await cluster.aclose()


@pytest.mark.parametrize(("listen", "peer", "expected"), [
    ("127.0.0.11:7100", "127.0.0.12", ("127.0.0.11", 0)),  # a node's own loopback address
    ("127.0.0.11:7100", "localhost", ("127.0.0.11", 0)),
    ("10.0.0.5:7100", "10.0.1.7", ("10.0.0.5", 0)),  # one address of a multi-homed host
    ("10.0.0.5:7100", "peer.example", ("10.0.0.5", 0)),
    ("0.0.0.0:7100", "10.0.1.7", None),  # wildcard: the OS chooses
    ("[::]:7100", "::1", None),
    ("127.0.0.1:7100", "10.0.1.7", None),  # loopback cannot reach out
    ("127.0.0.1:7100", "peer.example", None),
    ("[::1]:7100", "127.0.0.1", None),  # other family
    ("localhost:7100", "127.0.0.1", None),
    (None, "127.0.0.1", None),  # not listening (a client without an address)
])
def test_dials_leave_from_the_listen_address(
    listen: str | None, peer: str, expected: tuple[str, int] | None
) -> None:
    from phoenix_cluster._transport.tcp import source_address

    assert source_address(listen, peer) == expected
