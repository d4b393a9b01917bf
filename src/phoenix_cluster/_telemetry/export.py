"""Where a node's spans go: its OpenTelemetry provider and exporter, from start to close.

:class:`SpanExport` builds a node's own ``TracerProvider`` (``service.name`` = the
node's name) that hands finished spans in batches to an exporter (OTLP/HTTP protobuf,
or one a test gives) from a background thread, so the event loop never waits on the
collector; it flushes on demand and shuts down within a bound, stopping an exporter that
would otherwise retry after the node closed. :func:`available`, :func:`check_available`
and :func:`otlp_traces_url` answer whether tracing can work here and where spans are
POSTed. OpenTelemetry is imported only when a :class:`SpanExport` is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

__all__ = ["SpanExport", "available", "check_available", "otlp_traces_url"]

_log = logging.getLogger("phoenix_cluster.tracing")

_INSTALL_HINT = "pip install 'phoenix-cluster[otel]'"
_STOPPED_EXPORT_GRACE_S = 1.0
"""How long a close waits, after stopping an exporter that missed its bound, for the
export thread to end (one refused or failed attempt; it retries no more)."""


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


class SpanExport:
    """One node's span pipeline: provider, batch processor and exporter.

    Args:
        node_name: ``service.name`` and ``phoenix.node`` of the resource.
        endpoint: the OTLP/HTTP collector (see :func:`otlp_traces_url`).
        exporter: another span exporter instead.
        schedule_delay_s: how long finished spans may wait before a batch is sent
            (default: ``OTEL_BSP_SCHEDULE_DELAY`` or the SDK's 5 s).

    Raises:
        ImportError: the ``[otel]`` extra is missing.
        ValueError: neither ``endpoint`` nor ``exporter`` was given.
    """

    def __init__(self, node_name: str, *, endpoint: str | None,
                 exporter: SpanExporter | None, schedule_delay_s: float | None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

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
        self.tracer: Tracer = self._provider.get_tracer("phoenix_cluster", __version__)

    def flush(self, timeout_s: float) -> bool:
        """Export every finished span now (blocks the calling thread)."""
        return self._provider.force_flush(int(timeout_s * 1000))

    async def aclose(self, timeout_s: float) -> None:
        """Send the spans still batched, waiting at most ``timeout_s``.

        The export runs in a thread of its own, so the event loop keeps serving; an
        unreachable collector costs at most ``timeout_s`` of shutdown, then the exporter
        is stopped so that nothing of this node's tracing runs on after it is closed.
        """
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
        thread = threading.Thread(target=shutdown, name=f"phx-tracing-{self.node_name}",
                                  daemon=True)
        thread.start()
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
        # ``done`` is set from the thread's last lines: let it end, so that nothing of
        # this node's tracing outlives ``aclose`` (on a loaded machine it may not have).
        if thread.is_alive():
            await asyncio.to_thread(thread.join, _STOPPED_EXPORT_GRACE_S)
