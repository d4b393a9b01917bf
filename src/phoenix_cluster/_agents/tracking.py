"""State tracking: roll back and commit an agent's state in proportion to what changed.

The plain path (``state.py``, ``runtime.py``) encodes the agent's whole state after every
message that succeeded: those bytes are what a failing handler is rolled back to and
what a replicated kind commits. That costs as much as the state is big (about 300 µs
for 100,000 integers) on every message, whatever the message changed.

A :class:`StateTracker` keeps, per public attribute, the value committed last (the
object itself) and its encoding. After a message it looks at each attribute:

- an attribute whose object is the committed one, which cannot have changed in place,
  costs one identity test: immutable values (None, bool, int, float, str, bytes, and
  tuples, frozensets, frozen Structs, dates, decimals, UUIDs and enums made of them) and
  dicts the tracker watches;
- a dict in the state (nested dicts too) is replaced by a :class:`WatchedDict`, a dict
  subclass whose every mutating method marks the attribute it belongs to as changed, so
  ``self.items[k] = v`` and ``self.items[k][j] += 1`` are seen;
- anything else that can change in place (a list, a set, a mutable Struct, a CRDT, a
  bytearray, any other object) makes its attribute *opaque*: encoded after every
  message and compared with its committed bytes, which is the plain path's cost for
  that attribute only.

Lists stay opaque on purpose: ``heapq`` (C code) appends to and reorders a list below its
methods, so a list subclass cannot see every change, and a change it missed would be
neither rolled back nor committed. A dict has no such back door in the standard library.

A rollback puts back the committed object of every attribute that was reassigned, added
or deleted, and decodes the committed bytes of those changed in place. A commit encodes
the changed attributes; the whole state's bytes (what replicas and stores keep) are the
committed parts joined (:meth:`StateTracker.state`, a copy, not an encode).

Replacing a dict by its watched copy changes the object's identity, so it is done only
when nothing but the state holds the dict (its reference count says so); a dict held
elsewhere too (a private attribute, a closure, a second state attribute) leaves its
attribute opaque. Which kinds and activations use a tracker is decided by the host
(``state.py``, :data:`SMALL_STATE`).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import sys
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["SMALL_STATE", "Change", "StateTracker", "WatchedDict"]

SMALL_STATE = 4096
"""Encoded state below this many bytes keeps the plain path: encoding it after each
message costs a few µs, less than a tracker's bookkeeping and memory."""

_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_IMMUTABLE_LEAVES = (datetime.date, datetime.time, datetime.timedelta, decimal.Decimal,
                     uuid.UUID, enum.Enum)
_MISSING: Any = object()


class _Cell:
    """What the watched dicts of one attribute report to: changed since the last commit,
    and where they were given values that are not scalars (to adopt at the next one)."""

    __slots__ = ("dirty", "keys")

    def __init__(self) -> None:
        self.dirty = False
        self.keys: list[tuple[dict[Any, Any], Any]] = []


class WatchedDict(dict[Any, Any]):
    """A dict of an agent's state: a ``dict`` in every way (``isinstance`` holds, it
    encodes and compares like one; ``type(d) is dict`` does not) that reports every
    change to its attribute's tracker. Its copies (``copy()``, ``|``, ``copy.copy``)
    are plain dicts."""

    __slots__ = ("_phx_cell",)
    _phx_cell: _Cell

    def __setitem__(self, key: Any, value: Any) -> None:
        cell = self._phx_cell
        cell.dirty = True
        if type(value) not in _SCALARS:
            cell.keys.append((self, key))
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        self._phx_cell.dirty = True
        dict.__delitem__(self, key)

    def __ior__(self, other: Any) -> WatchedDict:  # type: ignore[misc]
        self.update(other)
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # a second __init__ updates
        self.update(*args, **kwargs)

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        import copy

        return {copy.deepcopy(k, memo): copy.deepcopy(v, memo) for k, v in self.items()}

    def clear(self) -> None:
        self._phx_cell.dirty = True
        dict.clear(self)

    def pop(self, *args: Any) -> Any:
        self._phx_cell.dirty = True
        return dict.pop(self, *args)

    def popitem(self) -> tuple[Any, Any]:
        self._phx_cell.dirty = True
        return dict.popitem(self)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return dict.__getitem__(self, key)
        self[key] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        new = dict(*args, **kwargs)
        if not new:
            return
        cell = self._phx_cell
        cell.dirty = True
        for key, value in new.items():
            if type(value) not in _SCALARS:
                cell.keys.append((self, key))
        dict.update(self, new)


