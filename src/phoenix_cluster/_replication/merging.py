"""Merge rules of active-active (``consistency="crdt"``) agent state, and their wire records.

The state of a crdt kind is a map ``field name -> CRDT`` (the agent's public attributes,
every one a :class:`~phoenix_cluster.crdt.Crdt`). Two replicas of such a state join
field by field: a field present on one side only is taken as it is, a field present on
both is the CRDT join. Because each field's join is commutative, associative and
idempotent, so is the join of states: replicas that received the same changes, in any
order and any number of times, hold the same state (docs/design/replication.md,
"Merged, not fenced").

Encoded states are msgpack maps of tagged CRDT Structs; decoding needs each field's type
(a :data:`Schema`, from the kind's annotations or a fresh instance), so that elements
come back with their declared types (tuples as tuples).

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

from .._crdt.base import Crdt, Digest
from ..errors import ConfigError, ProtocolError

__all__ = [
    "Fields",
    "Hashes",
    "HashesReply",
    "Push",
    "PushBatch",
    "Schema",
    "Wanted",
    "check_fields",
    "decode_fields",
    "decode_digests",
    "delta_between",
    "deltas_for",
    "digests",
    "encode_digests",
    "encode_fields",
    "merge_into",
    "schema_of",
    "state_hash",
]

Fields = dict[str, Crdt]
"""A crdt kind's state: field name -> CRDT value."""

Schema = Mapping[str, Any]
"""Field name -> the CRDT type to decode it with (``ORSet[str]``, ``PNCounter``...)."""

_encoder = msgspec.msgpack.Encoder()
_raw = msgspec.msgpack.Decoder()
_digests_decoder = msgspec.msgpack.Decoder(dict[str, Digest])


def _crdt_class(tp: Any) -> type[Crdt] | None:
    origin = typing.get_origin(tp) or tp
    return origin if isinstance(origin, type) and issubclass(origin, Crdt) else None


def check_fields(kind: str, state: Any) -> Fields:
    """``state`` (an agent's snapshot) as :data:`Fields`.

    Raises:
        ConfigError: ``state`` is not a dict of CRDTs; ``key`` names the first bad field.
    """
    if not isinstance(state, dict):
        raise ConfigError(
            f"agent kind {kind!r} is consistency='crdt': its snapshot must be a dict of "
            f"CRDT fields, got {type(state).__name__}", key="snapshot")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, Crdt):
            raise ConfigError(
                f"agent kind {kind!r} is consistency='crdt': state field {name!r} is a "
                f"{type(value).__name__}, not a phx.crdt type (GCounter, PNCounter, GSet, "
                "TwoPSet, ORSet, LWWRegister, MVRegister, ORMap, LWWMap)", key=str(name))
    return state


def schema_of(fields: Fields, annotations: Mapping[str, Any]) -> dict[str, Any]:
    """Each field's decoding type: its class-level annotation when that names the same
    CRDT type (it may carry element types), else the value's own class."""
    schema: dict[str, Any] = {}
    for name, value in fields.items():
        tp = annotations.get(name)
        schema[name] = tp if _crdt_class(tp) is type(value) else type(value)
    return schema


def encode_fields(fields: Fields) -> bytes:
    """The msgpack encoding of a state (fields in name order)."""
    return _encoder.encode({name: fields[name] for name in sorted(fields)})


def decode_fields(data: bytes, schema: Schema) -> Fields:
    """Decode an encoded state (or delta) with ``schema``.

    Raises:
        ProtocolError: not a msgpack map of known fields holding their CRDT types.
    """
    try:
        raw = _raw.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed crdt state: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"malformed crdt state: expected a map, got {type(raw).__name__}")
    fields: Fields = {}
    for name, value in raw.items():
        tp = schema.get(name) if isinstance(name, str) else None
        if tp is None:
            raise ProtocolError(f"crdt state has unknown field {name!r} "
                                f"(fields: {', '.join(sorted(schema)) or 'none'})")
        try:
            fields[name] = msgspec.convert(value, tp)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"crdt state field {name!r}: {exc}") from None
    return fields


def merge_into(target: Fields, other: Fields) -> bool:
    """Join ``other`` into ``target`` field by field, in place. Returns whether ``target``
    changed. ``other``'s values are copied, never shared.

    Raises:
        ProtocolError: a field holds different CRDT types on the two sides.
    """
    changed = False
    for name, value in other.items():
        mine = target.get(name)
        if mine is None:
            target[name] = value.copy()
            changed = True
            continue
        try:
            changed = mine.merge(value) or changed
        except TypeError as exc:
            raise ProtocolError(f"crdt state field {name!r}: {exc}") from None
    return changed


def delta_between(old: Fields, new: Fields) -> Fields:
    """What ``new`` has that ``old`` lacks, per changed field: joining it into ``old``
    (or into any replica that already had ``old``) gives ``new``. Requires ``old <= new``
    field by field, as after a handler's in-place mutators."""
    delta: Fields = {}
    for name, value in new.items():
        before = old.get(name)
        if before is None or type(before) is not type(value):
            delta[name] = value.copy()
        elif before != value:
            piece = value.delta_for(before.digest())
            if not piece.is_bottom():
                delta[name] = piece
    return delta


def digests(fields: Fields) -> dict[str, Digest]:
    """Each field's digest (what this replica has seen and holds)."""
    return {name: value.digest() for name, value in fields.items()}


def deltas_for(fields: Fields, theirs: Mapping[str, Digest]) -> Fields:
    """The smallest change that brings the replica whose digests are ``theirs`` up to
    ``fields``: per field, ``delta_for`` its digest; whole fields it lacks."""
    out: Fields = {}
    for name, value in fields.items():
        digest = theirs.get(name)
        piece = value.copy() if digest is None else value.delta_for(digest)
        if not piece.is_bottom():
            out[name] = piece
    return out


def encode_digests(d: Mapping[str, Digest]) -> bytes:
    return _encoder.encode(dict(d))


def decode_digests(data: bytes) -> dict[str, Digest]:
    """Raises ProtocolError on malformed input."""
    try:
        return _digests_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"malformed crdt digests: {exc}") from None


def state_hash(encoded: bytes) -> bytes:
    """A 16-byte fingerprint of an encoded state. Equal fingerprints mean equal states;
    different ones usually mean different states (an encoding is not guaranteed canonical,
    so anti-entropy then compares digests, which settles it)."""
    return hashlib.blake2b(encoded, digest_size=16).digest()


# ----------------------------------------------------------------- wire records


class Push(msgspec.Struct, array_like=True, frozen=True):
    """A state or delta of one agent, to be joined into the receiver's replica."""

    kind: str
    key: str
    state: bytes


class PushBatch(msgspec.Struct, array_like=True, frozen=True):
    """Several pushes in one RPC (``push``); the reply is the number joined."""

    items: tuple[Push, ...]


class Hashes(msgspec.Struct, array_like=True, frozen=True):
    """Anti-entropy, first step (``hashes``): the sender's fingerprint of each agent it
    holds that the receiver replicates (or fetch: an empty fingerprint)."""

    items: tuple[tuple[str, str, bytes], ...]


class Wanted(msgspec.Struct, array_like=True, frozen=True):
    """One agent whose fingerprint differed: the receiver's digests of it (``None``: it
    holds nothing) and, when asked (fetch), its encoded state."""

    kind: str
    key: str
    digests: bytes | None
    state: bytes | None = None


class HashesReply(msgspec.Struct, array_like=True, frozen=True):
    items: tuple[Wanted, ...]
