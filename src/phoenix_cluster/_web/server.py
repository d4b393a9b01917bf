"""The aiohttp application: read-only routes over one node's view, metrics and feed.

Routes (GET and HEAD only; any other method is 405, any other path 404)::

    /                 the dashboard (static HTML, CSS and JS shipped in the package)
    /static/<file>    the dashboard's assets
    /metrics          Prometheus text exposition
    /health/live      200 while the event loop answers, with its recent lag
    /health/ready     200 when ready for traffic, else 503 with the reason
    /api/cluster      members, ring shares, agents per member, split-brain state
    /api/agents       agents per kind on this node, mailbox depth
    /api/agents/list  the agents on every member (``?kind=K&node=N&limit=L``)
    /api/agents/show  one agent: state, owner, replicas, version (``?kind=K&key=KEY``)
    /api/events       server-sent events: hello, sample, cluster, event

Nothing here changes the node. On a loopback bind, requests must name a loopback host
(``Host: 127.0.0.1:...`` or ``localhost``), so a web page elsewhere cannot read the
endpoint through DNS rebinding. With a bearer token (mandatory on a non-loopback bind,
see ``auth.py``) every route but ``/metrics`` and ``/health/*`` answers 401 without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import resources

import msgspec
from aiohttp import web

from .._agents.inspection import ListRequest, ShowRequest, agent_json, listing_json
from ..errors import PhoenixError
from .api import agents_view, cluster_view
from .auth import authorized, is_loopback
from .feed import Feed, sse
from .health import readiness
from .metrics import NodeMetrics
from .sampler import Sampler
from .view import NodeView

__all__ = ["KEEPALIVE_S", "WebServer"]

KEEPALIVE_S = 15.0
"""An idle event stream gets a comment line this often (and notices a gone client)."""

_log = logging.getLogger("phoenix_cluster.web")

_ASSETS = {"index.html": "text/html", "dashboard.js": "text/javascript",
           "dashboard.css": "text/css"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _load_assets() -> dict[str, bytes]:
    folder = resources.files("phoenix_cluster._web") / "static"
    return {name: (folder / name).read_bytes() for name in _ASSETS}


def _host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:9100`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status,
                        content_type="application/json")


def _unknown_kind(kind: str) -> str:
    return (f"unknown agent kind {kind!r}: no member that answered imports it "
            "(phx node --import MODULE)")


class WebServer:
    """One node's HTTP server. Created and stopped by :class:`HttpEndpoint`."""

    def __init__(self, node: NodeView, host: str, port: int, *,
                 token: str | None = None) -> None:
        self._node = node
        self._token = token
        self._host = host
        self._port = port
        self._check_host = is_loopback(host) and not node.settings.http_public
        self.feed = Feed(node)
        self.metrics = NodeMetrics(node, loop_lag=lambda: self.sampler.loop_lag())
        self.sampler = Sampler(node, self.metrics, self.feed)
        self._assets = _load_assets()
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._host_guard, self._token_guard])
        app.on_response_prepare.append(self._headers)
        routes: dict[str, Handler] = {
            "/": self._index,
            "/static/{name}": self._asset,
            "/metrics": self._metrics,
            "/health/live": self._live,
            "/health/ready": self._ready,
            "/api/cluster": self._cluster,
            "/api/agents": self._agents,
            "/api/agents/list": self._agents_list,
            "/api/agents/show": self._agents_show,
            "/api/events": self._events,
        }
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        return app

    async def start(self) -> str:
        """Start counting and serving; returns ``http://host:port/``."""
        self.metrics.attach()
        self.feed.attach()
        self.sampler.start()
        # No access log: Prometheus scrapes every few seconds and would drown the node's log.
        runner = self._runner = web.AppRunner(self._app(), access_log=None,
                                              handle_signals=False, shutdown_timeout=2.0)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await self.aclose()
            raise
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    async def aclose(self) -> None:
        self.feed.close()
        await self.sampler.aclose()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.metrics.detach()
        self.feed.detach()

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _host_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._check_host and not is_loopback(_host_name(request.host or "")):
            return web.Response(status=403, text="this endpoint answers loopback "
                                "host names only\n")
        return await handler(request)

    @web.middleware
    async def _token_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not authorized(request.path, request.headers.get("Authorization"), self._token):
            return web.Response(status=401, text="this endpoint needs Authorization: "
                                "Bearer <token> (the node's http_token)\n",
                                headers={"WWW-Authenticate": 'Bearer realm="phoenix"'})
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        if response.content_type == "text/html":
            response.headers.setdefault("Content-Security-Policy", _CSP)

    # ------------------------------------------------------------------ routes

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._assets["index.html"], content_type="text/html",
                            charset="utf-8")

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "index.html" or name not in self._assets:
            raise web.HTTPNotFound()
        return web.Response(body=self._assets[name], content_type=_ASSETS[name],
                            charset="utf-8")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        body, content_type = self.metrics.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _live(self, request: web.Request) -> web.StreamResponse:
        # Answering is the liveness signal (a blocked or stopped loop makes the probe
        # time out); the lag says how close to that the loop has come lately.
        return _json({"live": True, "node": self._node.name,
                      "state": self._node.status().state,
                      "event_loop_lag_s": round(self.sampler.loop_lag(), 6)})

    async def _ready(self, request: web.Request) -> web.StreamResponse:
        r = readiness(self._node)
        return _json({"ready": r.ready, "reason": r.reason, "node": self._node.name},
                     status=200 if r.ready else 503)

    async def _cluster(self, request: web.Request) -> web.StreamResponse:
        return _json(await cluster_view(self._node))

    async def _agents(self, request: web.Request) -> web.StreamResponse:
        return _json(agents_view(self._node))

    async def _agents_list(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        try:
            limit = int(query.get("limit", "1000"))
        except ValueError:
            limit = 0
        if limit < 1:
            return _json({"error": "limit must be a whole number >= 1"}, 400)
        kind = query.get("kind", "")
        try:
            listing = await self._node.inspection.list_agents(
                ListRequest(kind, query.get("node", ""), limit))
        except PhoenixError as exc:
            return _json({"error": exc.message}, 404)
        if listing.unknown_kind:
            return _json({"error": _unknown_kind(kind)}, 404)
        return _json(listing_json(listing))

    async def _agents_show(self, request: web.Request) -> web.StreamResponse:
        kind, key = request.query.get("kind"), request.query.get("key")
        if not kind or key is None:
            return _json({"error": "give ?kind=KIND&key=KEY"}, 400)
        reply = await self._node.inspection.show_agent(ShowRequest(kind, key))
        if reply.unknown_kind:
            return _json({"error": _unknown_kind(kind)}, 404)
        body = agent_json(reply)
        if body is None:
            return _json({"error": f"agent {kind}/{key} not found: no member holds it "
                          "and no replica has it committed",
                          "unreachable": reply.unreachable}, 404)
        return _json(body)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        # Subscribe first: whatever happens while the hello is built follows it.
        stream = self.feed.subscribe()
        try:
            hello = {
                "node": self._node.name,
                "history": list(self.sampler.history),
                "events": list(self.feed.recent),
                "cluster": await cluster_view(self._node),
            }
            await response.write(b"retry: 2000\n" + sse("hello", hello))
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        message = await stream.get()
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if message is None:
                    break
                await response.write(message)
        except ConnectionError:
            _log.debug("node %s: a dashboard stream went away", self._node.name)
        finally:
            self.feed.unsubscribe(stream)
        return response
