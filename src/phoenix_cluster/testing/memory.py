"""Several whole nodes in one process, on an in-memory network and in virtual time.

A unit test of the cluster (membership, ring, placement, replication, agents, routing)
without sockets and without sleeping::

    from phoenix_cluster.testing.memory import MemoryCluster, run_virtual

    async def scenario() -> None:
        async with MemoryCluster(3) as cluster:
            a, b, c = cluster.nodes
            ...

    run_virtual(scenario())

- :class:`MemoryCluster` starts nodes on one
  :class:`~phoenix_cluster._transport.memory.MemoryNetwork` (``cluster.network``: cut,
  set_link, kill) and waits until every member sees every other and leads or follows
  every partition.
- :func:`run_virtual` runs a coroutine on a :class:`VirtualTimeLoop`: whenever nothing
  is ready to run, the loop's clock jumps to its next timer, so probes, elections,
  timeouts and ``asyncio.sleep`` cost no wall time, and no wall-clock timing enters the
  run (each node's random source is seeded from the cluster's ``seed`` and its name;
  what is left to chance is Python's hash randomization of set order). The nodes'
  :class:`LoopClock` reads that time. Nothing may wait on a thread or a real socket in
  such a run: time would jump past it.

Why not ``ManualClock(autojump=True)``: it jumps after a few idle loop turns whether or
not work is still travelling between nodes, so under a whole cluster (a frame crosses
several tasks and turns) it fires probe and call timeouts while answers are on their
way. The virtual loop jumps only when asyncio itself has nothing ready to run.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._foundation.env import Env, TimerHandle, running_loop
from .._node import Node, NodeState
from .._replication.storage import SqliteStorage
from .._telemetry.bus import TelemetryBus
from .._transport.base import PeerConnection
from .._transport.cookie import resolve_secret
from .._transport.memory import MemoryNetwork, MemoryTransport
from .._wire.messages import Call, Cast, Error

__all__ = ["LoopClock", "MemoryCluster", "VirtualTimeLoop", "run_virtual"]

_T = TypeVar("_T")

_WALL_START = 1_800_000_000.0


class _VirtualSelector(selectors.DefaultSelector):
    """Polls without blocking; when the loop would wait for its next timer, it jumps."""

    def __init__(self) -> None:
        super().__init__()
        self.jump: Callable[[float], None] = lambda seconds: None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:  # no timer at all: only another thread can wake us
            result: list[tuple[selectors.SelectorKey, int]] = super().select(None)
            return result
        self.jump(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` moves only when it would otherwise wait."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        self._virtual_now = 0.0
        selector.jump = self._jump

    def time(self) -> float:
        return self._virtual_now

    def _jump(self, seconds: float) -> None:
        self._virtual_now += seconds


class LoopClock:
    """An ``Env`` clock that reads the running loop's time (virtual under
    :class:`VirtualTimeLoop`); timers and sleeps are the loop's."""

    __slots__ = ()

    def monotonic(self) -> float:
        # running_loop(), not asyncio.get_running_loop(): on 3.11 the latter makes a
        # getpid() system call, and the nodes read the clock several times a message.
        return running_loop().time()

    def wall(self) -> float:
        return _WALL_START + running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(seconds, callback)

    def __repr__(self) -> str:
        return "<LoopClock>"


def run_virtual(main: Coroutine[Any, Any, _T], *, limit_s: float = 600.0) -> _T:
    """Run ``main`` to completion on a fresh :class:`VirtualTimeLoop`.

    Raises:
        TimeoutError: ``main`` did not finish within ``limit_s`` virtual seconds (a
            stuck test fails instead of spinning forever).
    """
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main, limit_s))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


