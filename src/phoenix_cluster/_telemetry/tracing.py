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

Messages are matched with their spans by request id: the inbound hook registers a span
(or a parent context) under the request id before the message can run, and the mailbox's
drain hook takes it when it runs the message. Entries for messages that never run (a cast
refused or forwarded) are dropped oldest first past a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, PhoenixError
from . import events
from .bus import EventName, TelemetryBus

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span as OtelSpan

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

current_trace_id: ContextVar[str | None] = ContextVar("phoenix_trace_id", default=None)
"""The trace id (32 lowercase hex digits) of the traced call or message being handled in
this task, or ``None``: what log lines print as ``trace_id``."""

NO_HEADERS: Final[dict[str, str]] = {}
"""The headers of an untraced frame: one shared empty dict (never mutate it)."""

AttributeValue = str | bool | int | float | Sequence[str]
"""What a span attribute may hold."""

_log = logging.getLogger("phoenix_cluster.tracing")

_INSTALL_HINT = "pip install 'phoenix-cluster[otel]'"
_STOPPED_EXPORT_GRACE_S = 1.0
"""How long a close waits, after stopping an exporter that missed its bound, for the
export thread to end (one refused or failed attempt; it retries no more)."""
_MAX_PENDING = 10_000
"""Request ids waiting for their message to run; past it the oldest are dropped (they
belong to casts that were refused or forwarded, which never run here)."""

_DECISION_LABELS: Final[dict[EventName, str]] = {
    events.CLUSTER_PARTITION_DETECTED: "phoenix.splitbrain.decision",
    events.CLUSTER_NODE_LEFT: "phoenix.member.dead",
    events.AGENT_MIGRATED: "phoenix.agent.migrated",
}
"""The span (or span event) name each decision event of the bus is recorded as."""

_tracers: dict[str, NodeTracer] = {}
"""The open tracers of this process by node name (for :func:`event` and :func:`span`)."""

_T = TypeVar("_T")


