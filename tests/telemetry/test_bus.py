"""The telemetry bus: attach, detach, execute, and broken handlers."""

from __future__ import annotations

from typing import Any

import pytest

from phoenix_cluster.telemetry import TelemetryBus

EV = ("phoenix", "test", "event")
OTHER = ("phoenix", "test", "other")


def test_handlers_receive_events_in_attach_order() -> None:
    bus = TelemetryBus()
    got: list[tuple[str, Any, Any, Any]] = []
    bus.attach("a", [EV], lambda e, m, md: got.append(("a", e, m, md)))
    bus.attach("b", [EV, OTHER], lambda e, m, md: got.append(("b", e, m, md)))
    bus.execute(EV, {"duration": 1.5}, {"node": "n"})
    bus.execute(OTHER)
    assert got == [
        ("a", EV, {"duration": 1.5}, {"node": "n"}),
        ("b", EV, {"duration": 1.5}, {"node": "n"}),
        ("b", OTHER, {}, {}),
    ]
    assert bus.handlers(EV) == ["a", "b"]
    assert bus.has_handlers(OTHER)
    assert "2 handlers" in repr(bus)


def test_detach_and_duplicate_ids() -> None:
    bus = TelemetryBus()
    bus.attach("a", [EV], lambda e, m, md: None)
    with pytest.raises(ValueError, match="already attached"):
        bus.attach("a", [OTHER], lambda e, m, md: None)
    assert bus.detach("a") is True
    assert bus.detach("a") is False
    assert not bus.has_handlers(EV)
    bus.execute(EV)  # nobody listening: a no-op


def test_a_raising_handler_is_detached_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    bus = TelemetryBus()
    calls: list[str] = []

    def broken(e: Any, m: Any, md: Any) -> None:
        calls.append("broken")
        raise ZeroDivisionError("oops")

    bus.attach("broken", [EV], broken)
    bus.attach("fine", [EV], lambda e, m, md: calls.append("fine"))
    bus.execute(EV)  # must not raise
    bus.execute(EV)
    assert calls == ["broken", "fine", "fine"]
    assert bus.handlers(EV) == ["fine"]
    assert "'broken' raised on event phoenix.test.event and was detached" in caplog.text
