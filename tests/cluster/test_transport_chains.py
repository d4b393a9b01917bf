"""Nodes talk over HTTP/2 and QUIC, and over a fallback chain, exactly as over TCP."""

from __future__ import annotations

import socket

import pytest
from cluster_agents import Tally

import phoenix_cluster as phx
from phoenix_cluster._transport.fallback import FallbackTransport
from phoenix_cluster.testing import free_port, wait_until

COOKIE = "chains-cookie"


def gap_port() -> int:
    """A port whose neighbour (used by HTTP/2 and QUIC) is free too."""
    for _ in range(50):
        port = free_port()
        if port < 65535:
            try:
                with socket.socket() as s1, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:
                    s1.bind(("127.0.0.1", port + 1))
                    s2.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no port pair free")


@pytest.mark.parametrize("chain", ["http2", "quic", "http2,tcp,quic"])
async def test_calls_over_a_transport_chain(chain: str) -> None:
    a_addr, b_addr = f"127.0.0.1:{gap_port()}", f"127.0.0.1:{gap_port()}"
    async with phx.Node(name="a", listen=a_addr, seeds=[b_addr], cookie=COOKIE,
                        transports=chain) as a, \
            phx.Node(name="b", listen=b_addr, seeds=[a_addr], cookie=COOKIE,
                     transports=chain) as b:
        await wait_until(
            lambda: all({m.name for m in n.members() if m.status == "alive"} == {"a", "b"}
                        for n in (a, b)),
            timeout=20, what="a and b to see each other",
        )
        owners = {await a.ref(Tally, f"c{i}").where() for i in range(20)}
        assert owners == {"a", "b"}  # some calls crossed the wire
        for i in range(20):
            assert await b.ref(Tally, f"c{i}").add(1) == 1
        transport = a._transport
        assert transport is not None
        first = chain.split(",")[0]
        if "," in chain:
            # While b was still starting, a dial may have fallen back; the background
            # probe switches back to the preferred protocol.
            assert isinstance(transport, FallbackTransport)
            await wait_until(
                lambda: all(p.protocol == first
                            for p in transport.statistics().peers),
                timeout=30, what=f"traffic back on {first}",
            )
