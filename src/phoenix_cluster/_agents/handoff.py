"""The placement service ``$placement`` on the wire: its records (handoff, directory,
load) and :class:`PlacementClient`, which calls it on a member by name.

See ``docs/design/migration.md``. Every record is a msgspec Struct encoded with msgpack;
nothing here is pickled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import msgspec

from .._placement.policies import NodeLoad
from .._replication.groups import DEFAULT_REPLICAS, MAX_REPLICAS, MIN_REPLICAS
from .._transport.rpc import RpcClient
from ..errors import NodeUnavailable

__all__ = [
    "Adopt",
    "Claim",
    "ClaimReply",
    "Deliver",
    "HandoffRecord",
    "Locate",
    "LocateReply",
    "PlacementClient",
    "QueuedMessage",
    "Release",
    "RemoteCommit",
    "RemoteLoad",
    "RemoteRecord",
    "ReleaseReply",
    "decode",
    "encode",
]


class QueuedMessage(msgspec.Struct, frozen=True, array_like=True):
    """A message that waited in the mailbox when the agent was frozen."""

    method: str
    payload: bytes
    request_id: int
    timeout_ms: int
    wants_reply: bool


class HandoffRecord(msgspec.Struct, frozen=True):
    """Everything an agent needs to continue on another node, exactly where it stopped.

    Attributes:
        state: the committed state (the codec's bytes), or ``None`` for an agent that
            never committed one.
        recent: request ids of finished calls with their reply bytes (the dedup window).
        queued: messages not yet run, in mailbox order.
        pinned: the agent was hosted off its home (by a policy or a manual migration).
    """

    kind: str
    key: str
    state: bytes | None
    recent: list[tuple[int, bytes]] = []
    queued: list[QueuedMessage] = []
    pinned: bool = False


class Release(msgspec.Struct, frozen=True):
    """Holder, give up ``kind/key`` to ``to`` and answer with its record.

    ``as_home``: ``to`` pulls the agent because it sees itself as the agent's home (not
    a migration to it): should the holder see itself as the home again later, its
    tombstone is stale (``Migrations.outlived``). An earlier release sends ``False``.
    """

    kind: str
    key: str
    to: str
    as_home: bool = False


class ReleaseReply(msgspec.Struct, frozen=True):
    record: HandoffRecord | None
    held: bool
    """The holder had the agent (active or passive) or a tombstone with its record."""


class Deliver(msgspec.Struct, frozen=True):
    """A cast forwarded by a node that no longer hosts the agent; answered once queued,
    so the forwarder keeps the sender's order."""

    kind: str
    key: str
    method: str
    payload: bytes
    request_id: int


class Adopt(msgspec.Struct, frozen=True):
    """Target, take ``kind/key`` over from ``holder`` (a migration)."""

    kind: str
    key: str
    holder: str
    reason: str = "manual"


class Locate(msgspec.Struct, frozen=True):
    """Home, where does ``kind/key`` live? ``caller`` feeds the ``local`` policy."""

    kind: str
    key: str
    caller: str = ""
    place: bool = True
    """Choose and pin a host (by the kind's policy) when there is none."""


class LocateReply(msgspec.Struct, frozen=True):
    host: str
    """The host's name; empty when the agent has no host (hash kinds: the home)."""


class Claim(msgspec.Struct, frozen=True):
    """Home, ``host`` is about to host ``kind/key``: may it? ``force`` moves the pin."""

    kind: str
    key: str
    host: str
    force: bool = False
    unpin: bool = False


class ClaimReply(msgspec.Struct, frozen=True):
    ok: bool
    host: str
    """When refused: the host the directory names (empty: the home itself)."""
    foreign: bool = False
    """The home does not host the kind: the claimer stands in for it (appended field)."""


Replicas = Annotated[int, msgspec.Meta(ge=MIN_REPLICAS, le=MAX_REPLICAS)]
"""A kind's ``replicas=`` (the group its records live in, ``_replication/groups.py``)."""


class RemoteLoad(msgspec.Struct, frozen=True):
    """Home, ``host`` hosts ``kind/key`` off its home: its committed record, please.
    (Replicated agents hosted away from their home commit through it: the home leads the
    key's partition; docs/design/replication.md, "In the runtime".)"""

    kind: str
    key: str
    host: str
    replicas: Replicas = DEFAULT_REPLICAS  # a home that lacks the kind cannot look it up


class RemoteRecord(msgspec.Struct, frozen=True):
    """The record a :class:`RemoteLoad` found (``found`` false: none committed yet)."""

    found: bool
    state: bytes = b""
    replies: tuple[tuple[int, bytes], ...] = ()


class RemoteCommit(msgspec.Struct, frozen=True):
    """Home, commit this record of ``kind/key`` that ``host`` hosts (empty reply: done)."""

    kind: str
    key: str
    host: str
    state: bytes
    replies: tuple[tuple[int, bytes], ...] = ()
    durability: str = "quorum"
    replicas: Replicas = DEFAULT_REPLICAS


_Record = (Release | ReleaseReply | Deliver | Adopt | Locate | LocateReply | Claim
           | ClaimReply | NodeLoad | RemoteLoad | RemoteRecord | RemoteCommit)

_encoder = msgspec.msgpack.Encoder()


def encode(record: _Record) -> bytes:
    return _encoder.encode(record)


_T = TypeVar("_T")


def decode(data: bytes, tp: type[_T]) -> _T:
    """Decode ``data`` as ``tp``.

    Raises:
        msgspec.ValidationError, msgspec.DecodeError: malformed input.
    """
    return msgspec.msgpack.decode(data, type=tp)


class PlacementClient:
    """Calls the ``$placement`` service of another member, by name.

    Args:
        rpc: the node's RPC client (``None``: an embedded node, which calls nobody).
        address: a member's address by name (raises ``NodeUnavailable`` if unknown).
        timeout_s: the default timeout of one request.
    """

    __slots__ = ("address", "rpc", "timeout_s")

    def __init__(self, rpc: RpcClient | None, address: Callable[[str], str],
                 timeout_s: float) -> None:
        self.rpc = rpc
        self.address = address
        self.timeout_s = timeout_s

    async def call(self, name: str, method: str, payload: bytes,
                   timeout_s: float | None = None) -> bytes:
        """Run ``$placement.<method>`` on member ``name``; its reply.

        Raises:
            NodeUnavailable: this node has no cluster transport, or ``name`` is unknown
                or unreachable.
            PhoenixError: whatever the member answered.
        """
        rpc = self.rpc
        if rpc is None:
            raise NodeUnavailable("this node has no cluster transport", definite=True)
        return await rpc.call(self.address(name), "placement", method, payload,
                              timeout_s or self.timeout_s)
