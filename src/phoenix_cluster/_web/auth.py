"""The HTTP endpoint's bearer token: where it comes from and which requests need it.

A node whose endpoint binds a non-loopback address must have a token (``http_token``,
``PHX_HTTP_TOKEN`` or ``http_token_file``); every route then needs
``Authorization: Bearer <token>`` except the ones an orchestrator and Prometheus call
without credentials (:data:`OPEN_PATHS`). A token that is set is required on a loopback
bind too. The token is compared in constant time and never logged or shown in a repr.
Standard library only: the endpoint checks it before the HTTP stack is imported.
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from .._foundation.settings import Settings
from ..errors import ConfigError

__all__ = ["OPEN_PATHS", "authorized", "is_loopback", "load_http_token"]

OPEN_PATHS = frozenset({"/metrics", "/health/live", "/health/ready"})
"""Routes answered without the token: probes and scrapes carry no credentials. They show
this node's name, address, readiness and counts, not the member list, keys or state."""

_FORM = "a file holding the HTTP bearer token"


def load_http_token(settings: Settings, *, public: bool) -> str | None:
    """The token the endpoint requires, or ``None`` when it requires none.

    Args:
        settings: ``http_token`` wins over ``http_token_file``.
        public: whether the endpoint binds a non-loopback address (then a token is
            mandatory).

    Raises:
        ConfigError: ``http_token_file`` cannot be read or is empty; or ``public`` and
            no token is set.
    """
    token = settings.http_token.strip() if settings.http_token else None
    if not token and settings.http_token_file is not None:
        path = settings.http_token_file
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"bad setting http_token_file: cannot read {path!r} "
                              f"({reason}); expected {_FORM}", key="http_token_file") from None
        if not token:
            raise ConfigError(f"bad setting http_token_file: {path!r} is empty; expected "
                              f"{_FORM}", key="http_token_file")
    if public and not token:
        raise ConfigError(
            f"bad setting http_token: the HTTP endpoint binds {settings.http!r}, which is "
            "not loopback, so it needs a bearer token: set http_token_file "
            "(--http-token-file, PHX_HTTP_TOKEN_FILE) or PHX_HTTP_TOKEN",
            key="http_token",
        )
    return token or None


def authorized(path: str, header: str | None, token: str | None) -> bool:
    """Whether a request for ``path`` with ``Authorization: header`` may be answered."""
    if token is None or path in OPEN_PATHS:
        return True
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) only accepts local connections."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address
