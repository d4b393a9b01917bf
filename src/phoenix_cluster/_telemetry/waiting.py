"""The traces of messages waiting to run on this node, matched with them by request id.

The inbound hook registers a span (or a parent context) under the request id before the
message can run, and the mailbox's drain hook takes it when it runs the message
(``tracing.py``). Entries for messages that never run (a cast refused or forwarded) are
dropped oldest first past a bound. Also here: what those hooks read of a frame or a
queued message, as protocols (the wire and agent layers sit above this one).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span as OtelSpan

__all__ = ["MAX_WAITING", "Inbound", "Queued", "Waiting", "end_waiting", "is_cast",
           "put_waiting"]

MAX_WAITING = 10_000
"""Request ids waiting for their message to run; past it the oldest are dropped (they
belong to casts that were refused or forwarded, which never run here)."""


class Queued(Protocol):
    """What the drain hook reads of a mailbox message."""

    @property
    def request_id(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def future(self) -> asyncio.Future[bytes] | None: ...


class Inbound(Protocol):
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


def is_cast(frame: Inbound) -> bool:
    """Whether an inbound frame is a Cast (its span starts when it runs, not on arrival).

    By name: the wire layer sits above this one, and a Cast has a ``timeout_ms`` of its
    own now (for its acknowledgement), so no attribute tells it from a Call.
    """
    return type(frame).__name__ == "Cast"


class Waiting:
    """A message's trace while it waits in a mailbox: a started span, or a parent."""

    __slots__ = ("context", "span")

    def __init__(self, span: OtelSpan | None, context: Context) -> None:
        self.span = span  # started at receipt (remote calls); None: start one on running
        self.context = context  # the span's context, or the parent for the one to start


def put_waiting(table: dict[int, Waiting], rid: int, entry: Waiting) -> None:
    """Keep ``entry`` under ``rid``; past the bound, drop (and end) the oldest entry."""
    table[rid] = entry
    if len(table) > MAX_WAITING:
        oldest = table.pop(next(iter(table)))
        if oldest.span is not None:
            oldest.span.set_attribute("phoenix.outcome", "dropped")
            oldest.span.end()


def end_waiting(*tables: dict[int, Waiting]) -> None:
    """End every started span in ``tables`` and empty them (the tracer is closing)."""
    for table in tables:
        for entry in table.values():
            if entry.span is not None:
                entry.span.end()
        table.clear()
