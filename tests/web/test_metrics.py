"""Prometheus metrics of in-process nodes: fed by telemetry, read at scrape, valid text."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from web_agents import Meter
from web_helpers import get

import phoenix_cluster as phx
from phoenix_cluster._agents.flow import DROP_REASONS, report_drop
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus, default_bus
from phoenix_cluster._web.histogram import Buckets, quantile
from phoenix_cluster.testing import wait_until

COOKIE = "web-metrics-test-cookie"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(node: phx.Node) -> Samples:
    assert node.http_url is not None
    status, headers, body = await get(node.http_url + "metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), math.nan)


@pytest.fixture
async def node() -> AsyncIterator[phx.Node]:
    async with phx.Node(name="met-a", listen="127.0.0.1:0", http="127.0.0.1:0",
                        cookie=COOKIE, telemetry=TelemetryBus()) as n:
        await n.wait_caught_up()  # ready: every partition elected
        yield n


async def test_agent_metrics_follow_calls(node: phx.Node) -> None:
    for i in range(30):
        await node.ref(Meter, f"m{i % 3}").add(i)
    with pytest.raises(phx.AgentError):
        await node.ref(Meter, "m0").fail()
    s = await scrape(node)
    assert value(s, "phoenix_agents_active") == 3
    assert value(s, "phoenix_agents_passive") == 0
    assert value(s, "phoenix_mailbox_depth") == 0
    assert value(s, "phoenix_agent_activations_total", kind="web.meter") == 3
    assert value(s, "phoenix_agent_messages_total", kind="web.meter", outcome="ok") == 30
    assert value(s, "phoenix_agent_messages_total", kind="web.meter", outcome="error") == 1
    assert value(s, "phoenix_agent_call_duration_seconds_count", kind="web.meter") == 30
    assert value(s, "phoenix_agent_call_duration_seconds_bucket", kind="web.meter",
                 le="+Inf") == 30
    assert value(s, "phoenix_agent_start_duration_seconds_count", kind="web.meter") == 3
    assert 0 < value(s, "phoenix_agent_call_duration_seconds_sum", kind="web.meter") < 1
    assert value(s, "phoenix_cluster_nodes", status="alive", role="member") == 1
    assert value(s, "phoenix_cluster_nodes", status="dead", role="member") == 0
    assert value(s, "phoenix_ring_share") == pytest.approx(1.0)
    assert value(s, "phoenix_node_ready") == 1
    assert value(s, "phoenix_node_info", name="met-a", role="member",
                 version=phx.__version__, address=str(node.address)) == 1
    assert value(s, "process_resident_memory_bytes") > 0


async def test_registry_pubsub_and_replication_events_feed_their_metrics(node: phx.Node) -> None:
    # Emitted the way the registry and the replication layer report (docs/monitoring.md).
    for d in (0.0002, 0.003, 0.2):
        node.telemetry.execute(events.REGISTRY_LOOKUP, {"duration": d},
                               {"node": node.name, "found": True})
    node.telemetry.execute(events.REPLICATION_COMMITTED, {"duration": 0.004},
                           {"node": node.name, "kind": "web.meter"})
    node.telemetry.execute(events.REPLICATION_COMMITTED, {"duration": 9.0},
                           {"node": "somebody-else", "kind": "web.meter"})
    bus = node.telemetry
    bus.execute(events.REGISTRY_REGISTERED, {"duration": 0.002}, {"node": node.name,
                                                                  "name": "n"})
    bus.execute(events.REGISTRY_NAME_CONFLICT, {}, {"node": node.name, "name": "n",
                                                    "winner": "a", "loser": "b"})
    bus.execute(events.PUBSUB_PUBLISHED, {"nodes": 3.0}, {"node": node.name, "topic": "t"})
    bus.execute(events.PUBSUB_DELIVERED, {"subscribers": 4.0}, {"node": node.name,
                                                                "topic": "t"})
    bus.execute(events.PUBSUB_DROPPED, {"messages": 2.0}, {"node": node.name, "topic": "t",
                                                           "reason": "queue_full"})
    bus.execute(events.REPLICATION_EPOCH_CHANGED, {"duration": 0.01, "adopted": 0.0},
                {"node": node.name, "partition": 7, "epoch": "3.a"})
    bus.execute(events.REPLICATION_FENCED, {}, {"node": node.name, "partition": 7,
                                                "reason": "moved"})
    s = await scrape(node)
    assert value(s, "phoenix_registry_register_duration_seconds_count") == 1
    assert value(s, "phoenix_registry_name_conflicts_total") == 1
    assert value(s, "phoenix_pubsub_published_total") == 1
    assert value(s, "phoenix_pubsub_delivered_total") == 4
    assert value(s, "phoenix_pubsub_dropped_total", reason="queue_full") == 2
    # The node's own elections count too (they run in the background): at least ours.
    assert value(s, "phoenix_replication_election_duration_seconds_count") >= 1
    assert value(s, "phoenix_replication_leadership_lost_total", reason="moved") >= 1
    assert value(s, "phoenix_registry_lookup_duration_seconds_count") == 3
    assert value(s, "phoenix_registry_lookup_duration_seconds_bucket", le="0.001") == 1
    assert value(s, "phoenix_registry_lookup_duration_seconds_bucket", le="0.25") == 3
    assert value(s, "phoenix_replication_commit_duration_seconds_count") == 1
    assert value(s, "phoenix_replication_commit_duration_seconds_sum") == pytest.approx(0.004)


async def test_split_brain_and_membership_counters(node: phx.Node) -> None:
    bus = node.telemetry
    meta = {"node": node.name, "peer": "x", "address": "127.0.0.1:1", "incarnation": 1,
            "role": "member", "status": "alive", "by": None}
    bus.execute(events.CLUSTER_NODE_SUSPECTED, {"members": 2.0}, {**meta, "reason": "suspected"})
    bus.execute(events.CLUSTER_NODE_LEFT, {"members": 1.0}, {**meta, "reason": "dead"})
    bus.execute(events.CLUSTER_NODE_LEFT, {"members": 1.0}, {**meta, "reason": "left"})
    bus.execute(events.CLUSTER_PARTITION_DETECTED, {}, {
        "node": node.name, "strategy": "keep-majority", "decision": "keep",
        "reason": "2 of 3 reachable", "down": ("x",)})
    bus.execute(events.TRANSPORT_PROTOCOL_SWITCHED, {"switches": 1.0}, {
        "node": node.name, "peer": "x", "from": "tcp", "to": "http2", "reason": "refused"})
    s = await scrape(node)
    assert value(s, "phoenix_membership_suspicions_total") == 1
    assert value(s, "phoenix_membership_deaths_total") == 1
    assert value(s, "phoenix_membership_leaves_total") == 1
    assert value(s, "phoenix_splitbrain_decisions_total", action="keep") == 1
    assert value(s, "phoenix_transport_protocol_switches_total", **{"from": "tcp",
                                                                    "to": "http2"}) == 1


async def test_two_nodes_on_one_bus_count_only_their_own(node: phx.Node) -> None:
    # Both nodes report to the process-wide bus, as embedded nodes do by default.
    a = phx.Node(name="shared-a", listen="127.0.0.1:0", http="127.0.0.1:0", cookie=COOKIE)
    await a.start()
    try:
        assert a.address is not None
        async with phx.Node(name="shared-b", listen="127.0.0.1:0", http="127.0.0.1:0",
                            seeds=[a.address], cookie=COOKIE) as b:
            assert a.telemetry is default_bus and b.telemetry is default_bus
            await wait_until(lambda: len([m for m in b.members() if m.status == "alive"])
                             == 2, timeout=20, what="shared-b to join shared-a")
            for i in range(20):
                await a.ref(Meter, f"s{i}").add(1)
            sa, sb = await scrape(a), await scrape(b)
            handled_a = a.statistics().agents.messages_handled
            handled_b = b.statistics().agents.messages_handled
            assert handled_a + handled_b == 20 and handled_b > 0
            assert value(sa, "phoenix_agent_messages_total", kind="web.meter",
                         outcome="ok") == handled_a
            assert value(sb, "phoenix_agent_messages_total", kind="web.meter",
                         outcome="ok") == handled_b
            # Calls that a owns go over the wire to b and back.
            assert value(sa, "phoenix_transport_messages_sent_total") >= handled_b
            assert value(sb, "phoenix_transport_messages_received_total") >= handled_b
            assert value(sa, "phoenix_transport_sent_bytes_total") > 0
            assert value(sb, "phoenix_membership_joins_total") >= 1
            assert value(sb, "phoenix_cluster_nodes", status="alive", role="member") == 2
            assert value(sa, "phoenix_ring_share") + value(sb, "phoenix_ring_share") == \
                pytest.approx(1.0)
    finally:
        await a.aclose()


async def test_event_loop_lag_is_measured(node: phx.Node) -> None:
    # The node's start (imports, 4,096 elections) may have delayed a tick: wait until the
    # 5 s window shows a quiet loop before blocking it.
    deadline = time.monotonic() + 10
    while value(await scrape(node), "phoenix_event_loop_lag_seconds") >= 0.25:
        assert time.monotonic() < deadline, "the loop never looked quiet"
        await asyncio.sleep(0.1)
    # Blocking the loop is the point. The probe's timer, due at most 0.1 s into the block,
    # fires when it ends: it reports at least 0.4 s of lag.
    time.sleep(0.5)  # noqa: ASYNC251
    deadline = time.monotonic() + 5
    while value(await scrape(node), "phoenix_event_loop_lag_seconds") < 0.35:
        assert time.monotonic() < deadline, "the blocked loop never showed as lag"
        await asyncio.sleep(0.05)
    # /health/live reports the same watchdog's figure, and stays 200: the loop answers.
    assert node.http_url is not None
    status, _, body = await get(node.http_url + "health/live")
    live = json.loads(body)
    assert status == 200 and live["live"] is True
    assert 0.35 <= live["event_loop_lag_s"] < 5.0


async def test_exposition_passes_promtool(node: phx.Node) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; "
                    "scripts/ensure-system-deps.sh does it)")
    for i in range(5):
        await node.ref(Meter, f"p{i}").add(i)
    node.telemetry.execute(events.REGISTRY_LOOKUP, {"duration": 0.001}, {"node": node.name})
    assert node.http_url is not None
    _, _, body = await get(node.http_url + "metrics")
    check = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(60):
        output, _ = await check.communicate(body)
    # promtool exits 0 with lint warnings too: its output must be empty as well.
    assert check.returncode == 0 and output.strip() == b"", output.decode()


# ------------------------------------------------------------------ histograms


def test_buckets_are_cumulative_and_inclusive() -> None:
    b = Buckets([0.1, 1.0])
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        b.observe(v)
    assert b.cumulative() == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert b.count == 5
    assert b.sum == pytest.approx(8.65)


@given(st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.95, 0.99]))
def test_quantile_is_nearest_rank(values: list[float], q: float) -> None:
    ordered = sorted(values)
    got = quantile(ordered, q)
    assert got is not None and got in values
    assert sum(1 for v in values if v <= got) >= q * len(values)  # a fraction q at or below
    assert sum(1 for v in values if v < got) < q * len(values)  # and it is the smallest such


def test_quantile_of_nothing_is_none() -> None:
    assert quantile([], 0.5) is None


async def test_dropped_messages_are_exposed_by_reason_from_zero(node: phx.Node) -> None:
    s = await scrape(node)
    for reason in DROP_REASONS:  # every reason is there from the start, at 0
        assert value(s, "phoenix_messages_dropped_total", reason=reason) == 0
    report_drop(node.telemetry, node.name, "refused", "k", "key", "m", "full", count=2)
    report_drop(node.telemetry, "another-node", "refused", "k", "key", "m", "full")
    s = await scrape(node)
    assert value(s, "phoenix_messages_dropped_total", reason="refused") == 2
    assert value(s, "phoenix_messages_dropped_total", reason="node_stopped") == 0
