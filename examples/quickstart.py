"""The 30-second example from the README: a counter agent on an embedded node."""

from __future__ import annotations

import asyncio

import phoenix_cluster as phx


class Counter(phx.Agent, kind="example.counter"):
    def __init__(self) -> None:
        self.count = 0  # public attributes are the agent's state

    async def increment(self, by: int = 1) -> int:  # public methods are its messages
        self.count += by
        return self.count


async def main() -> None:
    async with phx.Node() as node:  # an embedded single node: no config, no network
        alice = node.ref(Counter, "alice")  # nothing is activated yet
        print(await alice.increment(5))  # 5: activated on the first message
        await alice.increment.cast(2)  # fire-and-forget, returns once accepted
        print(await alice.increment(0))  # 7


if __name__ == "__main__":
    asyncio.run(main())
