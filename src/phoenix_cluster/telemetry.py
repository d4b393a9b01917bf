"""Phoenix telemetry: attach handlers to the events the runtime emits.

    import phoenix_cluster as phx

    def on_call(event, measurements, metadata):
        print(metadata["kind"], metadata["method"], measurements["duration"])

    phx.telemetry.attach("my-logger", [phx.telemetry.AGENT_CALL_STOP], on_call)

A handler that raises is detached and logged; it never breaks the emitting code.
"""

from __future__ import annotations

from ._telemetry.bus import EventName as EventName
from ._telemetry.bus import Handler as Handler
from ._telemetry.bus import TelemetryBus as TelemetryBus
from ._telemetry.bus import default_bus
from ._telemetry.events import *  # noqa: F403  (the event-name constants)
from ._telemetry.events import __all__ as _event_names

attach = default_bus.attach
detach = default_bus.detach
execute = default_bus.execute
handlers = default_bus.handlers

__all__ = [
    "EventName",
    "Handler",
    "TelemetryBus",
    "attach",
    "detach",
    "execute",
    "handlers",
    *_event_names,
]
