"""The HTTP endpoint of in-process nodes: routes, readiness, JSON API, guard rails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from web_agents import Meter
from web_helpers import get, get_json

import phoenix_cluster as phx
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._web import check_http_address
from phoenix_cluster.errors import ConfigError
from phoenix_cluster.testing import free_port, wait_until

COOKIE = "web-endpoint-test-cookie"


@pytest.fixture
async def node() -> AsyncIterator[phx.Node]:
    async with phx.Node(name="web-a", listen="127.0.0.1:0", http="127.0.0.1:0",
                        cookie=COOKIE, telemetry=TelemetryBus()) as n:
        await n.wait_caught_up()  # ready: every partition elected
        yield n


def url(node: phx.Node, path: str) -> str:
    assert node.http_url is not None
    return node.http_url.rstrip("/") + path


# ------------------------------------------------------------------ binding


@pytest.mark.parametrize("address", ["127.0.0.1:9100", "localhost:0", "[::1]:9100",
                                     "127.8.9.10:80"])
def test_loopback_addresses_are_allowed(address: str) -> None:
    host, port = check_http_address(address)
    assert port == int(address.rsplit(":", 1)[1])
    assert "[" not in host


@pytest.mark.parametrize("address", ["0.0.0.0:9100", "10.1.2.3:9100", "[::]:9100",
                                     "example.com:9100"])
def test_non_loopback_bind_needs_http_public(address: str) -> None:
    with pytest.raises(ConfigError, match="http_public") as info:
        phx.Node(http=address)
    assert info.value.key == "http"
    # Allowed on purpose: the check passes (nothing is bound here, the node is not started).
    assert check_http_address(address, public=True)[1] == 9100
    phx.Node(http=address, http_public=True, http_token="t0ken")


def test_http_public_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHX_HTTP_PUBLIC", "true")
    monkeypatch.setenv("PHX_HTTP_TOKEN", "t0ken")
    assert phx.Node(http="0.0.0.0:9100").settings.http_public is True


async def test_no_endpoint_and_no_handlers_without_http() -> None:
    bus = TelemetryBus()
    async with phx.Node(telemetry=bus) as n:
        await n.ref(Meter, "a").add(1)
        assert n.http_url is None
        assert not bus.has_handlers(events.AGENT_CALL_STOP)
        assert not bus.has_handlers(events.TRANSPORT_MESSAGE_SENT)


async def test_endpoint_lives_and_dies_with_the_node() -> None:
    bus = TelemetryBus()
    n = phx.Node(name="web-life", http="127.0.0.1:0", telemetry=bus)
    await n.start()
    address = n.http_url
    assert address is not None and address.startswith("http://127.0.0.1:")
    assert bus.has_handlers(events.AGENT_CALL_STOP)
    status, _, _ = await get(address + "health/live")
    assert status == 200
    await n.aclose()
    assert n.http_url is None
    assert not bus.has_handlers(events.AGENT_CALL_STOP)
    with pytest.raises(OSError):
        await get(address + "health/live")


async def test_busy_port_fails_the_start_and_closes_the_node() -> None:
    async with phx.Node(http="127.0.0.1:0", telemetry=TelemetryBus()) as first:
        assert first.http_url is not None
        taken = first.http_url.rstrip("/").rsplit(":", 1)[1]
        second = phx.Node(listen="127.0.0.1:0", http=f"127.0.0.1:{taken}",
                          telemetry=TelemetryBus())
        with pytest.raises(phx.ConfigError, match=f"cannot listen on 127.0.0.1:{taken}"):
            await second.start()
        assert second.state.value == "stopped"


# ------------------------------------------------------------------ routes


async def test_read_only_routes_and_404_405(node: phx.Node) -> None:
    for path, kind in [("/", "text/html"), ("/static/dashboard.js", "text/javascript"),
                       ("/static/dashboard.css", "text/css"), ("/metrics", "text/plain"),
                       ("/health/live", "application/json"),
                       ("/health/ready", "application/json"),
                       ("/api/cluster", "application/json"),
                       ("/api/agents", "application/json")]:
        status, headers, _ = await get(url(node, path))
        assert status == 200, path
        assert headers["Content-Type"].startswith(kind), (path, headers["Content-Type"])
        assert headers["X-Content-Type-Options"] == "nosniff"
    _, headers, _ = await get(url(node, "/"))
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for path in ["/nope", "/static/index.html", "/static/../_node.py", "/api"]:
        status, _, _ = await get(url(node, path))
        assert status == 404, path
    for method in ["POST", "PUT", "DELETE", "PATCH"]:
        for path in ["/metrics", "/api/cluster", "/health/ready"]:
            status, _, _ = await get(url(node, path), method=method)
            assert status == 405, (method, path)


async def test_foreign_host_header_is_refused(node: phx.Node) -> None:
    # A page on another site that rebinds its name to 127.0.0.1 must not read the API.
    status, _, body = await get(url(node, "/api/cluster"), headers={"Host": "evil.example"})
    assert status == 403
    assert b"loopback" in body
    status, _, _ = await get(url(node, "/api/cluster"), headers={"Host": "localhost"})
    assert status == 200


async def test_agents_per_kind(node: phx.Node) -> None:
    for i in range(10):
        await node.ref(Meter, f"m{i % 4}").add(i)
    with pytest.raises(phx.AgentError):
        await node.ref(Meter, "m0").fail()
    data = await get_json(url(node, "/api/agents"))
    assert data["node"] == "web-a"
    (meter,) = [k for k in data["kinds"] if k["kind"] == "web.meter"]
    assert meter["active"] == 4
    assert meter["mailbox_depth"] == 0
    assert data["totals"]["messages_handled"] == 10  # the failed one rolled back
    assert data["totals"]["activations"] == 4


async def test_agents_list_and_show(node: phx.Node) -> None:
    await node.ref(Meter, "m1").add(7)
    listed = await get_json(url(node, "/api/agents/list?kind=web.meter"))
    assert [(a["key"], a["node"], a["status"]) for a in listed["agents"]] == [
        ("m1", "web-a", "active")]
    assert listed["unreachable"] == [] and listed["truncated"] is False
    shown = await get_json(url(node, "/api/agents/show?kind=web.meter&key=m1"))
    assert shown["state"] == {"total": 7} and shown["owner"] == "web-a"
    assert shown["replicas"] == ["web-a"] and shown["version"] is not None
    for path, status, says in [
        ("/api/agents/show?kind=web.meter&key=nobody", 404, b"not found"),
        ("/api/agents/show?kind=no.such&key=m1", 404, b"unknown agent kind 'no.such'"),
        ("/api/agents/list?kind=no.such", 404, b"unknown agent kind"),
        ("/api/agents/list?node=elsewhere", 404, b"no live member is named 'elsewhere'"),
        ("/api/agents/show?kind=web.meter", 400, b"kind=KIND&key=KEY"),
        ("/api/agents/list?limit=0", 400, b"limit"),
    ]:
        got, _, body = await get(url(node, path))
        assert (got, says in body) == (status, True), (path, body)


async def test_single_node_is_ready_and_owns_the_ring(node: phx.Node) -> None:
    status, _, body = await get(url(node, "/health/ready"))
    assert status == 200, body
    cluster = await get_json(url(node, "/api/cluster"))
    assert cluster["ready"] is True
    (me,) = cluster["members"]
    assert me["name"] == "web-a" and me["status"] == "alive"
    assert me["ring_share"] == pytest.approx(1.0)
    assert me["incarnation"] == node.incarnation
    assert cluster["split_brain"] == {"strategy": "keep-majority", "last_decision": None}


async def test_not_ready_until_joined() -> None:
    # Its only seed is a port nobody listens on: running, but not part of a cluster.
    lonely = phx.Node(name="lonely", listen="127.0.0.1:0", http="127.0.0.1:0",
                      seeds=[f"127.0.0.1:{free_port()}"], cookie=COOKIE,
                      telemetry=TelemetryBus())
    async with lonely:
        status, _, body = await get(url(lonely, "/health/ready"))
        assert status == 503
        assert b"not joined" in body
        status, _, _ = await get(url(lonely, "/health/live"))
        assert status == 200


async def test_two_nodes_ready_with_agents_from_both(node: phx.Node) -> None:
    assert node.address is not None
    async with phx.Node(name="web-b", listen="127.0.0.1:0", seeds=[node.address],
                        cookie=COOKIE, telemetry=TelemetryBus()) as other:
        await wait_until(lambda: {m.name for m in node.members() if m.status == "alive"}
                         == {"web-a", "web-b"}, timeout=20, what="web-a to see web-b")
        await wait_until(lambda: {m.name for m in other.members() if m.status == "alive"}
                         == {"web-a", "web-b"}, timeout=20, what="web-b to see web-a")
        for i in range(40):
            await node.ref(Meter, f"k{i}").add(1)
        # The join made web-a's partitions move and re-elect: ready once caught up.
        await wait_until(lambda: node.lagging_partitions == 0, timeout=30,
                         what="web-a caught up after the join")
        status, _, body = await get(url(node, "/health/ready"))
        assert status == 200, body
        cluster = await get_json(url(node, "/api/cluster"))
        by_name = {m["name"]: m for m in cluster["members"]}
        assert set(by_name) == {"web-a", "web-b"}
        assert sum(m["ring_share"] for m in by_name.values()) == pytest.approx(1.0)
        # web-b's count comes from its own $node.status answer.
        assert by_name["web-b"]["agents"] == other.statistics().agents.active_agents
        assert by_name["web-a"]["agents"] + by_name["web-b"]["agents"] == 40
        assert by_name["web-b"]["agents"] > 0


async def test_not_ready_until_every_partition_is_led_or_caught_up() -> None:
    async with phx.Node(name="fresh", listen="127.0.0.1:0", http="127.0.0.1:0",
                        cookie=COOKIE, telemetry=TelemetryBus()) as fresh:
        # Right after start the eager elections of its 4,096 partitions are under way.
        status, _, body = await get(url(fresh, "/health/ready"))
        assert status == 503
        assert b"replicas not caught up yet" in body
        assert fresh.lagging_partitions > 0
        await fresh.wait_caught_up()
        status, _, body = await get(url(fresh, "/health/ready"))
        assert status == 200, body
