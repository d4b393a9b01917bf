"""What replicas and leaders send each other: tagged, frozen msgspec Structs.

One RPC method, ``batch``: a :class:`Batch` of items for one peer, answered by a
:class:`BatchReply` with one reply per item, in order (docs/design/replication.md,
Batching). New fields get defaults; array-like structs only append.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from ..errors import ProtocolError
from .types import ZERO_EPOCH, Config, Entry, Epoch

__all__ = [
    "Accept",
    "Ack",
    "Batch",
    "BatchReply",
    "Item",
    "Known",
    "Mark",
    "Prepare",
    "Probe",
    "Promise",
    "Reply",
    "WireEntry",
    "decode_batch",
    "decode_batch_reply",
    "encode",
    "encode_item",
    "encode_items",
]

_T = TypeVar("_T")

WireEntry = tuple[str, str, Entry]
"""``(kind, key, entry)``."""


class Prepare(msgspec.Struct, frozen=True, array_like=True, tag="prepare"):
    """A candidate asks for a promise of ``epoch`` on ``partition``."""

    partition: int
    epoch: Epoch
    config: Config


class Accept(msgspec.Struct, frozen=True, array_like=True, tag="accept"):
    """A leader asks a replica to store entries (``catchup``: part of an election)."""

    partition: int
    epoch: Epoch
    config: Config
    entries: tuple[WireEntry, ...]
    catchup: bool = False


class Mark(msgspec.Struct, frozen=True, array_like=True, tag="mark"):
    """A leader tells a replica it is caught up and ``config`` is the partition's config
    (a replica named in none of its sets drops its copy: released)."""

    partition: int
    epoch: Epoch
    config: Config


class Probe(msgspec.Struct, frozen=True, array_like=True, tag="probe"):
    """What does a node know of ``partition``? (Read only.)

    ``catch_up``: the sender is a replica of the partition that has not been caught up
    since it started (a restart, a rejoin); a receiver that leads the partition
    re-elects it, which catches every member of its set up and marks them, and one that
    is the partition's primary in its own table but does not lead it elects it.
    ``take_over``: the sender is leaving and the partition needs it (it leads it, or a
    member of its config died and the rest is no majority without the sender); a
    receiver in the partition's replica set elects it now, while the sender still
    answers. With ``catch_up`` as well, a receiver that leads it re-elects it.
    """

    partition: int
    catch_up: bool = False
    take_over: bool = False


Item = Prepare | Accept | Mark | Probe


class Promise(msgspec.Struct, frozen=True, array_like=True, tag="promise"):
    """Answer to :class:`Prepare`.

    ``ok``: ``promised`` is the replica's promise *before* this one; ``marked`` and
    ``config`` the last mark it took (the config it was caught up under, or released
    to); ``pending`` the configs of candidates it promised since; ``entries`` its records
    (only when ``synced``); ``amnesiac``: it may have forgotten a mark (restarted
    without its data); ``durable``: the replica keeps its data on disk (``data_dir``),
    so it remembers after a restart; ``served_by`` the leader (``name#incarnation``)
    whose accept or mark it acknowledged last, when that leader's read lease may still
    run for ``lease_left`` seconds (docs/design/replication.md, "Read leases"). Refused:
    ``promised`` is the epoch that beat the candidate.
    """

    partition: int
    ok: bool
    promised: Epoch
    marked: Epoch = ZERO_EPOCH
    config: Config = ()
    pending: Config = ()
    synced: bool = False
    entries: tuple[WireEntry, ...] = ()
    amnesiac: bool = False
    durable: bool = False
    served_by: str = ""
    lease_left: float = 0.0

    def knows(self) -> bool:
        """Whether the replica holds data of the partition or knows where it went: it is
        synced, or took a mark. (Pending configs alone are candidates' plans, maybe
        this very candidate's earlier round: they do not make a replica knowing.)"""
        return self.synced or self.marked != ZERO_EPOCH


class Ack(msgspec.Struct, frozen=True, array_like=True, tag="ack"):
    """Answer to :class:`Accept` and :class:`Mark`. Refused: ``reason`` is ``epoch``
    (``promised`` beat the sender) or ``unsynced`` (the replica must be caught up)."""

    partition: int
    ok: bool
    promised: Epoch
    reason: str = ""


class Known(msgspec.Struct, frozen=True, array_like=True, tag="known"):
    """Answer to :class:`Probe`: the fields of a :class:`Promise`, without promising."""

    partition: int
    promised: Epoch
    marked: Epoch
    config: Config
    pending: Config
    synced: bool
    records: int
    amnesiac: bool = False
    leads: bool = False
    """The replying node leads the partition (it re-elects on a ``catch_up`` probe)."""
    leaving: bool = False
    """The replying node is leaving too (answering a ``take_over`` probe): it takes
    nothing over, so the asker hands the partition to another member, or to none."""


Reply = Promise | Ack | Known


class Batch(msgspec.Struct, frozen=True, array_like=True):
    """Items for one peer, handled in order."""

    items: tuple[Item, ...]


class BatchReply(msgspec.Struct, frozen=True, array_like=True):
    """One reply per item of the :class:`Batch`, in the same order."""

    replies: tuple[Reply, ...]


_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(Batch)
_reply_decoder = msgspec.msgpack.Decoder(BatchReply)


def encode(message: Batch | BatchReply) -> bytes:
    """Encode a batch or its reply."""
    return _encoder.encode(message)


def encode_item(item: Item) -> bytes:
    """One item as it appears inside a :class:`Batch`: a leader encodes an accept once,
    whatever the number of replicas it goes to."""
    return _encoder.encode(item)


def encode_items(items: list[bytes]) -> bytes:
    """A :class:`Batch` of items encoded by :func:`encode_item`: the same bytes as
    ``encode(Batch(items))`` (an array-like struct of one field: a one-element array
    holding the array of items), without encoding any item again."""
    n = len(items)
    if n < 16:
        header = bytes((0x91, 0x90 | n))
    elif n < 1 << 16:
        header = b"\x91\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\x91\xdd" + n.to_bytes(4, "big")
    return header + b"".join(items)


def decode_batch(payload: bytes) -> Batch:
    """Decode a :class:`Batch`.

    Raises:
        ProtocolError: the payload is not a valid batch.
    """
    return _decode(_batch_decoder, "batch", payload)


def decode_batch_reply(payload: bytes) -> BatchReply:
    """Decode a :class:`BatchReply`.

    Raises:
        ProtocolError: the payload is not a valid reply.
    """
    return _decode(_reply_decoder, "reply", payload)


def _decode(decoder: msgspec.msgpack.Decoder[_T], what: str, payload: bytes) -> _T:
    try:
        return decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ProtocolError(
            f"malformed replication {what} of {len(payload):,} bytes: {exc}"
        ) from exc