class _Queued(Protocol):
    """What the drain hook reads of a mailbox message."""

    @property
    def request_id(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def future(self) -> asyncio.Future[bytes] | None: ...


class _Inbound(Protocol):
    """What the inbound hooks read of a Call or Cast frame."""

    @property
    def request_id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...


_F = TypeVar("_F", bound=_Inbound)


def _is_cast(frame: _Inbound) -> bool:
    """Whether an inbound frame is a Cast (its span starts when it runs, not on arrival).

    By name: the wire layer sits above this one, and a Cast has a ``timeout_ms`` of its
    own now (for its acknowledgement), so no attribute tells it from a Call.
    """
    return type(frame).__name__ == "Cast"


class _Pending:
    """A message's trace while it waits in a mailbox: a started span, or a parent."""

    __slots__ = ("context", "span")

    def __init__(self, span: OtelSpan | None, context: Context) -> None:
        self.span = span  # started at receipt (remote calls); None: start one on running
        self.context = context  # the span's context, or the parent for the one to start


# ------------------------------------------------------------------------- configuration


def available() -> bool:
    """Whether the ``[otel]`` extra (SDK and OTLP/HTTP exporter) is installed."""
    try:
        return (importlib.util.find_spec("opentelemetry.sdk") is not None and
                importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None)
    except ModuleNotFoundError:
        return False


def check_available(endpoint: str | None) -> None:
    """Fail early when tracing is asked for but cannot work.

    Raises:
        ConfigError: ``endpoint`` is set and the ``[otel]`` extra is not installed.
    """
    if endpoint is not None and not available():
        raise ConfigError(
            f"otlp_endpoint is set ({endpoint}) but OpenTelemetry is not installed: "
            f"{_INSTALL_HINT}",
            key="otlp_endpoint",
        )


def otlp_traces_url(endpoint: str) -> str:
    """The URL spans are POSTed to: ``endpoint`` plus ``/v1/traces`` unless it has a path.

    ``http://collector:4318`` becomes ``http://collector:4318/v1/traces`` (as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` does); a URL with a path is used as it is.
    """
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1/traces")
    return urlunsplit(parts)


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


# ------------------------------------------------------------------------- the tracer


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
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from .._version import __version__

        if exporter is None:
            if endpoint is None:
                raise ValueError("a NodeTracer needs an endpoint or an exporter")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_traces_url(endpoint))
        self.node_name = node_name
        resource = Resource.create({
            "service.name": node_name,
            "service.namespace": "phoenix",
            "service.version": __version__,
            "phoenix.node": node_name,
        })
        # Our own provider, not the global one: several nodes may share a process (tests,
        # embedded nodes) and each must report under its own name.
        self._provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self._exporter = exporter
        delay_ms = None if schedule_delay_s is None else schedule_delay_s * 1000
        self._provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=delay_ms))
        self._tracer = self._provider.get_tracer("phoenix_cluster", __version__)
        propagator = TraceContextTextMapPropagator()
        # Bound once: the hooks below run per message.
        self._extract = propagator.extract
        self._inject = propagator.inject
        self._attach = otel_context.attach
        self._detach = otel_context.detach
        self._empty = otel_context.Context
        self._get_current = otel_context.get_current
        self._in_context = trace.set_span_in_context
        self._current_span = trace.get_current_span
        self._client, self._server = SpanKind.CLIENT, SpanKind.SERVER
        self._consumer, self._internal = SpanKind.CONSUMER, SpanKind.INTERNAL
        self._status, self._error = Status, StatusCode.ERROR
        self._pending: dict[int, _Pending] = {}
        self._handoff: dict[int, _Pending] = {}  # calls the fast path passed to the slow
        self._bus = bus
        self._handler_id = f"phoenix.tracing.{node_name}.{id(self):x}"
        self._closed = False
        if bus is not None:
            bus.attach(self._handler_id, _DECISION_LABELS, self._on_decision)
        _tracers[node_name] = self

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
        trace_token = current_trace_id.set(_trace_id(span))
        try:
            result = await send(headers)
        except BaseException as exc:
            self._failed(span, exc)
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
        self._put(self._pending, request_id, _Pending(None, self._in_context(span)))
        future.add_done_callback(lambda done: self._end_with(span, done))

    def local_cast(self, request_id: int) -> None:
        """A cast queued to a local agent: its CONSUMER span will be a child of ours."""
        self._put(self._pending, request_id, _Pending(None, self._get_current()))

    # --------------------------------------------------------------------- agent side

    def serve_now(self, try_now: Callable[[Any, _F, Callable[[Any], None]], bool],
                  peer: Any, frame: _F, answer: Callable[[Any], None]) -> bool:
        """The transport's fast path under a SERVER span (calls) or with a parent (casts)."""
        if frame.kind.startswith("$"):  # node services (gossip) are not traced
            return try_now(peer, frame, answer)
        rid = frame.request_id
        if _is_cast(frame):  # a cast: its span starts when it runs
            self._put(self._pending, rid, _Pending(None, self._remote_parent(frame)))
            return try_now(peer, frame, answer)
        entry = self._server_entry(peer, frame)
        self._put(self._pending, rid, entry)

        def traced(out: Any) -> None:
            self._answered(rid, entry, out)
            answer(out)

        try:
            taken = try_now(peer, frame, traced)
        except BaseException:
            self._put(self._handoff, rid, entry)  # the transport retries it on the slow path
            raise
        if not taken:
            self._put(self._handoff, rid, entry)
        return taken

    async def serve(self, handle: Callable[[Any, _F], Awaitable[Any]], peer: Any,
                    frame: _F) -> Any:
        """The transport's task path: ``handle(peer, frame)`` under the message's span."""
        if frame.kind.startswith("$"):
            return await handle(peer, frame)
        rid = frame.request_id
        if _is_cast(frame):
            parent = self._remote_parent(frame)
            self._put(self._pending, rid, _Pending(None, parent))
            token = self._attach(parent)  # a cast forwarded to the owner keeps its trace
            try:
                return await handle(peer, frame)
            finally:
                self._detach(token)
        entry = self._handoff.pop(rid, None) or self._server_entry(peer, frame)
        self._put(self._pending, rid, entry)
        try:
            out = await handle(peer, frame)
        except BaseException as exc:
            if self._pending.get(rid) is entry:
                del self._pending[rid]
            assert entry.span is not None
            self._failed(entry.span, exc)
            entry.span.end()
            raise
        self._answered(rid, entry, out)
        return out

    async def handle(self, kind: str, key: str, msg: _Queued, run: Awaitable[None]) -> None:
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
        trace_token = current_trace_id.set(_trace_id(span))
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
                    self._end_with(span, msg.future)

    # --------------------------------------------------------------------- decisions

    def event(self, name: str, attributes: Mapping[str, object] | None = None) -> None:
        """Record ``name`` on the current span, or as a short span of its own."""
        attrs = _clean(attributes)
        current = self._current_span()
        if current.is_recording():
            current.add_event(name, attrs)
            return
        self._tracer.start_span(name, kind=self._internal, attributes=attrs).end()

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, object] | None = None) -> Iterator[Span]:
        """An INTERNAL span around a block (a migration, a failover); current inside it."""
        otel_span = self._tracer.start_span(name, kind=self._internal,
                                            attributes=_clean(attributes))
        token = self._attach(self._in_context(otel_span))
        trace_token = current_trace_id.set(_trace_id(otel_span))
        try:
            yield Span(otel_span)
        except BaseException as exc:
            self._failed(otel_span, exc)
            raise
        finally:
            current_trace_id.reset(trace_token)
            self._detach(token)
            otel_span.end()

    def _on_decision(self, name: EventName, measurements: Mapping[str, float],
                     metadata: Mapping[str, object]) -> None:
        if metadata.get("node") != self.node_name:
            return  # another node of this process (they may share one bus)
        if name == events.CLUSTER_NODE_LEFT and metadata.get("reason") != "dead":
            return  # a graceful leave is no failover
        label = _DECISION_LABELS.get(name, "phoenix." + ".".join(name[1:]))
        prefix = label.rsplit(".", 1)[0] + "."
        attrs: dict[str, object] = {prefix + k: v for k, v in metadata.items() if k != "node"}
        for k, v in measurements.items():  # metadata wins (``reachable`` is both there)
            attrs.setdefault(prefix + k, v)
        attrs["phoenix.node"] = self.node_name
        self.event(label, attrs)

    # --------------------------------------------------------------------- lifecycle

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export every finished span now (blocks the calling thread; tests use it)."""
        return self._provider.force_flush(int(timeout_s * 1000))

    async def aclose(self, timeout_s: float = 3.0) -> None:
        """Stop tracing and send the spans still batched, waiting at most ``timeout_s``.

        The export runs in a thread of its own, so the event loop keeps serving; an
        unreachable collector costs at most ``timeout_s`` of shutdown, then the exporter
        is stopped so that nothing of this tracer runs on after the node is closed.
        """
        if self._closed:
            return
        self._closed = True
        if self._bus is not None:
            self._bus.detach(self._handler_id)
        if _tracers.get(self.node_name) is self:
            del _tracers[self.node_name]
        for entry in [*self._handoff.values(), *self._pending.values()]:
            if entry.span is not None:
                entry.span.end()
        self._pending.clear()
        self._handoff.clear()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def shutdown() -> None:
            try:
                self._provider.shutdown()
            except Exception:
                _log.exception("tracing shutdown of %s failed", self.node_name)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(finished)

        # A daemon thread: an unreachable collector must not hold the process at exit.
        threading.Thread(target=shutdown, name=f"phx-tracing-{self.node_name}",
                         daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout_s)
        except TimeoutError:
            _log.warning("node %s: spans not exported within %.1fs of shutdown; dropped",
                         self.node_name, timeout_s)
            # Left alone, the exporter would retry until its own 10 s deadline after this
            # node is closed, drawing its backoff jitter from the process-global random
            # module under whatever runs next. Stopping it ends the retries now.
            self._exporter.shutdown()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), _STOPPED_EXPORT_GRACE_S)

    # --------------------------------------------------------------------- helpers

    def _attributes(self, kind: str, key: str, method: str, request_id: int,
                    extra: Mapping[str, AttributeValue] | None) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            "phoenix.node": self.node_name,
            "phoenix.kind": kind,
            "phoenix.key": key,
            "phoenix.method": method,
            "phoenix.request_id": request_id,
        }
        if extra:
            attrs.update(extra)
        return attrs

    def _remote_parent(self, frame: _Inbound) -> Context:
        # Never inherit the transport task's own context: no header means a new trace.
        return self._extract(frame.headers, self._empty()) if frame.headers else self._empty()

    def _server_entry(self, peer: Any, frame: _Inbound) -> _Pending:
        parent = self._remote_parent(frame)
        span = self._tracer.start_span(
            f"{frame.kind}/{frame.method}", context=parent, kind=self._server,
            attributes=self._attributes(frame.kind, frame.key, frame.method, frame.request_id,
                                        {"phoenix.peer": str(getattr(peer, "peer_name", ""))}),
        )
        return _Pending(span, self._in_context(span, parent))

    def _answered(self, rid: int, entry: _Pending, out: Any) -> None:
        """End a SERVER span with what the node answered (Reply, Error or Redirect)."""
        if self._pending.get(rid) is entry:
            del self._pending[rid]  # answered without running: a redirect or a refusal
        span = entry.span
        assert span is not None
        kind = type(out).__name__
        if kind == "Reply":
            span.set_attribute("phoenix.outcome", "ok")
        elif kind == "Redirect":
            span.set_attributes({"phoenix.outcome": "redirect",
                                 "phoenix.redirect.owner": str(out.owner),
                                 "phoenix.redirect.address": str(out.address)})
        elif kind == "Error":
            span.set_attributes({"phoenix.outcome": "error",
                                 "phoenix.error_type": str(out.remote_type or out.code),
                                 "phoenix.error_code": str(out.code),
                                 "phoenix.definite": bool(out.definite)})
            span.set_status(self._status(self._error, str(out.message)[:200]))
        else:
            span.set_attribute("phoenix.outcome", "no_answer")
        span.end()

    def _end_with(self, span: OtelSpan, future: asyncio.Future[bytes]) -> None:
        """Set a span's outcome from a call's result future and end it."""
        if not future.done():
            span.set_attribute("phoenix.outcome", "unanswered")
        elif future.cancelled():
            span.set_attribute("phoenix.outcome", "cancelled")
        elif (exc := future.exception()) is not None:
            self._failed(span, exc)
        else:
            span.set_attribute("phoenix.outcome", "ok")
        span.end()

    def _failed(self, span: OtelSpan, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            span.set_attribute("phoenix.outcome", "cancelled")
            return
        attrs: dict[str, AttributeValue] = {"phoenix.outcome": "error"}
        if isinstance(exc, PhoenixError):
            attrs["phoenix.error_code"] = exc.code
            attrs["phoenix.definite"] = exc.definite
            remote = getattr(exc, "remote_type", None)
            attrs["phoenix.error_type"] = remote or exc.code
        else:
            attrs["phoenix.error_type"] = f"{type(exc).__module__}.{type(exc).__qualname__}"
        span.set_attributes(attrs)
        span.set_status(self._status(self._error, str(exc)[:200]))

    @staticmethod
    def _put(table: dict[int, _Pending], rid: int, entry: _Pending) -> None:
        table[rid] = entry
        if len(table) > _MAX_PENDING:
            oldest = table.pop(next(iter(table)))
            if oldest.span is not None:
                oldest.span.set_attribute("phoenix.outcome", "dropped")
                oldest.span.end()

    def __repr__(self) -> str:
        return f"<NodeTracer {self.node_name} [{len(self._pending)} pending]>"


# ------------------------------------------------------------------------- public helpers


class Span:
    """A span opened by :func:`span`; does nothing when tracing is off."""

    __slots__ = ("_span",)

    def __init__(self, otel_span: OtelSpan | None) -> None:
        self._span = otel_span

    @property
    def recording(self) -> bool:
        """Whether anything is recorded (tracing is on for this node)."""
        return self._span is not None

    def event(self, name: str, attributes: Mapping[str, object] | None = None) -> None:
        """Add a timestamped event (a step of the migration, a chosen target...)."""
        if self._span is not None:
            self._span.add_event(name, _clean(attributes))

    def set(self, key: str, value: object) -> None:
        """Set one attribute (non-scalar values are recorded as text)."""
        if self._span is not None:
            self._span.set_attributes(_clean({key: value}))


_NO_SPAN = Span(None)


def _pick(node: str | None) -> NodeTracer | None:
    if node is not None:
        return _tracers.get(node)
    if len(_tracers) == 1:
        return next(iter(_tracers.values()))
    return None


def event(name: str, attributes: Mapping[str, object] | None = None, *,
          node: str | None = None) -> None:
    """Record a decision (a migration, a failover, a split-brain verdict) in the traces.

    Inside a traced call or message it becomes an event of the current span; elsewhere a
    short span of its own from the tracer of ``node`` (default: the process's only
    traced node). Costs one dict test when no node of this process traces.
    """
    if not _tracers:
        return
    tracer = _pick(node)
    if tracer is None:
        tracer = next(iter(_tracers.values()))
        current = tracer._current_span()
        if current.is_recording():
            current.add_event(name, _clean(attributes))
        return  # several nodes and none named: only a current span can take it
    tracer.event(name, attributes)


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, object] | None = None, *,
         node: str | None = None) -> Iterator[Span]:
    """An INTERNAL span around a block, current inside it (use within one task)::

        with tracing.span("phoenix.migration", {"phoenix.key": key}, node=me) as s:
            s.event("state_sent", {"bytes": n})

    A no-op (yields a :class:`Span` that records nothing) when ``node`` does not trace.
    """
    tracer = _pick(node) if _tracers else None
    if tracer is None:
        yield _NO_SPAN
        return
    with tracer.span(name, attributes) as opened:
        yield opened


def _trace_id(otel_span: OtelSpan) -> str | None:
    trace_id = otel_span.get_span_context().trace_id
    return f"{trace_id:032x}" if trace_id else None


def _clean(attributes: Mapping[str, object] | None) -> dict[str, AttributeValue]:
    """Keep what OpenTelemetry accepts as attributes; other values become text."""
    out: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            out[key] = value
        elif isinstance(value, list | tuple | frozenset | set):
            out[key] = [str(v) for v in (sorted(value) if isinstance(value, frozenset | set)
                                         else value)]
        else:
            out[key] = str(value)
    return out
