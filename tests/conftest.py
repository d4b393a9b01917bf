"""Suite-wide fixtures, and the rule that CI never skips (``ci_gate``)."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci_gate import pytest_make_collect_report as pytest_make_collect_report
from ci_gate import pytest_runtest_makereport as pytest_runtest_makereport
from transport_helpers import certs_with_cryptography, certs_with_openssl

import phoenix_cluster as phx


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep generated cookie files (``~/.phoenix/cookie``) out of the real home."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PHX_COOKIE", raising=False)
    return home


@pytest.fixture(autouse=True)
def _no_dropped_messages(request: pytest.FixtureRequest) -> Iterator[list[dict[str, object]]]:
    """Fail any test during which an in-process node dropped an accepted message
    (``phoenix_messages_dropped_total`` rose), unless it is marked ``drops_messages``."""
    drops: list[dict[str, object]] = []
    handler_id = f"no-dropped-messages-{id(drops)}"
    phx.telemetry.attach(handler_id, [phx.telemetry.MESSAGE_DROPPED],
                         lambda _event, _m, metadata: drops.append(dict(metadata)))
    try:
        yield drops
    finally:
        phx.telemetry.detach(handler_id)
    if drops and request.node.get_closest_marker("drops_messages") is None:
        pytest.fail(f"{len(drops)} message(s) dropped: {drops[:3]}")


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

