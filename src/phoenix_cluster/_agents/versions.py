"""State versions: which release of a kind wrote a state, and upgrading older ones.

A kind declares ``state_version`` (class keyword, default 1) and, once it is above 1,
an ``upgrade_state(old_version, state)`` classmethod that turns a decoded state written
by an older version into the current one. Every committed state carries the version that
wrote it:

- in replicas and the ``data_dir`` files, as a tag in front of the state's bytes,
  written only above version 1 (``0xc1``, the one byte msgpack never uses, then the
  version as msgpack), so state written before versions existed reads as version 1
  and nothing about the replication records or their files changes;
- in a state store, in the row's ``state_version`` column.

Reading a state of another version than the kind's: older is upgraded by the hook (the
upgraded state is what the activation starts from, and its next commit writes it back
at the current version); older without a hook, or newer than the code, is a
``StateVersionError`` naming both versions, and the agent does not activate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import StateVersionError
from .kinds import KindSpec

__all__ = ["tag_state", "untag_state", "upgrade"]

_TAG = b"\xc1"  # never a valid first byte of msgpack, so untagged state is unambiguous

_encode = msgspec.msgpack.encode
_decode_version = msgspec.msgpack.Decoder(int).decode


def tag_state(spec: KindSpec, state: bytes) -> bytes:
    """``state`` as replicas store it: tagged with the kind's version above 1."""
    if spec.state_version == 1:
        return state
    return _TAG + _encode(spec.state_version) + state


def untag_state(state: bytes) -> tuple[int, bytes]:
    """``(version, state)`` of bytes that replicas store (untagged: version 1)."""
    if not state.startswith(_TAG):
        return 1, state
    # The version is one msgpack int: a positive fixint, or 0xcc/0xcd/0xce + 1/2/4 bytes.
    head = state[1]
    width = 1 if head < 0x80 else {0xCC: 2, 0xCD: 3, 0xCE: 5}.get(head, 0)
    if not width:
        raise StateVersionError(f"stored state has a malformed version tag (byte {head:#x})")
    return _decode_version(state[1:1 + width]), state[1 + width:]


def upgrade(spec: KindSpec, key: str, version: int, state: bytes,
            decode: Callable[[bytes], Any]) -> bytes:
    """``state`` (written at ``version``) as the kind's current version, encoded.

    Raises:
        StateVersionError: ``version`` is newer than the kind's, or older with no
            ``upgrade_state`` hook, or the hook raised or returned something that does
            not encode.
    """
    current = spec.state_version
    if version == current:
        return state
    where = f"agent {spec.name}/{key}"
    if version > current:
        raise StateVersionError(
            f"{where}: stored state has state_version {version}, newer than this code's "
            f"{current} (a newer release wrote it); run that release, or one that knows "
            f"version {version}")
    if not spec.has_upgrade:
        raise StateVersionError(
            f"{where}: stored state has state_version {version} and the kind is at "
            f"{current}, but {spec.cls.__qualname__} defines no upgrade_state(old_version, "
            "state) classmethod to upgrade it")
    try:
        upgraded = spec.cls.upgrade_state(version, decode(state))
        return _encode(upgraded)
    except Exception as exc:
        raise StateVersionError(
            f"{where}: upgrade_state({version}, ...) to version {current} failed: "
            f"{type(exc).__name__}: {exc}") from exc
