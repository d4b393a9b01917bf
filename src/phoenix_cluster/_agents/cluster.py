"""What the agent runtime reaches beyond this node's own agents: the seam of its one cycle.

The runtime exists from the node's construction: an embedded node has nothing else, and
refs, interceptors and state stores are set up on it before ``start``. The parts that
reach other nodes exist only once the node started (they need the bound transport, and
a test's in-memory network is given to the node after its construction), and each of
them needs the runtime: the router queues inbound messages in it, the placement service
asks what it holds and freezes agents it moves, the replicator tells it which
partitions it lost or now leads, crdt sync merges into its activations. The runtime
needs them back (a call is routed, a change committed through the replicator or the
key's home, a merge shipped, a span opened).

The cycle is broken here, in one direction: the runtime is given a :class:`Cluster` at
construction, the node's stack of started parts (``_node/stack.py``), and reads it;
nothing assigns the runtime's collaborators after its construction
(``tests/test_layers.py``). A part the node has not started (or never
starts: an embedded node has no router) reads as ``None``. The protocols below are
all the runtime and its parts ask of the others, so none of its modules imports the
router, the placement service or the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._replication.crdt_sync import CrdtSync
    from .._replication.service import Replicator
    from .._replication.types import Record
    from .._telemetry.tracing import NodeTracer
    from .handoff import HandoffRecord
    from .kinds import KindSpec, MethodSpec
    from .mailbox import Link

__all__ = ["CastOutbound", "Cluster", "Homes", "Outbound"]


class CastOutbound(Protocol):
    """What a cast asks of the agent router (``dispatch.py``)."""

    def remote_address(self, spec: KindSpec, key: str) -> str | object | None: ...

    async def resolve(self, spec: KindSpec, key: str) -> str | None: ...

    async def keep_order(self, spec: KindSpec, key: str, address: str | None,
                         is_cast: bool) -> None: ...

    async def cast(self, spec: KindSpec, key: str, method: str, payload: bytes,
                   request_id: int, address: str, timeout_s: float, *,
                   acknowledged: bool = True) -> None: ...


class Outbound(CastOutbound, Protocol):
    """What the caller side asks of the agent router (``dispatch.py``): what casts ask,
    and calls."""

    @property
    def cast_paths(self) -> Mapping[tuple[str, str], str]: ...

    async def call(self, spec: KindSpec, key: str, method: MethodSpec, payload: bytes,
                   timeout_s: float, request_id: int, address: str,
                   chain: tuple[Link, ...] = ()) -> Any: ...


class Homes(Protocol):
    """What the agent runtime asks of the placement service (``placement.py``): homes
    and pins of agents, pulls and handoffs, forwarding, commits through the home."""

    @property
    def self_name(self) -> str: ...

    @property
    def leaving(self) -> bool: ...

    @property
    def pinned_here(self) -> AbstractSet[tuple[str, str]]: ...

    @property
    def proxied(self) -> AbstractSet[tuple[str, str]]: ...

    def home(self, kind: str, key: str) -> str | None: ...

    def route(self, spec: KindSpec, key: str) -> object: ...

    async def before_activate(self, spec: KindSpec, key: str) -> HandoffRecord | None: ...

    def frozen(self, spec: KindSpec, key: str, to: str,
               record: HandoffRecord | None) -> None: ...

    def forward_cast(self, spec: KindSpec, key: str, request_id: int, method: str,
                     payload: bytes, address: str) -> object: ...

    async def remote_load(self, home: str, kind: str, key: str,
                          replicas: int = 3) -> Record | None: ...

    async def remote_commit(self, home: str, kind: str, key: str, record: Record,
                            durability: str, replicas: int = 3) -> None: ...


class Cluster(Protocol):
    """The parts of the node the runtime reaches, each ``None`` until the node started
    it (read-only: the node's stack builds them, bottom-up)."""

    @property
    def router(self) -> Outbound | None:
        """Routes agent messages to other nodes (a node that talks to others)."""

    @property
    def placement(self) -> Homes | None:
        """Homes, pins and moves of agents (a node that talks to others)."""

    @property
    def replicator(self) -> Replicator | None:
        """Quorum replication of agent state (a member with an address)."""

    @property
    def crdt_sync(self) -> CrdtSync | None:
        """Merge replication of ``consistency="crdt"`` kinds (a member with an address)."""

    @property
    def tracer(self) -> NodeTracer | None:
        """OpenTelemetry spans of messages (``otlp_endpoint`` set)."""

