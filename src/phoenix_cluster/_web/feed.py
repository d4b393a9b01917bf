"""The live feed behind ``/api/events``: recent cluster events and a fan-out to streams.

:class:`Feed` keeps the last events this node saw (joins, suspicions, deaths, split-brain
decisions with their reasons, migrations, transport switches, supervisor trouble) and
hands every published message to each connected stream. A stream that falls
``STREAM_BUFFER`` messages behind (a stalled browser) is dropped rather than allowed to
grow memory; its client reconnects and starts from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import msgspec

from .._telemetry import events
from .._telemetry.bus import EventName
from .view import NodeView

__all__ = ["RECENT_EVENTS", "STREAM_BUFFER", "Feed", "Stream"]

RECENT_EVENTS = 200
"""Events kept for a dashboard that connects later."""

STREAM_BUFFER = 256
"""Messages a stream may fall behind before it is dropped."""

_log = logging.getLogger("phoenix_cluster.web")

Stream = asyncio.Queue[bytes | None]
"""One connected client's queue of encoded SSE messages; ``None`` ends it."""

# What each watched event is called on the dashboard.
_EVENT_TYPES: dict[EventName, str] = {
    events.CLUSTER_NODE_JOINED: "joined",
    events.CLUSTER_NODE_SUSPECTED: "suspected",
    events.CLUSTER_NODE_LEFT: "left",  # "dead" when metadata["reason"] says so
    events.CLUSTER_PARTITION_DETECTED: "split-brain",
    events.AGENT_MIGRATED: "migrated",
    events.REGISTRY_NAME_CONFLICT: "name-conflict",
    events.TRANSPORT_PROTOCOL_SWITCHED: "protocol-switch",
    events.SUPERVISOR_CHILD_CRASHED: "service-crashed",
    events.SUPERVISOR_ESCALATED: "services-failed",
    events.NODE_STOPPED: "stopping",
}


# One human line per event type, filled from the event's metadata.
_TEXTS = {
    "joined": "{peer} joined ({address}, incarnation {incarnation})",
    "suspected": "{peer} suspected by {by}",
    "dead": "{peer} is dead",
    "left": "{peer} left",
    "split-brain": "{decision} ({strategy}): {reason}; down: {down}",
    "migrated": "{kind}/{key} moved from {from} to {to} ({reason})",
    "name-conflict": "name {name}: {winner} keeps it, {loser} lost it",
    "protocol-switch": "{peer}: {from} -> {to} ({reason})",
    "service-crashed": "{child}: {reason}",
    "services-failed": "{supervisor}: {reason}",
    "stopping": "{reason}",
}


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return {"by": "a peer", "down": "nobody"}.get(key, "?")


def _text(event: str, md: Mapping[str, object]) -> str:
    """One human line describing the event."""
    fields = _Fields()
    for key, value in md.items():
        if isinstance(value, (tuple, list)):
            value = ", ".join(map(str, value))
        if value not in (None, ""):
            fields[key] = str(value)
    return _TEXTS[event].format_map(fields)


def _plain(value: object) -> object:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


def sse(event: str, data: object) -> bytes:
    """One server-sent-events message (JSON data has no raw newlines)."""
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


class Feed:
    """Recent events of one node and the streams that follow them."""

    def __init__(self, node: NodeView) -> None:
        self._node = node
        self._handler_id = f"phoenix.web.feed.{node.name}.{id(self):x}"
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._streams: set[Stream] = set()

    @property
    def streams(self) -> int:
        """How many clients follow the feed now."""
        return len(self._streams)

    def attach(self) -> None:
        self._node.telemetry.attach(self._handler_id, _EVENT_TYPES, self._on_event)

    def detach(self) -> None:
        self._node.telemetry.detach(self._handler_id)

    def _on_event(self, event: EventName, m: Mapping[str, float],
                  md: Mapping[str, object]) -> None:
        if md.get("node") != self._node.name:
            return
        kind = _EVENT_TYPES[event]
        if kind == "left" and md.get("reason") == "dead":
            kind = "dead"
        item = {
            "t": self._node.env.clock.wall(),
            "type": kind,
            "text": _text(kind, md),
            "meta": {k: _plain(v) for k, v in md.items()},
        }
        self.recent.append(item)
        self.publish("event", item)

    def subscribe(self) -> Stream:
        stream: Stream = asyncio.Queue(STREAM_BUFFER)
        self._streams.add(stream)
        return stream

    def unsubscribe(self, stream: Stream) -> None:
        self._streams.discard(stream)

    def publish(self, event: str, data: object) -> None:
        """Send one message to every stream (encoded once)."""
        if not self._streams:
            return
        message = sse(event, data)
        for stream in list(self._streams):
            try:
                stream.put_nowait(message)
            except asyncio.QueueFull:
                _log.info("node %s: dropping a dashboard stream that fell %d messages "
                          "behind", self._node.name, STREAM_BUFFER)
                self._end(stream)

    def _end(self, stream: Stream) -> None:
        self._streams.discard(stream)
        while not stream.empty():  # make room for the end marker
            stream.get_nowait()
        stream.put_nowait(None)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for stream in list(self._streams):
            self._end(stream)
