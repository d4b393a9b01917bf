"""What the ``$registry``, ``$groups`` and ``$pubsub`` node services exchange.

Each request and reply is a msgspec Struct encoded as msgpack, carried as the payload of
a system Call (or Cast) frame. Decoding goes through :func:`decode`, which turns any
malformed or mistyped payload into :class:`~phoenix_cluster.errors.ProtocolError`, so a
hostile or buggy peer gets a typed error back and the node keeps running.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

from ..errors import ProtocolError
from .entries import Entry

__all__ = [
    "ConflictNotice",
    "DeliveryReply",
    "GroupReply",
    "GroupRequest",
    "Invalidate",
    "LookupManyReply",
    "LookupManyRequest",
    "LookupReply",
    "LookupRequest",
    "NamesReply",
    "NamesRequest",
    "Publish",
    "Refusal",
    "RegisterReply",
    "RegisterRequest",
    "StoreMode",
    "StoreReply",
    "StoreRequest",
    "Tomb",
    "UnregisterReply",
    "UnregisterRequest",
    "decode",
    "encode",
]

_Hops = Annotated[int, msgspec.Meta(ge=0, le=16)]

StoreMode = Literal["replicate", "handoff", "reassert"]
"""Why entries are pushed to an owner: a coordinator replicating a new registration, an
old owner handing entries to a new one, or a holder re-asserting the names it holds."""


class _Msg(msgspec.Struct, frozen=True, array_like=True):
    pass


class Tomb(_Msg, frozen=True):
    """Registration ``rid`` of ``name`` was unregistered."""

    name: str
    rid: int


class RegisterRequest(_Msg, frozen=True):
    """To the name's coordinator: store ``entry`` on a majority of its replicas."""

    entry: Entry
    hops: _Hops = 0


class RegisterReply(_Msg, frozen=True):
    """The stored entry (stamped with its time), or the node to ask instead."""

    entry: Entry | None = None
    redirect: str = ""


class StoreRequest(_Msg, frozen=True):
    """To an owner: merge these registrations and tombstones."""

    mode: StoreMode
    entries: list[Entry] = []
    tombs: list[Tomb] = []


class Refusal(_Msg, frozen=True):
    """An incoming entry the owner did not keep; ``winner`` is what it keeps instead
    (``None``: the registration was unregistered, or its holder is gone)."""

    name: str
    rid: int
    winner: Entry | None = None


class StoreReply(_Msg, frozen=True):
    refused: list[Refusal] = []


class LookupRequest(_Msg, frozen=True):
    name: str


class LookupReply(_Msg, frozen=True):
    entry: Entry | None = None


class LookupManyRequest(_Msg, frozen=True):
    """Several lookups of one turn to one owner (``turn_batching``)."""

    names: list[str]


class LookupManyReply(_Msg, frozen=True):
    """One entry (or ``None``) per name, in order; a reply cut short by its size leaves
    the names after the last entry to be asked again one by one."""

    entries: list[Entry | None] = []


class UnregisterRequest(_Msg, frozen=True):
    """To the name's coordinator: unregister ``name`` (registration ``rid``, or 0 for
    whichever is live)."""

    name: str
    rid: int = 0
    hops: _Hops = 0


class UnregisterReply(_Msg, frozen=True):
    removed: Entry | None = None
    redirect: str = ""


class NamesRequest(_Msg, frozen=True):
    prefix: str = ""


class NamesReply(_Msg, frozen=True):
    names: list[str] = []


class Invalidate(_Msg, frozen=True):
    """Drop these names from the lookup cache (they were unregistered or re-resolved)."""

    names: list[str]


class ConflictNotice(_Msg, frozen=True):
    """To a holder: its registration ``loser`` is gone, replaced by ``winner`` (a
    conflict) or by nothing (someone unregistered it)."""

    loser: Entry
    winner: Entry | None = None


class GroupRequest(_Msg, frozen=True):
    group: str


class GroupReply(_Msg, frozen=True):
    """Agents (kind, key) that joined ``group`` through the answering node."""

    members: list[tuple[str, str]] = []


class Publish(_Msg, frozen=True):
    """A message for every subscriber of ``topic`` on the receiving node.

    ``stream`` and ``seq`` number the publisher's messages to this node (see
    ``ordering``); ``seq`` 0 means unnumbered.
    """

    topic: str
    publisher: str
    message: msgspec.Raw
    stream: int = 0
    seq: Annotated[int, msgspec.Meta(ge=0)] = 0


class DeliveryReply(_Msg, frozen=True):
    """How many local subscribers took the message, and how many missed it."""

    delivered: int = 0
    dropped: int = 0


_T = TypeVar("_T")
_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}
_encoder = msgspec.msgpack.Encoder()


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def decode(kind: type[_T], payload: bytes) -> _T:
    """Decode a service payload as ``kind``.

    Raises:
        ProtocolError: the payload is not valid msgpack of that shape.
    """
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.msgpack.Decoder(kind)
    try:
        result: _T = decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:
        raise ProtocolError(
            f"malformed {kind.__name__} ({len(payload)} bytes): {exc}"
        ) from None
    return result
