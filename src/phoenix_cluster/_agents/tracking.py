"""State tracking: roll back and commit an agent's state in proportion to what changed.

The plain path (``state.py``, ``runtime.py``) encodes the agent's whole state after every
message that succeeded: those bytes are what a failing handler is rolled back to and
what a replicated kind commits. That costs as much as the state is big (about 300 µs
for 100,000 integers in a list, 1 ms in a dict) on every message, whatever it changed.

A :class:`StateTracker` keeps, per public attribute, the value committed last (the
object itself) and its encoding. After a message it looks at each attribute:

- an attribute whose object is the committed one and cannot have changed in place costs
  one identity test: immutable values (None, bool, int, float, str, bytes, and tuples,
  frozensets, frozen Structs, dates, decimals, UUIDs and enums made of them) and dicts,
  which the tracker replaces by watched dicts that journal their changes
  (``watched.py``: ``self.items[k] = v`` and ``self.items[k][j] += 1`` are seen);
- an attribute that was reassigned, added or deleted, or whose watched dicts changed,
  is encoded again (the cost of that attribute, not of the state);
- anything else that can change in place (a list, a set, a mutable Struct, a CRDT, a
  bytearray, any other object) makes its attribute *opaque*: encoded after every
  message and compared with its committed bytes, the plain path's cost for that
  attribute only. Lists are opaque on purpose (``watched.py`` says why).

A rollback puts back the committed object of every attribute that was reassigned, added
or deleted, replays the undo journal of the watched dicts that changed, and decodes only
opaque attributes that changed and dicts whose journal cannot restore their order. A
commit's bytes (what replicas and stores keep) are the committed parts joined
(:meth:`StateTracker.state`: a copy, not an encode).

Which kinds and activations use a tracker is decided by the host (``state.py``,
:data:`SMALL_STATE`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from .watched import Cell, adopt, undo

__all__ = ["SMALL_STATE", "Change", "StateTracker"]

SMALL_STATE = 4096
"""Encoded state below this many bytes keeps the plain path: encoding it after each
message costs a few µs, less than a tracker's bookkeeping and memory."""

_MISSING: Any = object()


def _public(attrs: dict[str, Any]) -> list[str]:
    return [k for k in attrs if not k.startswith("_")]


class Change:
    """What a message changed, computed after it (:meth:`StateTracker.collect`) and made
    the committed state by :meth:`StateTracker.accept` once the commit succeeded."""

    __slots__ = ("_tracker", "attrs", "encoded", "fresh", "given")

    def __init__(self, tracker: StateTracker, attrs: dict[str, Any],
                 encoded: dict[str, bytes], fresh: list[str], given: list[str]) -> None:
        self._tracker = tracker
        self.attrs = attrs
        self.encoded = encoded
        """Attribute -> bytes after the message, in the state's order."""
        self.fresh = fresh
        """Attributes with a new value (reassigned or added): adopted at the commit."""
        self.given = given
        """Attributes whose watched dicts were given values that are not scalars."""

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
        self.cells: dict[str, Cell] = {}
        """Attribute -> the cell its watched dicts report to."""
        self.opaque: set[str] = set()
        """Attributes encoded after every message (their value may change unseen)."""
        for name in _public(attrs):
            self._adopt(attrs, name)
        self.values: dict[str, Any] = {k: attrs[k] for k in _public(attrs)}
        """Attribute -> its committed value (the object)."""
        self.encoded: dict[str, bytes] = {k: encode(v) for k, v in self.values.items()}
        """Attribute -> its committed value's bytes, in the state's order."""

    def _adopt(self, attrs: dict[str, Any], name: str) -> None:
        """Give attribute ``name`` a new cell and adopt its value."""
        old = self.cells.get(name)
        if old is not None:
            old.retire()
        cell = self.cells[name] = Cell()
        if adopt(attrs, name, cell):
            self.opaque.discard(name)
        else:
            self.opaque.add(name)

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

        Raises:
            msgspec.EncodeError, TypeError, ...: a changed attribute cannot be encoded
                (the message fails and is rolled back, as on the plain path).
        """
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
        changed = not same_names
        updates: dict[str, bytes] = {}
        fresh: list[str] = []
        given: list[str] = []
        for name in touched:
            if values.get(name, _MISSING) is not attrs[name]:
                fresh.append(name)
            elif cells[name].keys:
                given.append(name)
            data = encode(attrs[name])
            if data != encoded.get(name):
                updates[name] = data
                changed = True
        new_encoded = {k: updates[k] if k in updates else encoded[k] for k in names}
        change = Change(self, attrs, new_encoded, fresh, given)
        if not changed:
            # Same content (``x = x + 0``, a dict changed and changed back): nothing to
            # commit, but the objects now in the state become the committed ones.
            self.accept(change)
            return None
        return change

    def accept(self, change: Change) -> None:
        """``change`` is committed: it is what the next rollback returns to. Values the
        message put into the state are adopted now (dicts become watched)."""
        attrs = change.attrs
        cells = self.cells
        given = {name: cells[name].keys for name in change.given}
        for cell in cells.values():
            if cell.dirty:
                cell.committed()  # (the journal lets go of its values: adopt counts them)
        self.values = {}  # (likewise: a value moved between attributes is held once)
        for name, keys in given.items():
            cell = cells[name]
            for holder, key in keys:
                if key in holder and not adopt(holder, key, cell):
                    self.opaque.add(name)
        for name in change.fresh:
            self._adopt(attrs, name)
        for name in [k for k in cells if k not in change.encoded]:  # deleted
            cells.pop(name).retire()
            self.opaque.discard(name)
        self.values = {k: attrs[k] for k in change.encoded}
        self.encoded = change.encoded

    def rollback(self, attrs: dict[str, Any]) -> None:
        """Return the agent (its ``attrs``) to the committed state (after a failed
        message or commit)."""
        cells = self.cells
        for cell in cells.values():
            if cell.dirty and not cell.reordered:
                undo(cell)  # the committed dicts' content is back
        for name in _public(attrs):
            del attrs[name]
        for name, committed in self.values.items():
            changed = cells[name].dirty  # (still dirty: reordered)
            if name in self.opaque and not changed:
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
            self._adopt(attrs, name)
            self.values[name] = attrs[name]
