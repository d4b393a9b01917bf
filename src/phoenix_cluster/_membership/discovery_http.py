"""The small JSON-over-HTTP client shared by the etcd, Kubernetes and Consul providers.

One lazily opened ``aiohttp.ClientSession`` per provider, every request bounded by a
deadline on the node's clock (``fail_after``), and every failure (refused connection,
TLS, timeout, non-2xx status, bad JSON) translated once, here, into
:class:`~.discovery.DiscoveryError` with the method, URL and what came back. aiohttp is
the whole dependency: the official SDKs (kubernetes-asyncio, python-etcd3 over gRPC,
python-consul) would add megabytes of generated code for three GET/PUT calls each.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from phoenix_cluster._foundation.env import Clock
from phoenix_cluster._transport.tasks import fail_after

from .discovery import DiscoveryError

__all__ = ["HttpStatusError", "JsonHttp", "ssl_context"]

_MAX_BODY_BYTES = 32 * 1024 * 1024


class HttpStatusError(DiscoveryError):
    """The server answered with a status outside 2xx.

    Attributes:
        status: the HTTP status code.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def ssl_context(ca_path: str | None) -> ssl.SSLContext:
    """A verifying client context; trusting only ``ca_path`` when given."""
    try:
        return ssl.create_default_context(cafile=ca_path)
    except (OSError, ssl.SSLError) as exc:
        raise DiscoveryError(f"cannot load CA bundle {ca_path!r}: {exc}") from exc


class JsonHttp:
    """JSON requests to one base URL.

    Args:
        what: the provider's name for error messages (``"etcd"``).
        base_url: ``scheme://host:port`` (no trailing slash).
        clock: the node's clock; bounds every request with ``timeout_s``.
        timeout_s: deadline per request, connect included.
        ssl: the TLS context for ``https``; ``None`` uses the system's trust store.
    """

    __slots__ = ("_base", "_clock", "_session", "_ssl", "_timeout_s", "_what")

    def __init__(
        self,
        what: str,
        base_url: str,
        clock: Clock,
        *,
        timeout_s: float = 5.0,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self._what = what
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._timeout_s = timeout_s
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return self._base

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body (``None`` if empty).

        Raises:
            HttpStatusError: a non-2xx answer; the message quotes the server's error text.
            DiscoveryError: no answer in time, connection or TLS failure, or invalid JSON.
        """
        url = self._base + path
        where = f"{self._what}: {method} {url}"
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        data = None if body is None else json.dumps(body).encode()
        send_headers = {"Accept": "application/json"}
        if data is not None:
            send_headers["Content-Type"] = "application/json"
        send_headers.update(headers or {})
        try:
            async with fail_after(self._clock, self._timeout_s), self._session.request(
                method, url, data=data, params=params, headers=send_headers
            ) as resp:
                status = resp.status
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > _MAX_BODY_BYTES:
                        raise DiscoveryError(
                            f"{where}: answer larger than {_MAX_BODY_BYTES:,} bytes"
                        )
                    chunks.append(chunk)
        except TimeoutError as exc:
            raise DiscoveryError(f"{where}: no answer within {self._timeout_s}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DiscoveryError(f"{where}: {type(exc).__name__}: {exc}") from exc
        raw = b"".join(chunks)
        text = raw.decode("utf-8", "replace")
        if not 200 <= status < 300:
            raise HttpStatusError(f"{where} answered {status}: {_excerpt(text)}", status)
        if not raw.strip():
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise DiscoveryError(f"{where}: expected JSON, got {_excerpt(text)!r}") from exc

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def __repr__(self) -> str:
        state = "open" if self._session is not None and not self._session.closed else "idle"
        return f"<JsonHttp {self._what} {self._base} [{state}]>"


def _excerpt(text: str, limit: int = 300) -> str:
    """The server's error text: the ``message`` of a JSON error body, else the start."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("message", "error"):
            if isinstance(parsed.get(key), str):
                return str(parsed[key])[:limit]
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "") if text else "(empty body)"
