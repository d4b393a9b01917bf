"""State tracking: roll back and commit an agent's state in proportion to what changed.

The plain path (``state.py``, ``runtime.py``) encodes the agent's whole state after every
message that succeeded: those bytes are what a failing handler is rolled back to and
what a replicated kind commits. That costs as much as the state is big (about 300 µs
for 100,000 integers in a list, 1 ms in a dict) on every message, whatever it changed.

A :class:`StateTracker` keeps, per public attribute, the value committed last (the
object itself) and its encoding. After a message it looks at each attribute:

- an attribute whose object is the committed one and cannot have changed in place costs
  one identity test: immutable values (None, bool, int, float, str, bytes, and tuples,
  frozensets, frozen Structs, dates, decimals, UUIDs and enums made of them), and dicts
  and lists, which the tracker replaces by watched ones that journal their changes
  (``watched.py``: ``self.items[k] = v``, ``self.items[k][j] += 1`` and
  ``self.log.append(x)`` are seen);
- an attribute whose watched containers changed costs nothing more after the message:
  its encoding is *stale*, and made only when bytes are needed (a replicated kind's
  commit, :meth:`Change.state`; passivation or a handoff, :meth:`StateTracker.state`);
- an attribute that was reassigned, added or deleted is encoded again (the cost of
  that attribute, not of the state);
- anything else that can change in place (a set, a mutable Struct, a CRDT, a bytearray,
  any other object, and lists of a kind whose code uses ``heapq``) makes its attribute
  *opaque*: encoded after every message and compared with its committed bytes, the
  plain path's cost for that attribute only.

A rollback puts back the committed object of every attribute that was reassigned, added
or deleted, replays the undo journal of the watched containers that changed, and decodes
only opaque attributes that changed. A commit's bytes (what replicas and stores keep)
are the committed parts joined (:meth:`StateTracker.state`: a copy, plus the encoding
of the attributes that changed since the bytes were last needed).

Which kinds and activations use a tracker is decided by the host (``state.py``,
:data:`SMALL_STATE`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from .journal import Cell, undo
from .watched import SCALARS, adopt

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
                 encoded: dict[str, bytes | None], fresh: list[str],
                 given: list[str]) -> None:
        self._tracker = tracker
        self.attrs = attrs
        self.encoded = encoded
        """Attribute -> bytes after the message, in the state's order (``None``: stale,
        encoded from the attribute when needed)."""
        self.fresh = fresh
        """Attributes with a new value (reassigned or added): adopted at the commit."""
        self.given = given
        """Attributes whose watched containers were given values that are not scalars."""

    def state(self) -> bytes:
        """The whole state after the message, as the plain path encodes it."""
        encoded = self.encoded
        for name, data in encoded.items():
            if data is None:
                encoded[name] = self._tracker._encode(self.attrs[name])
        return self._tracker.join(encoded)


class StateTracker:
    """The committed state of one activation, attribute by attribute (see the module)."""

    __slots__ = ("_decode", "_encode", "_lists", "_types", "cells", "encoded", "opaque",
                 "values")

    def __init__(self, attrs: dict[str, Any], state_types: dict[str, Any],
                 encode: Callable[[Any], bytes], decode: Callable[[bytes], Any], *,
                 lists: bool) -> None:
        """Track the state in ``attrs`` (an agent's ``__dict__``; ``state_types``: its
        kind's annotated attributes, converted to on a rollback as ``Agent.restore``
        does; ``lists``: watch lists too, else they are opaque)."""
        self._encode = encode
        self._decode = decode
        self._types = state_types
        self._lists = lists
        self.cells: dict[str, Cell] = {}
        """Attribute -> the cell its watched containers report to."""
        self.opaque: set[str] = set()
        """Attributes encoded after every message (their value may change unseen)."""
        for name in _public(attrs):
            self._adopt(attrs, name)
        self.values: dict[str, Any] = {k: attrs[k] for k in _public(attrs)}
        """Attribute -> its committed value (the object)."""
        self.encoded: dict[str, bytes | None] = {k: encode(v) for k, v in self.values.items()}
        """Attribute -> its committed value's bytes, in the state's order (``None``:
        stale, never for an opaque attribute)."""

    def _adopt(self, attrs: dict[str, Any], name: str) -> None:
        """Give attribute ``name`` a new cell and adopt its value."""
        old = self.cells.get(name)
        if old is not None:
            old.retire()
        cell = self.cells[name] = Cell(self._lists)
        if adopt(attrs, name, cell):
            self.opaque.discard(name)
        else:
            self.opaque.add(name)

    def join(self, encoded: dict[str, bytes | None]) -> bytes:
        """The msgpack map of ``encoded``'s attributes (none stale): the bytes the
        plain path's ``encode(snapshot())`` gives for the same state."""
        n = len(encoded)
        if n < 16:
            parts = [bytes((0x80 | n,))]
        elif n < 2**16:
            parts = [b"\xde" + n.to_bytes(2, "big")]
        else:  # pragma: no cover - 65,536 attributes
            parts = [b"\xdf" + n.to_bytes(4, "big")]
        encode = self._encode
        for name, value in encoded.items():
            assert value is not None
            parts.append(encode(name))
            parts.append(value)
        return b"".join(parts)

    def state(self) -> bytes:
        """The committed state's bytes (also in the middle of a message: the journal of
        an attribute changed since is undone for its encoding, then redone)."""
        encoded = self.encoded
        for name, data in encoded.items():
            if data is None:
                encoded[name] = self._committed_bytes(name)
        return self.join(encoded)

    def _committed_bytes(self, name: str) -> bytes:
        cell = self.cells[name]
        if not cell.dirty:
            return self._encode(self.values[name])
        redo = undo(cell.undo)
        try:
            return self._encode(self.values[name])
        finally:
            undo(redo)

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
        updates: dict[str, bytes | None] = {}
        fresh: list[str] = []
        given: list[str] = []
        for name in touched:
            if values.get(name, _MISSING) is not attrs[name]:
                fresh.append(name)
            else:
                if cells[name].keys:
                    given.append(name)
                if name not in opaque:
                    # The journal saw every change: encoded when the bytes are needed.
                    updates[name] = None
                    changed = True
                    continue
            data = encode(attrs[name])
            if data != encoded.get(name):
                updates[name] = data
                changed = True
        new_encoded = {k: updates[k] if k in updates else encoded[k] for k in names}
        change = Change(self, attrs, new_encoded, fresh, given)
        if not changed:
            # Same content (``x = x + 0``, an opaque value changed and changed back):
            # nothing to commit, but the objects now in the state become the committed
            # ones.
            self.accept(change)
            return None
        return change

    def accept(self, change: Change) -> None:
        """``change`` is committed: it is what the next rollback returns to. Values the
        message put into the state are adopted now (dicts and lists become watched)."""
        attrs = change.attrs
        cells = self.cells
        given = {name: (cells[name].keys, cells[name].shifts) for name in change.given}
        for cell in cells.values():
            if cell.dirty:
                cell.committed()  # (the journal lets go of its values: adopt counts them)
        self.values = {}  # (likewise: a value moved between attributes is held once)
        encoded = change.encoded
        for name, (keys, shifts) in given.items():
            if not self._adopt_given(cells[name], keys, shifts):
                self.opaque.add(name)
                if encoded[name] is None:  # (an opaque attribute's bytes are never stale)
                    encoded[name] = self._encode(attrs[name])
        for name in change.fresh:
            self._adopt(attrs, name)
        for name in [k for k in cells if k not in encoded]:  # deleted
            cells.pop(name).retire()
            self.opaque.discard(name)
        self.values = {k: attrs[k] for k in encoded}
        self.encoded = encoded

    @staticmethod
    def _adopt_given(cell: Cell, keys: list[tuple[Any, Any, int]], shifts: int) -> bool:
        """Adopt what a message put into the containers of ``cell`` (``keys``: where;
        ``shifts``: the cell's count of moves at the end of the message)."""
        scanned: set[int] = set()
        for holder, key, at in keys:
            if not isinstance(holder, list):
                if key in holder and not adopt(holder, key, cell):
                    return False
            elif at == shifts:  # nothing moved since: the index still holds it
                if key < len(holder) and not adopt(holder, key, cell):
                    return False
            elif id(holder) not in scanned:  # moved: adopt every item of the list
                scanned.add(id(holder))
                for i in range(len(holder)):
                    if type(holder[i]) not in SCALARS and not adopt(holder, i, cell):
                        return False
        return True

    def rollback(self, attrs: dict[str, Any]) -> None:
        """Return the agent (its ``attrs``) to the committed state (after a failed
        message or commit)."""
        cells = self.cells
        for cell in cells.values():
            if cell.dirty:
                undo(cell.undo)  # the committed containers' content is back
                cell.committed()
        for name in _public(attrs):
            del attrs[name]
        for name, committed in self.values.items():
            changed = False
            if name in self.opaque:
                try:
                    changed = self._encode(committed) != self.encoded[name]
                except Exception:  # made unencodable (a cycle, say): it changed
                    changed = True
            if not changed:
                attrs[name] = committed
                continue
            data = self.encoded[name]
            assert data is not None  # (opaque)
            decoded = self._decode(data)
            tp = self._types.get(name)
            attrs[name] = decoded if tp is None else msgspec.convert(decoded, tp)
            del decoded  # (so that only the state holds the value it adopts)
            self._adopt(attrs, name)
            self.values[name] = attrs[name]
