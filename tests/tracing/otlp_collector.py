"""A stand-in OpenTelemetry collector: accepts OTLP/HTTP protobuf trace exports.

It speaks the real protocol: ``POST /v1/traces`` with an ``ExportTraceServiceRequest``
body (decoded with ``opentelemetry-proto``'s generated classes), answered with an
``ExportTraceServiceResponse``. It serves from a thread of the test process on
127.0.0.1, so node processes and in-process nodes export to it alike.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

KINDS = {Span.SPAN_KIND_INTERNAL: "INTERNAL", Span.SPAN_KIND_SERVER: "SERVER",
         Span.SPAN_KIND_CLIENT: "CLIENT", Span.SPAN_KIND_PRODUCER: "PRODUCER",
         Span.SPAN_KIND_CONSUMER: "CONSUMER", Span.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector got it (ids in lowercase hex, as W3C headers write them)."""

    service: str
    resource: dict[str, Any]
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    error: bool
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which is None:
        return None
    return getattr(v, which)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


class OtlpCollector:
    """Collects every span POSTed to ``url``; ``spans()`` returns them so far."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0
        self.bad_requests = 0
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = (self.path == "/v1/traces" and
                      self.headers.get("Content-Type") == "application/x-protobuf")
                if ok:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    collector._add(request)
                    answer = ExportTraceServiceResponse().SerializeToString()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-protobuf")
                else:
                    with collector._lock:
                        collector.bad_requests += 1
                    answer = b"not an OTLP trace export"
                    self.send_response(404)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output stays readable

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        """The endpoint to give nodes (``/v1/traces`` is appended by them)."""
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="otlp-collector", daemon=True)

    def _add(self, request: ExportTraceServiceRequest) -> None:
        got = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        resource=resource,
                        name=s.name,
                        kind=KINDS[s.kind],
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        attributes=_attrs(s.attributes),
                        error=s.status.code == Status.STATUS_CODE_ERROR,
                        events=[(e.name, _attrs(e.attributes)) for e in s.events],
                    ))
        with self._lock:
            self.requests += 1
            self._spans.extend(got)

    def spans(self, where: Callable[[ReceivedSpan], bool] = lambda s: True) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if where(s)]

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextmanager
def running_collector() -> Iterator[OtlpCollector]:
    collector = OtlpCollector()
    collector.start()
    try:
        yield collector
    finally:
        collector.close()
