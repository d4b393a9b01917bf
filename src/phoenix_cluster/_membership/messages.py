"""Gossip datagrams, push-pull state, and the HMAC seal that authenticates them.

Owns the membership wire format, which is separate from the connection protocol of
``_wire/messages.py``: every datagram is one tagged, frozen, ``array_like`` msgspec
Struct encoded as msgpack and sealed as ``version || body || tag``, where ``tag`` is
HMAC-SHA256 over version and body truncated to :data:`TAG_BYTES`. Nothing is decoded
before its tag checks out, and nothing is ever unpickled.

Also owns :func:`gossip_address`, the one place that knows how a member's UDP address
follows from its TCP address.

Pure: no I/O, no asyncio. Imports only L0 and msgspec.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Literal, TypeAlias

import msgspec

from phoenix_cluster.errors import ProtocolError

__all__ = [
    "Ack",
    "GOSSIP_VERSION",
    "Gossip",
    "GossipCodec",
    "GossipMessage",
    "Nack",
    "Ping",
    "PingReq",
    "SEAL_OVERHEAD",
    "SyncState",
    "TAG_BYTES",
    "Update",
    "UpdateStatus",
    "decode_sync_state",
    "encode_sync_state",
    "gossip_address",
    "gossip_key",
    "seal",
    "unseal",
]

GOSSIP_VERSION = 1
"""First byte of every datagram; a receiver drops versions it does not know."""
TAG_BYTES = 16
"""HMAC-SHA256 truncated to 128 bits: forging one takes ~2**128 tries (RFC 2104 §5)."""
SEAL_OVERHEAD = 1 + TAG_BYTES

UpdateStatus = Literal["alive", "suspect", "dead", "left"]

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
_Address = Annotated[str, msgspec.Meta(max_length=255)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
# Bounded well below 2**64 so that refuting (incarnation + 1) can never overflow msgpack.
_Incarnation = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


def gossip_address(tcp_address: str) -> str:
    """The UDP ``host:port`` where the member listening on ``tcp_address`` gossips.

    The convention is the same host and the same port number, over UDP. This is the only
    function that knows it: the service binds here and the protocol sends here.
    """
    return tcp_address


class Update(msgspec.Struct, frozen=True, array_like=True):
    """What one member's state is, as gossiped or synced.

    Attributes:
        name: the member's name (its identity).
        address: its TCP ``host:port``.
        incarnation: higher wins; equal incarnations rank alive < suspect < dead < left.
        status: ``alive``, ``suspect``, ``dead`` or ``left``.
        role: ``member`` or ``client``.
        by: who suspected or declared it dead (Lifeguard counts distinct accusers).
        downed: with ``dead``: a split-brain decision removed this life of the member
            (not only the failure detector): it cannot refute its way back, it must go
            (exit, or rejoin as a new life). Appended field, default ``False``.
    """

    name: _Name
    address: _Address
    incarnation: _Incarnation
    status: UpdateStatus
    role: Literal["member", "client"] = "member"
    by: _Address = ""
    downed: bool = False


class Ping(msgspec.Struct, frozen=True, array_like=True, tag="ping"):
    """A direct probe; answered with :class:`Ack` only by the member named ``target``."""

    seq: _Count
    target: _Name
    source: _Address
    updates: tuple[Update, ...] = ()


class PingReq(msgspec.Struct, frozen=True, array_like=True, tag="preq"):
    """Ask a helper to probe ``target``; it relays the ack, or sends a :class:`Nack`."""

    seq: _Count
    target: _Name
    target_address: _Address
    timeout_ms: _Count
    source: _Address
    updates: tuple[Update, ...] = ()


class Ack(msgspec.Struct, frozen=True, array_like=True, tag="ack"):
    """The target answered probe ``seq`` (directly or through a helper)."""

    seq: _Count
    updates: tuple[Update, ...] = ()


class Nack(msgspec.Struct, frozen=True, array_like=True, tag="nack"):
    """A helper got no ack from the target in time (so the path to the helper works)."""

    seq: _Count
    updates: tuple[Update, ...] = ()


class Gossip(msgspec.Struct, frozen=True, array_like=True, tag="gsp"):
    """Updates on their own (a graceful leave); ``seq > 0`` asks for an :class:`Ack`."""

    seq: _Count
    source: _Address
    updates: tuple[Update, ...] = ()


GossipMessage: TypeAlias = Ping | PingReq | Ack | Nack | Gossip


class SyncState(msgspec.Struct, frozen=True, array_like=True, tag="sync"):
    """A node's full member table, exchanged by push-pull over TCP."""

    source: _Name
    members: tuple[Update, ...]


# RecursionError: msgspec refuses very deeply nested input; ValueError covers invalid UTF-8.
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError, ValueError)


class GossipCodec:
    """Encodes and decodes gossip bodies; build one per protocol and reuse it."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[GossipMessage] = msgspec.msgpack.Decoder(
            GossipMessage
        )

    def encode(self, msg: GossipMessage | Update) -> bytes:
        """The msgpack body of ``msg`` (an :class:`Update` encodes as it nests)."""
        return self._encoder.encode(msg)

    def decode(self, body: bytes) -> GossipMessage:
        """Decode a body that passed :func:`unseal`.

        Raises:
            ProtocolError: not msgpack, an unknown tag, or a field out of range.
        """
        try:
            return self._decoder.decode(body)
        except _DECODE_ERRORS as exc:
            raise ProtocolError(f"invalid gossip body of {len(body):,} bytes: {exc}") from exc

    def __repr__(self) -> str:
        return "<GossipCodec msgpack>"


_sync_decoder = msgspec.msgpack.Decoder(SyncState)
_sync_encoder = msgspec.msgpack.Encoder()


def encode_sync_state(state: SyncState) -> bytes:
    """The push-pull payload for ``state``."""
    return _sync_encoder.encode(state)


def decode_sync_state(payload: bytes) -> SyncState:
    """Decode a push-pull payload.

    Raises:
        ProtocolError: ``payload`` is not a valid :class:`SyncState`.
    """
    try:
        return _sync_decoder.decode(payload)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"invalid membership sync of {len(payload):,} bytes: {exc}") from exc


def gossip_key(secret: bytes) -> bytes:
    """The datagram MAC key: derived, so it differs from the handshake's use of the secret."""
    return hmac.new(secret, b"phoenix-gossip-v1", hashlib.sha256).digest()


def seal(key: bytes, body: bytes) -> bytes:
    """``version || body || tag`` ready to send (``key`` from :func:`gossip_key`)."""
    head = bytes((GOSSIP_VERSION,)) + body
    return head + hmac.new(key, head, hashlib.sha256).digest()[:TAG_BYTES]


def unseal(key: bytes, datagram: bytes) -> bytes | None:
    """The body of an authentic datagram, or ``None`` (wrong key, version or length)."""
    if len(datagram) <= SEAL_OVERHEAD or datagram[0] != GOSSIP_VERSION:
        return None
    head, tag = datagram[:-TAG_BYTES], datagram[-TAG_BYTES:]
    expected = hmac.new(key, head, hashlib.sha256).digest()[:TAG_BYTES]
    if not hmac.compare_digest(tag, expected):
        return None
    return head[1:]
