"""What a Phoenix span holds: its attributes, its outcome, and the handle code gets.

Every span a node records carries the same ``phoenix.*`` attributes (:func:`call_attributes`)
and ends with one ``phoenix.outcome``: ``ok``, ``error`` (with the error's code, type and
whether it is definite, and an error status), ``redirect``, ``cancelled``, ``unanswered``,
``no_answer``, ``handled`` (a cast) or ``dropped``. The functions here set them on an
OpenTelemetry span from what a call produced: an exception (:func:`record_failure`), a
result future (:func:`end_with`) or the frame a node answered (:func:`record_answer`).
:class:`Span` is the handle :func:`~.tracing.span` yields, which does nothing when
tracing is off. ``docs/tracing.md`` lists the attributes.

OpenTelemetry is imported only by functions that run while tracing is on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ..errors import PhoenixError

if TYPE_CHECKING:
    from opentelemetry.trace import Span as OtelSpan

__all__ = [
    "NO_SPAN",
    "AttributeValue",
    "Span",
    "call_attributes",
    "clean_attributes",
    "current_trace_id",
    "end_with",
    "record_answer",
    "record_failure",
    "trace_id_of",
]

current_trace_id: ContextVar[str | None] = ContextVar("phoenix_trace_id", default=None)
"""The trace id (32 lowercase hex digits) of the traced call or message being handled in
this task, or ``None``: what log lines print as ``trace_id``."""

AttributeValue = str | bool | int | float | Sequence[str]
"""What a span attribute may hold."""


class Span:
    """A span opened by :func:`~.tracing.span`; does nothing when tracing is off."""

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
            self._span.add_event(name, clean_attributes(attributes))

    def set(self, key: str, value: object) -> None:
        """Set one attribute (non-scalar values are recorded as text)."""
        if self._span is not None:
            self._span.set_attributes(clean_attributes({key: value}))


NO_SPAN = Span(None)
"""The span of a block that is not traced."""


def call_attributes(node: str, kind: str, key: str, method: str, request_id: int,
                    extra: Mapping[str, AttributeValue] | None) -> dict[str, AttributeValue]:
    """The attributes of a call's or a message's span on ``node``."""
    attrs: dict[str, AttributeValue] = {
        "phoenix.node": node,
        "phoenix.kind": kind,
        "phoenix.key": key,
        "phoenix.method": method,
        "phoenix.request_id": request_id,
    }
    if extra:
        attrs.update(extra)
    return attrs


def record_failure(span: OtelSpan, exc: BaseException) -> None:
    """Set a span's outcome from the exception its call raised (a cancel is no error)."""
    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute("phoenix.outcome", "cancelled")
        return
    from opentelemetry.trace import Status, StatusCode

    attrs: dict[str, AttributeValue] = {"phoenix.outcome": "error"}
    if isinstance(exc, PhoenixError):
        attrs["phoenix.error_code"] = exc.code
        attrs["phoenix.definite"] = exc.definite
        remote = getattr(exc, "remote_type", None)
        attrs["phoenix.error_type"] = remote or exc.code
    else:
        attrs["phoenix.error_type"] = f"{type(exc).__module__}.{type(exc).__qualname__}"
    span.set_attributes(attrs)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))


def end_with(span: OtelSpan, future: asyncio.Future[bytes]) -> None:
    """Set a span's outcome from a call's result future and end it."""
    if not future.done():
        span.set_attribute("phoenix.outcome", "unanswered")
    elif future.cancelled():
        span.set_attribute("phoenix.outcome", "cancelled")
    elif (exc := future.exception()) is not None:
        record_failure(span, exc)
    else:
        span.set_attribute("phoenix.outcome", "ok")
    span.end()


def record_answer(span: OtelSpan, out: Any) -> None:
    """End a SERVER span with what the node answered (Reply, Error or Redirect).

    By the frame's class name: the wire layer sits above this one.
    """
    kind = type(out).__name__
    if kind == "Reply":
        span.set_attribute("phoenix.outcome", "ok")
    elif kind == "Redirect":
        span.set_attributes({"phoenix.outcome": "redirect",
                             "phoenix.redirect.owner": str(out.owner),
                             "phoenix.redirect.address": str(out.address)})
    elif kind == "Error":
        from opentelemetry.trace import Status, StatusCode

        span.set_attributes({"phoenix.outcome": "error",
                             "phoenix.error_type": str(out.remote_type or out.code),
                             "phoenix.error_code": str(out.code),
                             "phoenix.definite": bool(out.definite)})
        span.set_status(Status(StatusCode.ERROR, str(out.message)[:200]))
    else:
        span.set_attribute("phoenix.outcome", "no_answer")
    span.end()


def trace_id_of(otel_span: OtelSpan) -> str | None:
    """The span's trace id as 32 hex digits (``None`` for an invalid span)."""
    trace_id = otel_span.get_span_context().trace_id
    return f"{trace_id:032x}" if trace_id else None


def clean_attributes(attributes: Mapping[str, object] | None) -> dict[str, AttributeValue]:
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
