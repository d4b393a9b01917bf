"""``/api/events``: the server-sent-event stream the dashboard follows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from web_agents import Meter

import phoenix_cluster as phx
from phoenix_cluster._telemetry import events
from phoenix_cluster._telemetry.bus import TelemetryBus
from phoenix_cluster._web.feed import STREAM_BUFFER, Feed


async def messages(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """Parse an SSE body into ``(event, data)`` pairs (comments and retry skipped)."""
    event, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            yield event, json.loads(data)
            event, data = "message", ""


async def next_of(stream: AsyncIterator[tuple[str, Any]], kind: str,
                  timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        async for event, data in stream:
            if event == kind:
                return data
    raise AssertionError(f"stream ended before a {kind!r} message")


@pytest.fixture
async def node() -> AsyncIterator[phx.Node]:
    async with phx.Node(name="sse-a", http="127.0.0.1:0", telemetry=TelemetryBus()) as n:
        yield n


async def test_hello_samples_events_and_cluster(node: phx.Node) -> None:
    assert node.http_url is not None
    async with aiohttp.ClientSession() as session, \
            session.get(node.http_url + "api/events") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        stream = messages(response)
        hello = await next_of(stream, "hello")
        assert hello["node"] == "sse-a"
        assert [m["name"] for m in hello["cluster"]["members"]] == ["sse-a"]
        for i in range(50):
            await node.ref(Meter, f"e{i % 5}").add(i)
        sample = await next_of(stream, "sample")
        while sample["calls"] == 0:  # the calls may straddle two samples
            sample = await next_of(stream, "sample")
        assert sample["p50_s"] is not None and sample["p50_s"] <= sample["p99_s"]
        assert sample["messages_per_s"] > 0
        assert sample["active_agents"] == 5
        node.telemetry.execute(events.CLUSTER_PARTITION_DETECTED, {}, {
            "node": "sse-a", "strategy": "keep-majority", "decision": "keep",
            "reason": "3 of 5 reachable", "down": ("x", "y"), "reachable": ("sse-a",)})
        event = await next_of(stream, "event")
        assert event["type"] == "split-brain"
        assert "3 of 5 reachable" in event["text"] and "x, y" in event["text"]
        assert event["meta"]["down"] == ["x", "y"]
        cluster = await next_of(stream, "cluster")
        assert cluster["members"][0]["agents"] == 5


async def test_late_dashboard_gets_history_and_recent_events(node: phx.Node) -> None:
    node.telemetry.execute(events.CLUSTER_NODE_LEFT, {"members": 1.0}, {
        "node": "sse-a", "peer": "gone", "reason": "dead", "status": "dead"})
    node.telemetry.execute(events.CLUSTER_NODE_LEFT, {}, {"node": "other-node", "peer": "z"})
    assert node.http_url is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(node.http_url + "api/events") as first:
            sample = await next_of(messages(first), "sample")
        async with session.get(node.http_url + "api/events") as second:
            hello = await next_of(messages(second), "hello")
    assert [(e["type"], e["text"]) for e in hello["events"]] == [("dead", "gone is dead")]
    assert sample in hello["history"]


async def test_stopping_the_node_ends_open_streams() -> None:
    n = phx.Node(name="sse-stop", http="127.0.0.1:0", telemetry=TelemetryBus())
    await n.start()
    assert n.http_url is not None
    async with aiohttp.ClientSession() as session, \
            session.get(n.http_url + "api/events") as response:
        stream = messages(response)
        await next_of(stream, "hello")
        closing = asyncio.create_task(n.aclose())
        async with asyncio.timeout(5):
            async for _ in stream:
                pass  # ends when the server ends the stream
        await closing


async def test_a_stream_that_falls_behind_is_dropped(node: phx.Node) -> None:
    feed = Feed(node)
    slow = feed.subscribe()
    for i in range(STREAM_BUFFER + 1):
        feed.publish("sample", {"i": i})
    assert feed.streams == 0
    assert slow.get_nowait() is None  # told to end, holding nothing else
