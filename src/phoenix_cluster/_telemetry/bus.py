"""The telemetry event bus: ``attach`` handlers to event names, ``execute`` events.

Modelled on Erlang's ``:telemetry``: an event is a tuple of strings such as
``("phoenix", "agent", "started")`` with a mapping of numeric measurements and a mapping
of metadata. Handlers run synchronously in the emitter's task, so they must be quick; a
handler that raises is detached and logged, never breaking the code that emitted.

Emitting with no handler attached costs one dict lookup, so events can sit on hot paths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "EventName",
    "Handler",
    "TelemetryBus",
    "default_bus",
]

EventName = tuple[str, ...]
Handler = Callable[[EventName, Mapping[str, float], Mapping[str, object]], None]

_log = logging.getLogger("phoenix_cluster.telemetry")


@dataclass(frozen=True, slots=True)
class _Attachment:
    handler_id: str
    fn: Handler


class TelemetryBus:
    """A registry of handlers keyed by event name."""

    def __init__(self) -> None:
        self._by_event: dict[EventName, tuple[_Attachment, ...]] = {}
        self._events_by_id: dict[str, tuple[EventName, ...]] = {}
        self.listened: Mapping[EventName, object] = self._by_event
        """The events with at least one handler (read only): ``event in bus.listened``
        is :meth:`has_handlers` without a call, for the paths every message takes."""

    def attach(self, handler_id: str, event_names: Iterable[EventName], fn: Handler) -> None:
        """Call ``fn(event, measurements, metadata)`` for every event in ``event_names``.

        Raises:
            ValueError: ``handler_id`` is already attached (detach it first).
        """
        if handler_id in self._events_by_id:
            raise ValueError(f"telemetry handler {handler_id!r} is already attached")
        names = tuple(tuple(name) for name in event_names)
        attachment = _Attachment(handler_id, fn)
        for name in names:
            self._by_event[name] = (*self._by_event.get(name, ()), attachment)
        self._events_by_id[handler_id] = names

    def detach(self, handler_id: str) -> bool:
        """Remove a handler. Returns ``False`` if it was not attached."""
        names = self._events_by_id.pop(handler_id, None)
        if names is None:
            return False
        for name in names:
            left = tuple(a for a in self._by_event.get(name, ()) if a.handler_id != handler_id)
            if left:
                self._by_event[name] = left
            else:
                self._by_event.pop(name, None)
        return True

    def handlers(self, event: EventName) -> list[str]:
        """The ids of the handlers attached to ``event``."""
        return [a.handler_id for a in self._by_event.get(event, ())]

    def has_handlers(self, event: EventName) -> bool:
        """Whether emitting ``event`` would reach anybody (skip building costly metadata)."""
        return event in self._by_event

    def execute(
        self,
        event: EventName,
        measurements: Mapping[str, float] | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        """Deliver an event to its handlers, in attach order."""
        attachments = self._by_event.get(event)
        if not attachments:
            return
        m = measurements if measurements is not None else {}
        md = metadata if metadata is not None else {}
        for attachment in attachments:
            try:
                attachment.fn(event, m, md)
            except Exception:
                # A broken handler must never break the emitter: drop it, say so once.
                self.detach(attachment.handler_id)
                _log.exception(
                    "telemetry handler %r raised on event %s and was detached",
                    attachment.handler_id,
                    ".".join(event),
                )

    def __repr__(self) -> str:
        return f"<TelemetryBus [{len(self._events_by_id)} handlers, {len(self._by_event)} events]>"


default_bus = TelemetryBus()
"""The process-wide bus that ``phoenix_cluster.telemetry`` functions use."""
