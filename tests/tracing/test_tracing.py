"""Tracing in one process: header propagation, span links and attributes, the off path."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otlp_collector import OtlpCollector, ReceivedSpan, running_collector
from tracing_agents import Echo, Relay

import phoenix_cluster as phx
from phoenix_cluster._foundation.settings import load_settings
from phoenix_cluster._telemetry import events, export, tracing
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._telemetry.tracing import NodeTracer, current_trace_id
from phoenix_cluster._wire.codec import WireCodec
from phoenix_cluster._wire.messages import Call, Cast, Error, Redirect, Reply
from phoenix_cluster.errors import AgentError, ConfigError
from phoenix_cluster.testing import wait_until

# Flags: sampled (01), plus "random trace id" (02) from SDKs that follow trace-context 2.
TRACEPARENT = r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[13]"


class MemoryTracer:
    """A NodeTracer whose spans land in memory; ``spans()`` flushes first."""

    def __init__(self, name: str, bus: TelemetryBus | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer = NodeTracer(name, exporter=self.exporter, bus=bus, schedule_delay_s=0.05)

    def spans(self) -> list[ReadableSpan]:
        assert self.tracer.flush()
        return list(self.exporter.get_finished_spans())


@pytest.fixture
async def tracers() -> AsyncIterator[Callable[..., MemoryTracer]]:
    made: list[MemoryTracer] = []

    def make(name: str, bus: TelemetryBus | None = None) -> MemoryTracer:
        made.append(MemoryTracer(name, bus))
        return made[-1]

    yield make
    for m in made:
        await m.tracer.aclose()


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with running_collector() as c:
        yield c


class Peer:
    peer_name = "node-a"


def hexid(n: int, width: int) -> str:
    return f"{n:0{width}x}"


async def call_through(a: NodeTracer, b: NodeTracer, answer_with: Any,
                       headers_seen: list[dict[str, str]] | None = None) -> None:
    """A CLIENT span on ``a`` sends a Call over the wire codec; ``b`` serves it."""

    async def send(headers: dict[str, str]) -> Any:
        if headers_seen is not None:
            headers_seen.append(headers)
        codec = WireCodec()
        frame = codec.decode(codec.encode(Call(7, "k.echo", "alice", "hello", b"\x90", 500,
                                               headers)))
        assert isinstance(frame, Call)
        answered: list[Any] = []

        def try_now(peer: Any, f: Call, answer: Callable[[Any], None]) -> bool:
            answer(answer_with(f))
            return True

        assert b.serve_now(try_now, Peer(), frame, answered.append)
        return answered[0]

    await a.client_call(send, "k.echo", "alice", "hello", 7, "127.0.0.1:7101")


# ------------------------------------------------------------------ propagation


async def test_client_span_context_crosses_the_wire_in_call_headers(tracers: Any) -> None:
    a, b = tracers("node-a"), tracers("node-b")
    seen: list[dict[str, str]] = []
    await call_through(a.tracer, b.tracer, lambda f: Reply(f.request_id, b"\xc0"), seen)
    (headers,) = seen
    assert set(headers) == {"traceparent"}
    match = re.fullmatch(TRACEPARENT, headers["traceparent"])
    assert match is not None

    (client,) = a.spans()
    (server,) = b.spans()
    assert client.kind is SpanKind.CLIENT and server.kind is SpanKind.SERVER
    assert client.context is not None and server.context is not None
    assert server.parent is not None and server.parent.is_remote
    assert server.context.trace_id == client.context.trace_id
    assert server.parent.span_id == client.context.span_id
    assert match.groups() == (hexid(client.context.trace_id, 32),
                              hexid(client.context.span_id, 16))
    for span, node in ((client, "node-a"), (server, "node-b")):
        assert span.name == "k.echo/hello"
        attrs = dict(span.attributes or {})
        assert attrs["phoenix.kind"] == "k.echo"
        assert attrs["phoenix.key"] == "alice"
        assert attrs["phoenix.method"] == "hello"
        assert attrs["phoenix.request_id"] == 7
        assert attrs["phoenix.node"] == node
        assert attrs["phoenix.outcome"] == "ok"
        assert span.resource.attributes["service.name"] == node
        assert span.resource.attributes["phoenix.node"] == node
    assert dict(server.attributes or {})["phoenix.peer"] == "node-a"


async def test_headers_survive_the_codec_with_tracestate(tracers: Any) -> None:
    a = tracers("node-a")
    parent = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "tracestate": "vendor=x1"}
    b = tracers("node-b")
    answered: list[Any] = []
    frame = Call(3, "k", "key", "m", b"", 100, parent)
    codec = WireCodec()
    decoded = codec.decode(codec.encode(frame))
    assert isinstance(decoded, Call) and decoded.headers == parent
    b.tracer.serve_now(lambda p, f, ans: (ans(Reply(3, b"")), True)[1], Peer(), decoded,
                       answered.append)
    (server,) = b.spans()
    assert server.context is not None and server.parent is not None
    assert hexid(server.context.trace_id, 32) == "ab" * 16
    assert hexid(server.parent.span_id, 16) == "cd" * 8
    assert server.context.trace_state.get("vendor") == "x1"
    # The tracestate goes on with the next hop's headers.
    del a


async def test_garbage_trace_context_from_a_peer_starts_a_new_trace(tracers: Any) -> None:
    b = tracers("node-b")
    for bad in ({"traceparent": "zz"}, {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
                {"traceparent": "x" * 10_000}, {"unrelated": "1"}):
        answered: list[Any] = []
        frame = Call(9, "k", "key", "m", b"", 100, bad)
        assert b.tracer.serve_now(lambda p, f, ans: (ans(Reply(9, b"")), True)[1], Peer(),
                                  frame, answered.append)
        assert isinstance(answered[0], Reply)
    spans = b.spans()
    assert len(spans) == 4
    assert all(s.parent is None for s in spans)
    assert len({s.context.trace_id for s in spans if s.context}) == 4


async def test_error_and_redirect_answers_are_recorded_on_the_server_span(tracers: Any) -> None:
    a, b = tracers("node-a"), tracers("node-b")
    await call_through(a.tracer, b.tracer, lambda f: Error(
        f.request_id, "agent_error", "boom", True, "ValueError", "tb"))
    await call_through(a.tracer, b.tracer, lambda f: Redirect(f.request_id, "node-c", "h:1"))
    error, redirect = b.spans()
    assert error.status.status_code is StatusCode.ERROR
    assert dict(error.attributes or {})["phoenix.outcome"] == "error"
    assert dict(error.attributes or {})["phoenix.error_type"] == "ValueError"
    assert dict(error.attributes or {})["phoenix.error_code"] == "agent_error"
    assert dict(redirect.attributes or {})["phoenix.outcome"] == "redirect"
    assert dict(redirect.attributes or {})["phoenix.redirect.owner"] == "node-c"


async def test_a_failed_send_marks_the_client_span(tracers: Any) -> None:
    a = tracers("node-a")

    async def send(headers: dict[str, str]) -> None:
        raise AgentError("boom", remote_type="KeyError", remote_message="boom")

    with pytest.raises(AgentError):
        await a.tracer.client_call(send, "k", "key", "m", 1, "h:1")
    (client,) = a.spans()
    attrs = dict(client.attributes or {})
    assert client.status.status_code is StatusCode.ERROR
    assert attrs["phoenix.outcome"] == "error"
    assert attrs["phoenix.error_type"] == "KeyError"
    assert current_trace_id.get() is None  # reset after the call


async def test_system_calls_and_the_slow_path_handoff(tracers: Any) -> None:
    b = tracers("node-b")
    gossip = Call(1, "$membership", "", "sync", b"", 100)
    assert not b.tracer.serve_now(lambda p, f, a: False, Peer(), gossip, lambda a: None)
    # A call the fast path passes on keeps its one SERVER span on the task path.
    call = Call(2, "k", "key", "m", b"", 100)
    assert not b.tracer.serve_now(lambda p, f, a: False, Peer(), call, lambda a: None)

    async def handle(peer: Any, frame: Any) -> Any:
        return Reply(frame.request_id, b"")

    await b.tracer.serve(handle, Peer(), gossip)
    await b.tracer.serve(handle, Peer(), call)
    (server,) = b.spans()
    assert server.name == "k/m" and dict(server.attributes or {})["phoenix.outcome"] == "ok"
    # A cast on the task path: the handler's context is the sender's.
    cast = Cast(3, "k", "key", "m", b"", {"traceparent": f"00-{'12' * 16}-{'34' * 8}-01"})
    seen: list[str] = []

    async def forward(peer: Any, frame: Any) -> None:
        seen.append(b.tracer.inject()["traceparent"])

    await b.tracer.serve(forward, Peer(), cast)
    assert seen == [cast.headers["traceparent"]]


# ------------------------------------------------------------------ decisions


async def test_split_brain_and_dead_member_decisions_become_spans(tracers: Any) -> None:
    bus = TelemetryBus()
    t = tracers("node-a", bus)
    bus.execute(events.CLUSTER_PARTITION_DETECTED, {"reachable": 2.0, "unreachable": 1.0}, {
        "node": "node-a", "strategy": "keep-majority", "decision": "keep",
        "reachable": ("node-a", "node-b"), "unreachable": ("node-c",), "down": ("node-c",),
        "tie_break": "", "lease_holder": None, "reason": "majority 2 of 3"})
    bus.execute(events.CLUSTER_PARTITION_DETECTED, {}, {"node": "other", "decision": "keep"})
    bus.execute(events.CLUSTER_NODE_LEFT, {"members": 2.0},
                {"node": "node-a", "peer": "node-c", "reason": "dead", "by": "node-b"})
    bus.execute(events.CLUSTER_NODE_LEFT, {}, {"node": "node-a", "peer": "x", "reason": "left"})
    decision, dead = t.spans()
    attrs = dict(decision.attributes or {})
    assert decision.name == "phoenix.splitbrain.decision"
    assert attrs["phoenix.splitbrain.decision"] == "keep"
    assert attrs["phoenix.splitbrain.strategy"] == "keep-majority"
    assert attrs["phoenix.splitbrain.unreachable"] == ("node-c",)
    assert attrs["phoenix.splitbrain.reason"] == "majority 2 of 3"
    assert attrs["phoenix.splitbrain.reachable"] == ("node-a", "node-b")
    assert "phoenix.splitbrain.lease_holder" not in attrs
    assert dead.name == "phoenix.member.dead"
    assert dict(dead.attributes or {})["phoenix.member.peer"] == "node-c"
    await t.tracer.aclose()
    assert bus.handlers(events.CLUSTER_PARTITION_DETECTED) == []


async def test_events_join_the_current_span(tracers: Any) -> None:
    t = tracers("node-a")
    with tracing.span("phoenix.migration", {"phoenix.key": "k1"}, node="node-a") as s:
        assert s.recording
        assert current_trace_id.get() is not None
        tracing.event("phoenix.migration.state_sent", {"bytes": 120})
        s.event("phoenix.migration.done", {"to": ("node-b",)})
        s.set("phoenix.migration.target", "node-b")
    assert current_trace_id.get() is None
    tracing.event("phoenix.failover", {"phoenix.peer": "node-c"}, node="node-a")
    migration, failover = t.spans()
    assert [e.name for e in migration.events] == ["phoenix.migration.state_sent",
                                                  "phoenix.migration.done"]
    assert dict(migration.attributes or {})["phoenix.migration.target"] == "node-b"
    assert failover.name == "phoenix.failover" and failover.parent is None


async def test_event_and_span_do_nothing_when_no_node_traces() -> None:
    tracing.event("phoenix.failover", {"x": 1})
    tracing.event("phoenix.failover", {"x": 1}, node="nobody")
    with tracing.span("phoenix.migration", node="nobody") as s:
        assert not s.recording
        s.event("step")
        s.set("k", "v")
        assert current_trace_id.get() is None


# ------------------------------------------------------------------ configuration


def test_otlp_endpoint_setting_and_url() -> None:
    s = load_settings(environ={"PHX_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert s.otlp_endpoint == "http://127.0.0.1:4318"
    assert load_settings(environ={}).otlp_endpoint is None
    with pytest.raises(ConfigError) as info:
        load_settings({"otlp_endpoint": "127.0.0.1:4318"}, environ={})
    assert info.value.key == "otlp_endpoint"
    assert tracing.otlp_traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert tracing.otlp_traces_url("https://c:4318/") == "https://c:4318/v1/traces"
    assert tracing.otlp_traces_url("http://c:4318/otlp/v1/traces") == \
        "http://c:4318/otlp/v1/traces"


def test_missing_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracing.available()
    tracing.check_available(None)
    assert tracing.start_node_tracer(None, "n") is None
    monkeypatch.setattr(export, "available", lambda: False)
    tracing.check_available(None)  # off: nothing to check
    with pytest.raises(ConfigError, match=r"phoenix-cluster\[otel\]"):
        tracing.start_node_tracer("http://127.0.0.1:4318", "n")


def test_off_by_default_never_imports_opentelemetry() -> None:
    code = textwrap.dedent("""
        import asyncio, sys
        import phoenix_cluster as phx

        class C(phx.Agent, kind="c"):
            async def hi(self) -> int:
                return 1

        async def main() -> None:
            async with phx.Node() as node:
                assert node._runtime.tracer is None
                assert await node.ref(C, "a").hi() == 1
                await node.ref(C, "a").hi.cast()
        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        print("ok")
    """)
    # No PHX_* variables: PHX_OTLP_ENDPOINT in the caller's environment would turn it on.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ------------------------------------------------------------------ a real node


def _by_name(spans: list[ReceivedSpan], name: str, kind: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert len(found) == 1, (name, kind, [(s.name, s.kind) for s in spans])
    return found[0]


async def test_embedded_node_exports_nested_local_calls_as_one_trace(
        collector: OtlpCollector) -> None:
    async with phx.Node(name="solo", otlp_endpoint=collector.url) as node:
        assert node._runtime.tracer is not None
        here, relay_trace, there, echo_trace = await node.ref(Relay, "r1").forward("e1")
        with pytest.raises(phx.AgentError):
            await node.ref(Echo, "e2").fail()
        await node.ref(Echo, "e3").where.cast()
        await wait_until(lambda: node._runtime.statistics().messages_handled >= 3,
                         what="the cast to run")
    # Closing the node flushed its batch to the collector.
    assert here == there == "solo"
    assert relay_trace is not None and relay_trace == echo_trace
    spans = collector.spans(lambda s: s.trace_id == relay_trace)
    assert {s.service for s in spans} == {"solo"}
    client = _by_name(spans, "tracing.relay/forward", "CLIENT")
    server = _by_name(spans, "tracing.relay/forward", "SERVER")
    inner_client = _by_name(spans, "tracing.echo/seen", "CLIENT")
    inner_server = _by_name(spans, "tracing.echo/seen", "SERVER")
    assert client.parent_span_id == ""
    assert server.parent_span_id == client.span_id
    assert inner_client.parent_span_id == server.span_id
    assert inner_server.parent_span_id == inner_client.span_id
    assert server.attributes["phoenix.key"] == "r1"
    assert inner_server.attributes["phoenix.key"] == "e1"
    assert client.attributes["phoenix.request_id"] == server.attributes["phoenix.request_id"]
    failed = collector.spans(lambda s: s.name == "tracing.echo/fail")
    assert {s.kind for s in failed} == {"CLIENT", "SERVER"}
    assert all(s.error and s.attributes["phoenix.outcome"] == "error" for s in failed)
    assert all(s.attributes["phoenix.error_type"].endswith("ValueError") for s in failed)
    (consumer,) = collector.spans(lambda s: s.name == "tracing.echo/where")
    assert consumer.kind == "CONSUMER"
    assert collector.bad_requests == 0


async def test_node_close_with_an_unreachable_collector_is_bounded() -> None:
    with running_collector() as gone:
        url = gone.url
    loop = asyncio.get_running_loop()
    node = phx.Node(name="lonely", otlp_endpoint=url)
    await node.start()
    await node.ref(Echo, "x").where()
    assert node._runtime.tracer is not None
    started = loop.time()
    await node.aclose()
    assert loop.time() - started < 15
    # Nothing of the tracer runs on: a retrying exporter would draw its jitter from the
    # global random module under the next test (Hypothesis fails on that).
    assert [t.name for t in threading.enumerate() if t.name == "phx-tracing-lonely"] == []
