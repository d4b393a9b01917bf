"""Nodes in one process find each other through seeds or discovery and agree on members."""

from __future__ import annotations

from typing import Any

from cluster_agents import Tally

import phoenix_cluster as phx
from phoenix_cluster.testing import free_port, wait_until

COOKIE = "membership-nodes-cookie"


def alive(node: phx.Node) -> set[str]:
    return {m.name for m in node.members() if m.status == "alive"}


async def test_discovery_finds_the_cluster_and_members_agree() -> None:
    joined: list[dict[str, Any]] = []
    phx.telemetry.attach("joined", [phx.telemetry.CLUSTER_NODE_JOINED],
                         lambda e, m, md: joined.append(dict(md)))
    a_addr = f"127.0.0.1:{free_port()}"
    try:
        async with phx.Node(name="a", listen=a_addr, cookie=COOKIE) as a, \
                phx.Node(name="b", listen=f"127.0.0.1:{free_port()}", cookie=COOKIE,
                         discovery=f"static:{a_addr}") as b:
            await wait_until(lambda: alive(a) == alive(b) == {"a", "b"}, timeout=20,
                             what="a and b to see each other")
            [ma, mb] = b.members()
            assert (ma.name, ma.address, ma.role) == ("a", a_addr, "member")
            assert mb.incarnation == b.incarnation
            # Both route every key to the same owner.
            for i in range(10):
                assert await a.ref(Tally, f"m{i}").where() == await b.ref(Tally, f"m{i}").where()
        assert any(e["peer"] == "b" and e["node"] == "a" for e in joined), joined
    finally:
        phx.telemetry.detach("joined")


async def test_a_restarted_node_is_a_new_incarnation() -> None:
    a_addr, b_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    async with phx.Node(name="a", listen=a_addr, seeds=[b_addr], cookie=COOKIE) as a:
        b1 = phx.Node(name="b", listen=b_addr, seeds=[a_addr], cookie=COOKIE)
        await b1.start()
        await wait_until(lambda: alive(a) == {"a", "b"}, timeout=20, what="b to join")
        first = next(m.incarnation for m in a.members() if m.name == "b")
        await b1.aclose()
        await wait_until(lambda: alive(a) == {"a"}, timeout=20, what="b to leave")
        async with phx.Node(name="b", listen=b_addr, seeds=[a_addr], cookie=COOKIE) as b2:
            await wait_until(lambda: alive(a) == {"a", "b"}, timeout=20, what="b to rejoin")
            again = next(m for m in a.members() if m.name == "b")
            assert again.incarnation > first
            assert again.incarnation == b2.incarnation
