"""The HTTP endpoint's bearer token: which routes need it, where it comes from, no leaks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from web_helpers import get

import phoenix_cluster as phx
from phoenix_cluster._foundation.settings import Settings
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._web.auth import OPEN_PATHS, authorized, load_http_token
from phoenix_cluster.errors import ConfigError

TOKEN = "http-bearer-9f3c1e77a2"
GUARDED = ["/", "/static/dashboard.js", "/api/cluster", "/api/agents", "/api/events",
           "/api/agents/show?kind=k&key=a"]


@pytest.fixture
async def node() -> AsyncIterator[phx.Node]:
    # Loopback, as every test server; a token that is set is enforced there too, so this
    # exercises the same guard a non-loopback bind gets.
    async with phx.Node(name="auth-a", listen="127.0.0.1:0", http="127.0.0.1:0",
                        http_token=TOKEN, telemetry=TelemetryBus()) as n:
        await n.wait_caught_up()  # ready: every partition elected
        yield n


def url(node: phx.Node, path: str) -> str:
    assert node.http_url is not None
    return node.http_url.rstrip("/") + path


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
async def test_probes_and_metrics_need_no_token(node: phx.Node, path: str) -> None:
    status, _, body = await get(url(node, path))
    assert status == 200, body
    assert TOKEN.encode() not in body


@pytest.mark.parametrize("path", GUARDED)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}",
                                    f"Bearer {TOKEN}x", "Bearer "])
async def test_everything_else_is_401_without_the_token(node: phx.Node, path: str,
                                                        header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    status, response_headers, body = await get(url(node, path), headers=headers)
    assert status == 401
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN.encode() not in body


@pytest.mark.parametrize("path", ["/api/cluster", "/api/agents", "/"])
async def test_the_token_opens_the_guarded_routes(node: phx.Node, path: str) -> None:
    status, _, _ = await get(url(node, path), headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    status, _, _ = await get(url(node, path), headers={"Authorization": f"bearer  {TOKEN}"})
    assert status == 200


def test_a_public_bind_without_a_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="http_token_file") as info:
        phx.Node(http="0.0.0.0:9100", http_public=True)
    assert info.value.key == "http_token"


def test_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings(http="0.0.0.0:9100", http_public=True, http_token_file=str(token_file))
    assert load_http_token(settings, public=True) == TOKEN
    phx.Node(http="0.0.0.0:9100", http_public=True, http_token_file=str(token_file))


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHX_HTTP_TOKEN", TOKEN)
    node = phx.Node(http="10.1.2.3:9100", http_public=True)
    assert node.settings.http_token == TOKEN


@pytest.mark.parametrize(("content", "reason"), [(None, "cannot read"), ("\n", "is empty")])
def test_bad_token_file_is_a_config_error(tmp_path: Path, content: str | None,
                                          reason: str) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(ConfigError, match=reason) as info:
        phx.Node(http="127.0.0.1:0", http_token_file=str(token_file))
    assert info.value.key == "http_token_file"


def test_no_token_on_loopback_means_open() -> None:
    assert load_http_token(Settings(http="127.0.0.1:9100"), public=False) is None
    assert authorized("/api/cluster", None, None)
    assert not authorized("/api/cluster", None, TOKEN)


def test_secrets_stay_out_of_reprs_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(cookie="cookie-secret-1", http_token=TOKEN)
    text = repr(settings)
    assert TOKEN not in text and "cookie-secret-1" not in text
    assert "http_token=***" in text and "cookie=***" in text
    assert "http_token_file=None" in text  # the other fields still show
    with caplog.at_level(logging.DEBUG):
        phx.Node(http="0.0.0.0:9100", http_public=True, http_token=TOKEN)
    assert TOKEN not in caplog.text
