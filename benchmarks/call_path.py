"""Which source files one remote call (and one quorum commit) passes through.

Starts three members and a client in this process over loopback TCP, warms up, then
records with ``sys.setprofile`` the ``phoenix_cluster`` files whose functions run while
the client makes one call to an agent on a member. Background work (gossip, probes)
runs in the same loop, so the walk is taken ``--runs`` times and only the files seen in
every run are kept. ``read`` changes no state (a remote call); ``add`` changes it, so
the owner commits it to a quorum of replicas before replying.

Run: ``PYTHONPATH=src python benchmarks/call_path.py`` (the figures in
``docs/design/architecture.md`` come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import phoenix_cluster as phx

SRC = str(Path(phx.__file__).resolve().parent) + "/"


class Counter(phx.Agent, kind="callpath.counter"):
    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    async def read(self) -> int:
        return self.total


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _walk(client: phx.Node, key: str, method: str) -> set[str]:
    seen: set[str] = set()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        name = frame.f_code.co_filename
        if name.startswith(SRC):
            seen.add(name[len(SRC):])

    ref = client.ref(Counter, key)
    sys.setprofile(profile)
    try:
        if method == "add":
            await ref.add(1)
        else:
            await ref.read()
    finally:
        sys.setprofile(None)
    return seen


async def walks(runs: int = 5) -> dict[str, set[str]]:
    """The files seen in every one of ``runs`` walks: ``{"read": ..., "add": ...}``."""
    cookie = "call-path-cookie"
    first = phx.Node(name="m0", listen=f"127.0.0.1:{_port()}", cookie=cookie)
    await first.start()
    assert first.address is not None
    nodes = [first]
    try:
        for i in (1, 2):
            node = phx.Node(name=f"m{i}", listen=f"127.0.0.1:{_port()}",
                            seeds=[first.address], cookie=cookie)
            await node.start()
            nodes.append(node)
        client = phx.Node(name="client", role="client", listen="127.0.0.1:0",
                          seeds=[first.address], cookie=cookie)
        await client.start()
        nodes.append(client)
        for _ in range(300):  # until every node sees three alive members
            if all(sum(m.status == "alive" and m.role == "member" for m in n.members()) == 3
                   for n in nodes):
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("the members did not see each other within 30 s")
        # Ready as an orchestrator means it: every partition elected and every replica
        # caught up, so no election runs in the background of the walks.
        await asyncio.wait_for(asyncio.gather(*(n.wait_caught_up() for n in nodes)), 60)
        key = "walk"
        for _ in range(20):  # warm up: activation, placement, connections
            await client.ref(Counter, key).add(1)
            await client.ref(Counter, key).read()
        found: dict[str, set[str]] = {}
        for method in ("read", "add"):
            common: set[str] | None = None
            for _ in range(runs):
                seen = await _walk(client, key, method)
                common = seen if common is None else common & seen
            assert common is not None
            found[method] = common
        return found
    finally:
        for node in reversed(nodes):
            await node.aclose()


async def main(runs: int) -> None:
    found = await walks(runs)
    for method, label in (("read", "remote call"), ("add", "remote call + quorum commit")):
        print(f"{label}: {len(found[method])} files")
        for name in sorted(found[method]):
            print(f"  {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