def _new_watched(cell: _Cell) -> WatchedDict:
    d = dict.__new__(WatchedDict)
    d._phx_cell = cell
    return d


def _refs(holder: dict[Any, Any], key: Any) -> int:
    return sys.getrefcount(holder[key])


# What _refs says of a value that only its holder refers to (calibrated, not assumed:
# the interpreter's own temporaries differ between versions).
_HELD_ONCE = _refs({0: {}}, 0)


def _immutable(value: Any) -> bool:
    """``value`` cannot change in place (so the identity test sees every change)."""
    t = type(value)
    if t in _SCALARS:
        return True
    if t is tuple or t is frozenset:
        return all(_immutable(v) for v in value)
    if isinstance(value, msgspec.Struct):
        config = t.__struct_config__
        return config.frozen and all(_immutable(getattr(value, f)) for f in t.__struct_fields__)
    return isinstance(value, _IMMUTABLE_LEAVES)


def _adopt(holder: dict[Any, Any], key: Any, cell: _Cell) -> bool:
    """Make ``holder[key]`` trackable under ``cell`` (dicts become watched copies);
    ``False``: it cannot be, and its attribute is opaque."""
    t = type(holder[key])
    if t in _SCALARS:
        return True
    if t is WatchedDict:
        if holder[key]._phx_cell is cell:
            return True  # adopted before; what it was given since is in cell.keys
    elif t is not dict:
        return _immutable(holder[key])
    if _refs(holder, key) > _HELD_ONCE:
        return False  # held elsewhere too: a copy would split it from the state
    value = holder[key]
    for k in list(value):  # children first: nobody else sees ``value``
        if not _adopt(value, k, cell):
            return False
    watched = _new_watched(cell)
    dict.update(watched, value)
    dict.__setitem__(holder, key, watched)
    return True


def _public(attrs: dict[str, Any]) -> list[str]:
    return [k for k in attrs if not k.startswith("_")]


class Change:
    """What a message changed, computed after it and made committed by
    :meth:`StateTracker.accept` once the commit succeeded."""

    __slots__ = ("_tracker", "cells", "encoded", "opaque", "values")

    def __init__(self, tracker: StateTracker, values: dict[str, Any],
                 encoded: dict[str, bytes], cells: dict[str, _Cell],
                 opaque: set[str]) -> None:
        self._tracker = tracker
        self.values = values
        self.encoded = encoded
        self.cells = cells
        self.opaque = opaque

    def state(self) -> bytes:
        """The whole state after the message, as the plain path encodes it."""
        return self._tracker.join(self.encoded)


