"""Active-active shopping carts: a ``consistency="crdt"`` kind on three nodes.

Run it: ``python examples/crdt_cart.py``. Three nodes run in this process on loopback.
Shoppers on every node add to and remove from the same carts at once; every cart's state
is an add-wins set plus a counter, merged (not fenced) across its replicas, so all
three nodes read the same carts at the end. See docs/crdt.md, "Active-active agents".
"""

from __future__ import annotations

import asyncio
import socket

import phoenix_cluster as phx
from phoenix_cluster import crdt
from phoenix_cluster.testing import wait_until


class Cart(phx.Agent, kind="example.crdt_cart", consistency="crdt"):
    items: crdt.ORSet[str]
    adds: crdt.GCounter

    def __init__(self) -> None:
        self.items = crdt.ORSet()
        self.adds = crdt.GCounter()

    async def add(self, item: str) -> None:
        self.items.add(item, replica=self.replica)  # self.replica: this node's id
        self.adds.increment(replica=self.replica)

    async def remove(self, item: str) -> None:
        self.items.remove(item)

    async def read(self) -> tuple[list[str], int]:
        return sorted(self.items), self.adds.value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(carts: int = 5, shoppers_per_node: int = 4) -> None:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = [phx.Node(name=f"shop-{i}", listen=address, seeds=addresses[:1],
                      cookie="crdt-cart-example") for i, address in enumerate(addresses)]
    for node in nodes:
        await node.start()
    try:
        await wait_until(lambda: all(sum(m.status == "alive" for m in n.members()) == 3
                                     for n in nodes), timeout=20, what="the nodes to meet")

        async def shopper(node: phx.Node, who: str, first: int) -> None:
            # Each shopper starts at its own cart: every cart still gets shoppers from
            # all three nodes at once, but no single cart's mailbox holds all of them
            # (a cart runs one message at a time, each waiting for a majority of its
            # replicas), so no call waits behind every other shopper's.
            for c in range(first, first + carts):
                cart = node.ref(Cart, f"cart-{c % carts}")
                await cart.add(f"{who}-apple")
                await cart.add(f"{who}-pear")
                await cart.remove(f"{who}-pear")

        await asyncio.gather(*(shopper(node, f"{node.name}/{s}", n * shoppers_per_node + s)
                               for n, node in enumerate(nodes)
                               for s in range(shoppers_per_node)))
        views = [[await n.ref(Cart, f"cart-{c}").read() for c in range(carts)]
                 for n in nodes]
        assert views[0] == views[1] == views[2], "the nodes disagree"
        items, adds = views[0][0]
        print(f"{carts} carts, {3 * shoppers_per_node} shoppers on 3 nodes: every node "
              f"reads cart-0 with {len(items)} items after {adds} adds")
        assert len(items) == 3 * shoppers_per_node and adds == 2 * len(items)
    finally:
        for node in reversed(nodes):
            await node.aclose()


if __name__ == "__main__":
    asyncio.run(main())