async def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0,
                   poll_s: float = 0.05, what: str = "the condition") -> None:
    """Poll ``condition`` (in loop time) until true.

    Raises:
        TimeoutError: still false after ``timeout_s``, naming ``what``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout_s}s")
        await asyncio.sleep(poll_s)


class MemoryCluster:
    """``size`` member nodes on one :class:`MemoryNetwork`, as an async context manager.

    Args:
        size: members to start (the first is every other's seed).
        storage_class: what keeps a node's ``data_dir`` (default: the node's own).
        network: the network (default: a new one, seeded with ``seed``).
        seed: seeds every node's random source (with its name) and the network's.
            A cluster started again on the same ``data_dir`` (a restart of its
            nodes) needs another seed: the random source draws a node's request ids,
            and the reply windows committed in the first life remember its ids (a real
            node draws a fresh random prefix at each start).
        **options: node settings for every node (``call_timeout_s=2.0``, ...).

    Attributes:
        nodes: the nodes started, in order (killed ones included).
    """

    def __init__(self, size: int = 3, *, network: MemoryNetwork | None = None,
                 seed: int = 0, storage_class: type[SqliteStorage] | None = None,
                 **options: Any) -> None:
        self.network = network if network is not None else MemoryNetwork(seed=seed)
        self.seed = seed
        self.size = size
        self.storage_class = storage_class
        self.options: dict[str, Any] = {"cookie": "memory-cluster", **options}
        self.nodes: list[Node] = []
        self._seed: str | None = None
        self._killed: set[Node] = set()
        self._addresses: dict[str, str] = {}  # name -> the address its lives listen at

    def node(self, name: str) -> Node:
        """The node ``name`` (its latest life, when a name was started again)."""
        for node in reversed(self.nodes):
            if node.name == name:
                return node
        raise KeyError(name)

    async def add(self, name: str | None = None, **options: Any) -> Node:
        """Start one more node (a member unless ``role="client"``) and return it."""
        name = name or f"n{len(self.nodes) + 1}"
        seeds = self._seeds()
        # The node's index in the seed too: a name started again (a restart) must not
        # draw the request ids of its last life, which the replicas' windows remember.
        chance = random.Random(f"{self.seed}/{name}/{len(self.nodes)}")
        # A restart keeps the address of the name's last life (the seeds of the nodes
        # that joined meanwhile name it), unless that life still holds it.
        address = self._addresses.get(name)
        if address is None or not self.network.is_free(address):
            address = self._addresses[name] = self.network.address()
        node = Node(name, listen=address, seeds=seeds,
                    env=Env(clock=LoopClock(), random=chance), **{**self.options, **options})
        node._memory_network = self.network
        if self.storage_class is not None:
            node._storage_class = self.storage_class
        self.nodes.append(node)
        await node.start()
        if self._seed is None:
            self._seed = node.address
        return node

    def _seeds(self) -> list[str]:
        """The first node, while it runs; once it is gone (killed, downed, started again
        at a new address), up to three running members, as an operator lists several
        seeds: a node started after the first one died must still find the cluster."""
        live = [n for n in self.alive() if n.settings.role == "member" and n.address]
        if self._seed is None or any(n.address == self._seed for n in live):
            return [self._seed] if self._seed is not None else []
        return [str(n.address) for n in live[:3]]

    async def __aenter__(self) -> MemoryCluster:
        try:
            for _ in range(self.size):
                await self.add()
            await self.wait_settled()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def alive(self) -> list[Node]:
        """The nodes neither killed nor stopped (a node downed by split-brain
        resolution stops by itself)."""
        return [n for n in self.nodes
                if n not in self._killed and n.state is NodeState.RUNNING]

    async def wait_settled(self, timeout_s: float = 120.0) -> None:
        """Wait until every live node has joined and sees exactly the live members."""
        def settled() -> bool:
            live = self.alive()
            names = {n.name for n in live if n.settings.role == "member"}
            return all(n.joined and n.ring is not None and set(n.ring.members) == names
                       for n in live)

        await wait_for(settled, timeout_s, what="every node seeing the same members")
        for node in self.alive():
            await asyncio.wait_for(node.wait_caught_up(), timeout_s)

    def wire_client(self, name: str = "probe") -> MemoryTransport:
        """A bare transport on the network, with the cluster's secret: a test sends it
        hand-made frames (a resend with a chosen request id, a malformed payload) to
        any node's address. It hosts nothing: calls to it are refused."""
        secret, _ = resolve_secret(self.options["cookie"], None, create=False)
        return self.network.transport(name, 1, secret, env=Env(clock=LoopClock()),
                                      bus=TelemetryBus(), max_frame_bytes=8 << 20,
                                      handler=_refuse, role="client")

    def kill(self, name: str) -> Node:
        """Crash the node ``name``: the network cuts it off at once; its process-side
        tasks stop when the cluster closes (``aclose`` in the background)."""
        node = self.node(name)
        self.network.kill(name)
        self._killed.add(node)
        return node

    async def aclose(self) -> None:
        """Stop every node as a crash would (no leave, no hand-over: a test that wants
        a graceful leave closes that node itself first)."""
        for node in self.nodes:
            self.network.kill(node.name)
        await asyncio.gather(*(node.aclose() for node in self.nodes))


async def _refuse(peer: PeerConnection, msg: Call | Cast) -> Error:
    return Error(request_id=msg.request_id, code="agent_not_found",
                 message="a wire client hosts nothing", definite=True)