class StateTracker:
    """The committed state of one activation, attribute by attribute (see the module)."""

    __slots__ = ("_decode", "_encode", "_types", "cells", "encoded", "opaque", "values")

    def __init__(self, attrs: dict[str, Any], state_types: dict[str, Any],
                 encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]) -> None:
        """Track the state in ``attrs`` (an agent's ``__dict__``; ``state_types``: its
        kind's annotated attributes, converted to on a rollback as ``Agent.restore``
        does)."""
        self._encode = encode
        self._decode = decode
        self._types = state_types
        self.cells: dict[str, _Cell] = {}
        """Attribute -> the cell its watched dicts report to."""
        self.opaque: set[str] = set()
        """Attributes encoded after every message (their value may change unseen)."""
        for name in _public(attrs):
            _adopt_attribute(attrs, name, self.cells, self.opaque)
        self.values: dict[str, Any] = {k: attrs[k] for k in _public(attrs)}
        """Attribute -> its committed value (the object)."""
        self.encoded: dict[str, bytes] = {k: encode(v) for k, v in self.values.items()}
        """Attribute -> its committed value's bytes, in the state's order."""

    def join(self, encoded: dict[str, bytes]) -> bytes:
        """The msgpack map of ``encoded``'s attributes: the bytes the plain path's
        ``encode(snapshot())`` gives for the same state."""
        n = len(encoded)
        if n < 16:
            parts = [bytes((0x80 | n,))]
        elif n < 2**16:
            parts = [b"\xde" + n.to_bytes(2, "big")]
        else:  # pragma: no cover - 65,536 attributes
            parts = [b"\xdf" + n.to_bytes(4, "big")]
        encode = self._encode
        for name, value in encoded.items():
            parts.append(encode(name))
            parts.append(value)
        return b"".join(parts)

    def state(self) -> bytes:
        """The committed state's bytes."""
        return self.join(self.encoded)

    def collect(self, attrs: dict[str, Any]) -> Change | None:
        """What the message that just ran changed; ``None``: nothing to commit.

        Dicts the message put into the state become watched here (before the commit),
        so a later message's changes to them are seen."""
        values = self.values
        cells = self.cells
        opaque = self.opaque
        names = _public(attrs)
        touched = []
        for name in names:
            cell = cells.get(name)
            if (values.get(name, _MISSING) is not attrs[name] or name in opaque
                    or (cell is not None and cell.dirty)):
                touched.append(name)
        same_names = names == list(values)  # (in the same order: the bytes follow it)
        if not touched and same_names:
            return None  # every committed attribute is there, unchanged
        encode = self._encode
        encoded = self.encoded
        new_cells = dict(cells)
        new_opaque = set(opaque)
        changed = not same_names
        updates: dict[str, bytes] = {}
        for name in touched:
            if values.get(name, _MISSING) is not attrs[name]:
                _adopt_attribute(attrs, name, new_cells, new_opaque)
            else:
                cell = cells[name]
                if cell.keys:
                    keys, cell.keys = cell.keys, []
                    for holder, key in keys:
                        if key in holder and not _adopt(holder, key, cell):
                            new_opaque.add(name)
            data = encode(attrs[name])
            if data != encoded.get(name):
                updates[name] = data
                changed = True
        new_values = {k: attrs[k] for k in names}
        new_encoded = {k: updates[k] if k in updates else encoded[k] for k in names}
        change = Change(self, new_values, new_encoded, new_cells, new_opaque)
        if not changed:
            # Same content (``x = x + 0``, a dict changed and changed back): nothing to
            # commit, but the objects now in the state are the committed ones.
            self.accept(change)
            return None
        return change

    def accept(self, change: Change) -> None:
        """``change`` is committed: it is what the next rollback returns to."""
        for cell in self.cells.values():
            cell.dirty = False
            cell.keys = []
        values = change.values
        self.cells = {k: c for k, c in change.cells.items() if k in values}
        for cell in self.cells.values():
            cell.dirty = False
            cell.keys = []
        self.values = values
        self.encoded = change.encoded
        self.opaque = change.opaque & values.keys()

    def rollback(self, attrs: dict[str, Any]) -> None:
        """Return the agent (its ``attrs``) to the committed state (after a failed
        message or commit)."""
        for name in _public(attrs):
            del attrs[name]
        cells = self.cells
        opaque = self.opaque
        for name, committed in self.values.items():
            cell = cells[name]
            changed = cell.dirty
            if name in opaque and not changed:
                try:
                    changed = self._encode(committed) != self.encoded[name]
                except Exception:  # made unencodable (a cycle, say): it changed
                    changed = True
            if not changed:
                attrs[name] = committed
                continue
            decoded = self._decode(self.encoded[name])
            tp = self._types.get(name)
            attrs[name] = decoded if tp is None else msgspec.convert(decoded, tp)
            del decoded  # (so that only the state holds the value it adopts)
            _adopt_attribute(attrs, name, cells, opaque)
            self.values[name] = attrs[name]
        for cell in cells.values():
            cell.dirty = False
            cell.keys = []


def _adopt_attribute(attrs: dict[str, Any], name: str, cells: dict[str, _Cell],
                     opaque: set[str]) -> None:
    cell = cells[name] = _Cell()
    if _adopt(attrs, name, cell):
        opaque.discard(name)
    else:
        opaque.add(name)
