"""Fixtures for transport tests; everything they make is closed at teardown."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from transport_helpers import (
    SECRET,
    MakeTransport,
    Proxy,
    certs_with_cryptography,
    certs_with_openssl,
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


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA plus server and client certificates for 127.0.0.1.

    Made with the ``cryptography`` package when it is importable, else with the
    ``openssl`` command; the test is skipped when neither is available.
    """
    d = tmp_path_factory.mktemp("tls")
    if importlib.util.find_spec("cryptography") is not None:
        certs_with_cryptography(d)
    elif (openssl := shutil.which("openssl")) is not None:
        certs_with_openssl(openssl, d)
    else:
        pytest.skip("neither the cryptography package nor the openssl command is available")
    return {name: d / name for name in ("ca.pem", "server.pem", "server.key", "client.pem",
                                         "client.key")}


