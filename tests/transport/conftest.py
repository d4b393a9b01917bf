"""Fixtures for transport tests; everything they make is closed at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from transport_helpers import (
    SECRET,
    MakeTransport,
    Proxy,
    echo,
)

from phoenix_cluster._foundation.env import Env
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._transport.tcp import TcpTransport


@pytest.fixture
async def make_transport() -> AsyncIterator[MakeTransport]:
    """Build transports (closed at teardown). Keywords go to ``TcpTransport``."""
    made: list[TcpTransport] = []

    def make(name: str, *, secret: bytes = SECRET, handler: Any = echo, incarnation: int = 1,
             env: Env | None = None, bus: TelemetryBus | None = None,
             max_frame_bytes: int = 1 << 20, **kw: Any) -> TcpTransport:
        t = TcpTransport(name, incarnation, secret, env=env or Env(), bus=bus or TelemetryBus(),
                         max_frame_bytes=max_frame_bytes, handler=handler, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        await t.aclose()


@pytest.fixture
async def make_proxy() -> AsyncIterator[Callable[[str], Proxy]]:
    made: list[Proxy] = []

    def make(target: str) -> Proxy:
        p = Proxy(target)
        made.append(p)
        return p

    yield make
    for p in made:
        await p.aclose()



