"""A call that crosses node processes is one trace, received by a stand-in collector.

Two ``phx node`` processes (LocalCluster) and a client node in this process export to an
OTLP/HTTP collector served by the test. Batches are held for a minute, so the spans can
only arrive through the flush on shutdown: SIGTERM for the nodes, ``aclose`` for the
client.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from otlp_collector import OtlpCollector, ReceivedSpan, running_collector
from tracing_agents import Echo, Relay

import phoenix_cluster as phx
from phoenix_cluster._agents.kinds import kind_spec
from phoenix_cluster._wire.codec import encode_payload
from phoenix_cluster.testing import LocalCluster

pytestmark = pytest.mark.slow

HOLD_BATCHES = {"OTEL_BSP_SCHEDULE_DELAY": "60000"}


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with running_collector() as c:
        yield c


async def key_on(client: phx.Node, kind: type[Relay] | type[Echo], node: str) -> str:
    """A key of ``kind`` that lives on ``node``."""
    for i in range(200):
        key = f"{node}-{i}"
        if await client.ref(kind, key).where() == node:
            return key
    raise AssertionError(f"no key of {kind.__name__} found on {node}")


def one(spans: list[ReceivedSpan], **want: str) -> ReceivedSpan:
    found = [s for s in spans if all(
        getattr(s, k) == v if k in ("name", "kind", "service") else s.attributes.get(
            f"phoenix.{k}") == v for k, v in want.items())]
    assert len(found) == 1, (want, [(s.service, s.name, s.kind, s.attributes) for s in spans])
    return found[0]


async def test_a_call_across_two_node_processes_is_one_trace(
        collector: OtlpCollector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", HOLD_BATCHES["OTEL_BSP_SCHEDULE_DELAY"])
    async with LocalCluster(nodes=2, imports=["tracing_agents"], env=HOLD_BATCHES,
                            node_args=["--otlp-endpoint", collector.url]) as cluster:
        client = await cluster.client(name="client-t", otlp_endpoint=collector.url)
        relay_key = await key_on(client, Relay, "node-0")
        echo_key = await key_on(client, Echo, "node-1")

        here, relay_trace, there, echo_trace = await client.ref(Relay, relay_key).forward(
            echo_key)
        with pytest.raises(phx.AgentError):
            await client.ref(Echo, echo_key).fail()
        # Sent to the wrong node on purpose: node-0 redirects, node-1 answers.
        router = client._runtime.router
        assert router is not None
        rid = client._runtime.next_request_id()
        spec = kind_spec(Echo)
        assert await router.call(spec, echo_key, spec.methods["where"],
                                 encode_payload([[], {}]), 5.0, rid,
                                 cluster.nodes[0].address) == "node-1"
        assert not collector.spans(), "batches are held until shutdown"

        await client.aclose()
        for i in (0, 1):
            assert await cluster.stop(i) == 0

    assert (here, there) == ("node-0", "node-1")
    assert relay_trace is not None and relay_trace == echo_trace

    # The nested call: client -> Relay on node-0 -> Echo on node-1, one trace.
    trace = collector.spans(lambda s: s.trace_id == relay_trace)
    client_span = one(trace, service="client-t", kind="CLIENT", name="tracing.relay/forward")
    relay_server = one(trace, service="node-0", kind="SERVER", name="tracing.relay/forward")
    relay_client = one(trace, service="node-0", kind="CLIENT", name="tracing.echo/seen")
    echo_server = one(trace, service="node-1", kind="SERVER", name="tracing.echo/seen")
    assert client_span.parent_span_id == ""
    assert relay_server.parent_span_id == client_span.span_id
    assert relay_client.parent_span_id == relay_server.span_id
    assert echo_server.parent_span_id == relay_client.span_id
    assert len(trace) == 4
    for span, node, peer, key in ((relay_server, "node-0", "client-t", relay_key),
                                  (echo_server, "node-1", "node-0", echo_key)):
        assert span.resource["phoenix.node"] == node
        assert span.attributes["phoenix.node"] == node
        assert span.attributes["phoenix.peer"] == peer
        assert span.attributes["phoenix.key"] == key
        assert span.attributes["phoenix.outcome"] == "ok"
        assert not span.error
    assert client_span.attributes["phoenix.kind"] == "tracing.relay"
    assert client_span.attributes["phoenix.method"] == "forward"
    assert client_span.attributes["phoenix.request_id"] == \
        relay_server.attributes["phoenix.request_id"]
    assert relay_client.attributes["phoenix.request_id"] == \
        echo_server.attributes["phoenix.request_id"]

    # The failing call: both sides say so, with the handler's exception type.
    failing = collector.spans(lambda s: s.name == "tracing.echo/fail")
    fail_client = one(failing, service="client-t", kind="CLIENT")
    fail_server = one(failing, service="node-1", kind="SERVER")
    assert fail_server.trace_id == fail_client.trace_id
    assert fail_server.parent_span_id == fail_client.span_id
    for span in (fail_client, fail_server):
        assert span.error
        assert span.attributes["phoenix.outcome"] == "error"
        assert str(span.attributes["phoenix.error_type"]).endswith("ValueError")

    # The redirected call: one CLIENT span, a SERVER span on each node it reached.
    redirected = collector.spans(lambda s: s.attributes.get("phoenix.request_id") == rid)
    redirect_client = one(redirected, kind="CLIENT")
    bounced = one(redirected, service="node-0", kind="SERVER")
    served = one(redirected, service="node-1", kind="SERVER")
    assert bounced.attributes["phoenix.outcome"] == "redirect"
    assert bounced.attributes["phoenix.redirect.owner"] == "node-1"
    assert served.attributes["phoenix.outcome"] == "ok"
    assert bounced.parent_span_id == served.parent_span_id == redirect_client.span_id
    assert [name for name, _ in redirect_client.events] == ["phoenix.redirect"]
    assert collector.bad_requests == 0
