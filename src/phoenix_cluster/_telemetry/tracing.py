"""Optional OpenTelemetry tracing: a span per call on the caller and on the agent's node.

Off unless a node is given an OTLP endpoint (``otlp_endpoint`` / ``--otlp-endpoint`` /
``PHX_OTLP_ENDPOINT``). Then the node builds a :class:`NodeTracer`: its own OpenTelemetry
``TracerProvider`` (``service.name`` = the node's name) exporting in batches over
OTLP/HTTP protobuf from a background thread, so the event loop never waits on the
collector. Off, the runtime and the router hold ``tracer = None`` and pay one ``is None``
test per message; OpenTelemetry is not even imported (the ``[otel]`` extra is optional).

What is traced (docs/tracing.md has the attribute list):

- the caller: a ``CLIENT`` span per call (remote or local), whose W3C trace context
  (``traceparent`` / ``tracestate``) travels in the wire ``Call.headers``; a redirect or
  a resend is an event on it, and the headers go with the resent frame;
- the agent's node: a ``SERVER`` span per call received from a peer, from receipt to
  answer, child of the caller's span; a ``SERVER`` span per local call and a
  ``CONSUMER`` span per cast while the handler runs. The handler runs with that span as
  the current context, so the calls it makes are its children and
  :data:`current_trace_id` names the trace in log lines;
- decisions (split brain, a member declared dead, migrations): :func:`event` and
  :func:`span`, which anyone may call; the node feeds the telemetry bus's decisions in.

Messages are matched with their spans by request id (:mod:`.waiting`).

The parts: :mod:`.spans` (a span's attributes and outcome, the :class:`Span` handle),
:mod:`.waiting` (the traces of messages waiting to run, by request id),
:mod:`.export` (the provider and exporter, availability), :mod:`.decisions` (the
process's traced nodes, :func:`event` and :func:`span`). This module propagates the
trace context along a call: the :class:`NodeTracer` hooks of the caller, the transport
and the mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from . import decisions
from .bus import TelemetryBus
from .decisions import event, span
from .export import SpanExport, available, check_available, otlp_traces_url
from .spans import (
    AttributeValue,
    Span,
    call_attributes,
    clean_attributes,
    current_trace_id,
    end_with,
    record_answer,
    record_failure,
    trace_id_of,
)
from .waiting import Inbound, Queued, Waiting, end_waiting, is_cast, put_waiting

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "NO_HEADERS",
    "AttributeValue",
    "NodeTracer",
    "Span",
    "available",
    "check_available",
    "current_trace_id",
    "event",
    "otlp_traces_url",
    "span",
    "start_node_tracer",
]

NO_HEADERS: Final[dict[str, str]] = {}
"""The headers of an untraced frame: one shared empty dict (never mutate it)."""

_log = logging.getLogger("phoenix_cluster.tracing")

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Inbound)


def start_node_tracer(
    endpoint: str | None, node_name: str, bus: TelemetryBus | None = None
) -> NodeTracer | None:
    """The tracer of a starting node, or ``None`` when tracing is off (no endpoint).

    Raises:
        ConfigError: the ``[otel]`` extra is missing.
    """
    if endpoint is None:
        return None
    check_available(endpoint)
    tracer = NodeTracer(node_name, endpoint=endpoint, bus=bus)
    _log.info("node %s exports traces to %s", node_name, otlp_traces_url(endpoint))
    return tracer


class NodeTracer:
    """One node's spans: calls it makes, messages it serves, decisions it takes.

    Args:
        node_name: ``service.name`` and ``phoenix.node`` of every span.
        endpoint: the OTLP/HTTP collector (see :func:`otlp_traces_url`).
        exporter: another span exporter instead (tests, a console exporter); spans reach
            it in batches from a background thread too.
        bus: the node's telemetry bus; its decision events become spans or span events.
        schedule_delay_s: how long finished spans may wait before a batch is sent
            (default: ``OTEL_BSP_SCHEDULE_DELAY`` or the SDK's 5 s).

    Raises:
        ImportError: the ``[otel]`` extra is missing (:func:`start_node_tracer` checks).
    """

    def __init__(
        self,
        node_name: str,
        *,
        endpoint: str | None = None,
        exporter: SpanExporter | None = None,
        bus: TelemetryBus | None = None,
        schedule_delay_s: float | None = None,
    ) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._export = SpanExport(node_name, endpoint=endpoint, exporter=exporter,
                                  schedule_delay_s=schedule_delay_s)
        self.node_name = node_name
        self._tracer = self._export.tracer
        propagator = TraceContextTextMapPropagator()
        # Bound once: the hooks below run per message.
        self._extract = propagator.extract
        self._inject = propagator.inject
        self._attach = otel_context.attach
        self._detach = otel_context.detach
        self._empty = otel_context.Context
        self._get_current = otel_context.get_current
        self._in_context = trace.set_span_in_context
        self.current_span = trace.get_current_span
        self._client, self._server = SpanKind.CLIENT, SpanKind.SERVER
        self._consumer, self._internal = SpanKind.CONSUMER, SpanKind.INTERNAL
        self._pending: dict[int, Waiting] = {}
        self._handoff: dict[int, Waiting] = {}  # calls the fast path passed to the slow
        self._bus = bus
        self._handler_id = f"phoenix.tracing.{node_name}.{id(self):x}"
        self._closed = False
        decisions.register(self, bus, self._handler_id)

    # --------------------------------------------------------------------- caller side

    def inject(self) -> dict[str, str]:
        """Headers carrying the current trace context (empty outside any span)."""
        headers: dict[str, str] = {}
        self._inject(headers)
        return headers

    async def client_call(
        self,
        send: Callable[[dict[str, str]], Awaitable[_T]],
        kind: str,
        key: str,
        method: str,
        request_id: int,
        address: str,
    ) -> _T:
        """Run ``send(headers)`` under a CLIENT span; ``headers`` carry its context."""
        span = self._tracer.start_span(
            f"{kind}/{method}", kind=self._client,
            attributes=self._attributes(kind, key, method, request_id,
                                        {"phoenix.address": address}),
        )
        ctx = self._in_context(span)
        headers: dict[str, str] = {}
        self._inject(headers, ctx)
        token = self._attach(ctx)
        trace_token = current_trace_id.set(trace_id_of(span))
        try:
            result = await send(headers)
        except BaseException as exc:
            record_failure(span, exc)
            raise
        else:
            span.set_attribute("phoenix.outcome", "ok")
            return result
        finally:
            current_trace_id.reset(trace_token)
            self._detach(token)
            span.end()

    def local_call(self, kind: str, key: str, method: str, request_id: int,
                   future: asyncio.Future[bytes]) -> None:
        """A CLIENT span for a call queued to a local agent; it ends with ``future``."""
        span = self._tracer.start_span(
            f"{kind}/{method}", kind=self._client,
            attributes=self._attributes(kind, key, method, request_id, {"phoenix.local": True}),
        )
        put_waiting(self._pending, request_id, Waiting(None, self._in_context(span)))
        future.add_done_callback(lambda done: end_with(span, done))

    def local_cast(self, request_id: int) -> None:
        """A cast queued to a local agent: its CONSUMER span will be a child of ours."""
        put_waiting(self._pending, request_id, Waiting(None, self._get_current()))

    # --------------------------------------------------------------------- agent side

    def serve_now(self, try_now: Callable[[Any, _F, Callable[[Any], None]], bool],
                  peer: Any, frame: _F, answer: Callable[[Any], None]) -> bool:
        """The transport's fast path under a SERVER span (calls) or with a parent (casts)."""
        if frame.kind.startswith("$"):  # node services (gossip) are not traced
            return try_now(peer, frame, answer)
        rid = frame.request_id
        if is_cast(frame):  # a cast: its span starts when it runs
            put_waiting(self._pending, rid, Waiting(None, self._remote_parent(frame)))
            return try_now(peer, frame, answer)
        entry = self._server_entry(peer, frame)
        put_waiting(self._pending, rid, entry)

        def traced(out: Any) -> None:
            self._answered(rid, entry, out)
            answer(out)

        try:
            taken = try_now(peer, frame, traced)
        except BaseException:
            put_waiting(self._handoff, rid, entry)  # the transport retries it on the slow path
            raise
        if not taken:
            put_waiting(self._handoff, rid, entry)
        return taken

    async def serve(self, handle: Callable[[Any, _F], Awaitable[Any]], peer: Any,
                    frame: _F) -> Any:
        """The transport's task path: ``handle(peer, frame)`` under the message's span."""
        if frame.kind.startswith("$"):
            return await handle(peer, frame)
        rid = frame.request_id
        if is_cast(frame):
            parent = self._remote_parent(frame)
            put_waiting(self._pending, rid, Waiting(None, parent))
            token = self._attach(parent)  # a cast forwarded to the owner keeps its trace
            try:
                return await handle(peer, frame)
            finally:
                self._detach(token)
        entry = self._handoff.pop(rid, None) or self._server_entry(peer, frame)
        put_waiting(self._pending, rid, entry)
        try:
            out = await handle(peer, frame)
        except BaseException as exc:
            if self._pending.get(rid) is entry:
                del self._pending[rid]
            assert entry.span is not None
            record_failure(entry.span, exc)
            entry.span.end()
            raise
        self._answered(rid, entry, out)
        return out

    async def handle(self, kind: str, key: str, msg: Queued, run: Awaitable[None]) -> None:
        """The mailbox's drain hook: run one message under its span, if it has one."""
        entry = self._pending.pop(msg.request_id, None)
        if entry is None:
            await run
            return
        span, ctx, own = entry.span, entry.context, entry.span is None
        if span is None:
            span = self._tracer.start_span(
                f"{kind}/{msg.method}", context=ctx,
                kind=self._server if msg.future is not None else self._consumer,
                attributes=self._attributes(kind, key, msg.method, msg.request_id, None),
            )
            ctx = self._in_context(span, ctx)
        token = self._attach(ctx)
        trace_token = current_trace_id.set(trace_id_of(span))
        try:
            await run
        finally:
            current_trace_id.reset(trace_token)
            self._detach(token)
            if own:
                if msg.future is None:
                    span.set_attribute("phoenix.outcome", "handled")
                    span.end()
                else:
                    end_with(span, msg.future)

    # --------------------------------------------------------------------- decisions

    def event(self, name: str, attributes: Mapping[str, object] | None = None) -> None:
        """Record ``name`` on the current span, or as a short span of its own."""
        attrs = clean_attributes(attributes)
        current = self.current_span()
        if current.is_recording():
            current.add_event(name, attrs)
            return
        self._tracer.start_span(name, kind=self._internal, attributes=attrs).end()

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, object] | None = None) -> Iterator[Span]:
        """An INTERNAL span around a block (a migration, a failover); current inside it."""
        otel_span = self._tracer.start_span(name, kind=self._internal,
                                            attributes=clean_attributes(attributes))
        token = self._attach(self._in_context(otel_span))
        trace_token = current_trace_id.set(trace_id_of(otel_span))
        try:
            yield Span(otel_span)
        except BaseException as exc:
            record_failure(otel_span, exc)
            raise
        finally:
            current_trace_id.reset(trace_token)
            self._detach(token)
            otel_span.end()

    # --------------------------------------------------------------------- lifecycle

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export every finished span now (blocks the calling thread; tests use it)."""
        return self._export.flush(timeout_s)

    async def aclose(self, timeout_s: float = 3.0) -> None:
        """Stop tracing and send the spans still batched, waiting at most ``timeout_s``.

        The export runs in a thread of its own, so the event loop keeps serving; an
        unreachable collector costs at most ``timeout_s`` of shutdown, then the exporter
        is stopped so that nothing of this tracer runs on after the node is closed.
        """
        if self._closed:
            return
        self._closed = True
        decisions.unregister(self, self._bus, self._handler_id)
        end_waiting(self._handoff, self._pending)
        await self._export.aclose(timeout_s)

    # --------------------------------------------------------------------- helpers

    def _attributes(self, kind: str, key: str, method: str, request_id: int,
                    extra: Mapping[str, AttributeValue] | None) -> dict[str, AttributeValue]:
        return call_attributes(self.node_name, kind, key, method, request_id, extra)

    def _remote_parent(self, frame: Inbound) -> Context:
        # Never inherit the transport task's own context: no header means a new trace.
        return self._extract(frame.headers, self._empty()) if frame.headers else self._empty()

    def _server_entry(self, peer: Any, frame: Inbound) -> Waiting:
        parent = self._remote_parent(frame)
        span = self._tracer.start_span(
            f"{frame.kind}/{frame.method}", context=parent, kind=self._server,
            attributes=self._attributes(frame.kind, frame.key, frame.method, frame.request_id,
                                        {"phoenix.peer": str(getattr(peer, "peer_name", ""))}),
        )
        return Waiting(span, self._in_context(span, parent))

    def _answered(self, rid: int, entry: Waiting, out: Any) -> None:
        """End a SERVER span with what the node answered (Reply, Error or Redirect)."""
        if self._pending.get(rid) is entry:
            del self._pending[rid]  # answered without running: a redirect or a refusal
        assert entry.span is not None
        record_answer(entry.span, out)

    def __repr__(self) -> str:
        return f"<NodeTracer {self.node_name} [{len(self._pending)} pending]>"
