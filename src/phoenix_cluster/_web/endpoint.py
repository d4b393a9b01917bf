"""The node's handle on its HTTP endpoint: checks the address early, starts it late.

Constructed with the node (so a bad ``http`` setting fails before anything starts);
the HTTP stack (aiohttp, prometheus-client) is imported only when the endpoint starts,
so nodes without ``http`` never load it, and the core library installs without it.
Asking for ``http`` without the ``web`` extra fails at construction, naming the extra.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._foundation.extras import missing_module
from ..errors import ConfigError
from .auth import is_loopback, load_http_token
from .view import NodeView

if TYPE_CHECKING:
    from .server import WebServer

__all__ = ["HttpEndpoint", "check_http_address", "check_web_extra", "is_loopback"]

_log = logging.getLogger("phoenix_cluster.web")


def check_http_address(address: str, public: bool = False) -> tuple[str, int]:
    """Split ``HOST:PORT`` and refuse a non-loopback host unless ``public`` allows it.

    Returns:
        ``(host, port)`` with IPv6 brackets removed.

    Raises:
        ConfigError: the address has no port, or names a non-loopback host while
            ``public`` is false.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"bad setting http: expected HOST:PORT, got {address!r}", key="http")
    host = host.removeprefix("[").removesuffix("]")
    if not public and not is_loopback(host):
        raise ConfigError(
            f"bad setting http: {address!r} is not a loopback address. The HTTP endpoint "
            "shows the cluster's members, agents and metrics to anyone who reaches it; "
            "bind it to 127.0.0.1, or set http_public (--http-public, PHX_HTTP_PUBLIC=1) "
            "and a bearer token (--http-token-file, PHX_HTTP_TOKEN) to expose it on purpose",
            key="http",
        )
    return host, int(port)


def check_web_extra() -> None:
    """Raise :class:`ConfigError` (key ``http``) unless the ``web`` extra is installed."""
    missing = missing_module("web")
    if missing is not None:
        raise ConfigError(
            f"bad setting http: the HTTP endpoint needs the 'web' extra ({missing} is not "
            "installed): pip install 'phoenix-cluster[web]'", key="http")


class HttpEndpoint:
    """Serves ``/metrics``, health, the JSON API and the dashboard for one node.

    Raises:
        ConfigError: ``node.settings.http`` is malformed or not allowed (see
            :func:`check_http_address`), or the bearer token is missing or unreadable
            (see :func:`~phoenix_cluster._web.auth.load_http_token`), or the ``web``
            extra (aiohttp, prometheus-client) is not installed.
    """

    def __init__(self, node: NodeView) -> None:
        address = node.settings.http
        if address is None:
            raise ConfigError("bad setting http: the endpoint needs an address", key="http")
        check_web_extra()
        self._node = node
        self._host, self._port = check_http_address(address, node.settings.http_public)
        self._token = load_http_token(node.settings, public=not is_loopback(self._host))
        self._server: WebServer | None = None
        self.url: str | None = None
        """``http://host:port/`` once started (with the port the OS picked for port 0)."""

    async def start(self) -> str:
        """Bind and serve; returns the dashboard's URL.

        Raises:
            ConfigError: the address cannot be bound (in use, not local), like a busy
                ``listen`` address.
        """
        from .server import WebServer  # the HTTP stack loads only when it is used

        server = WebServer(self._node, self._host, self._port, token=self._token)
        try:
            self.url = await server.start()
        except OSError as exc:
            raise ConfigError(f"bad setting http: cannot listen on {self._host}:{self._port}: "
                              f"{exc.strerror or exc}", key="http") from exc
        self._server = server
        _log.info("node %s: dashboard at %s (metrics at %smetrics)", self._node.name,
                  self.url, self.url)
        return self.url

    async def aclose(self) -> None:
        """Stop serving (idempotent); open event streams are ended."""
        server, self._server = self._server, None
        self.url = None
        if server is not None:
            await server.aclose()
