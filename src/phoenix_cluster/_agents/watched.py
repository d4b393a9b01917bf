"""Watched dicts: the dicts of a tracked agent state, which journal their own changes.

A :class:`WatchedDict` is a ``dict`` subclass (``isinstance(d, dict)`` holds, it encodes
and compares like a dict; ``type(d) is dict`` does not) whose every mutating method,
before it changes anything, marks the :class:`Cell` of the state attribute the dict
belongs to as changed and appends the inverse of the change to the cell's undo journal:
put back the old value, or remove a key that was added. Replaying a journal backwards
returns every dict of the attribute to its committed content, nested ones included,
at a cost proportional to what changed (:func:`undo`). A deleted key is put back at the
end of its dict, so a deletion of any key but the last marks the cell ``reordered`` and
the tracker decodes the attribute instead (dict order is part of the state).

Values that are not scalars put into a watched dict are noted in ``Cell.keys`` so the
tracker adopts them (:func:`adopt`: plain dicts become watched copies) once the message
is committed. A copy replaces the object, so it is made only when the state holds the
dict once (its reference count says so); otherwise the attribute is opaque (encoded
after every message). Lists, sets and other mutable values are never adopted: C code
(``heapq``) changes a list below its methods, and a change the journal missed would be
neither rolled back nor committed. A dict's own methods called on it
(``dict.__setitem__(d, k, v)``) bypass the journal in the same way: state code calls
them on ``d``, never on ``dict``.

A cell is ``live`` while its attribute's value is the committed one; a retired cell's
dicts (replaced, deleted or detached values) stop journaling, so that a dict kept
elsewhere does not grow a journal nobody replays.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import sys
import uuid
from typing import Any

import msgspec

__all__ = ["Cell", "WatchedDict", "adopt", "undo"]

SCALARS = frozenset({type(None), bool, int, float, str, bytes})
"""Types whose values cannot change in place (exact types: a subclass may add state)."""

_IMMUTABLE_LEAVES = (datetime.date, datetime.time, datetime.timedelta, decimal.Decimal,
                     uuid.UUID, enum.Enum)
_MISSING: Any = object()


class Cell:
    """What the watched dicts of one state attribute report to."""

    __slots__ = ("dirty", "keys", "live", "reordered", "undo")

    def __init__(self) -> None:
        self.live = True
        self.dirty = False
        """Changed since the last commit."""
        self.reordered = False
        """A key other than the last was deleted: the journal cannot restore the order."""
        self.undo: list[tuple[dict[Any, Any], Any, Any]] = []
        """``(dict, key, old value or _MISSING)`` per change, oldest first."""
        self.keys: list[tuple[dict[Any, Any], Any]] = []
        """Where values that are not scalars were put (adopted at the commit)."""

    def committed(self) -> None:
        """The changes are committed: forget them."""
        self.dirty = self.reordered = False
        self.undo = []
        self.keys = []

    def retire(self) -> None:
        self.live = False
        self.committed()


class WatchedDict(dict[Any, Any]):
    """A dict of a tracked agent state (see the module). Its copies (``copy()``, ``|``,
    ``copy.copy``, ``copy.deepcopy``) are plain dicts."""

    __slots__ = ("_phx_cell",)
    _phx_cell: Cell

    def __setitem__(self, key: Any, value: Any) -> None:
        cell = self._phx_cell
        if cell.live:
            cell.undo.append((self, key, dict.get(self, key, _MISSING)))
            cell.dirty = True
            if type(value) not in SCALARS:
                cell.keys.append((self, key))
        dict.__setitem__(self, key, value)

    def _removing(self, key: Any) -> None:
        cell = self._phx_cell
        if cell.live and dict.__contains__(self, key):
            cell.dirty = True
            last = next(reversed(self))
            if last is not key and last != key:
                cell.reordered = True
            cell.undo.append((self, key, dict.__getitem__(self, key)))

    def __delitem__(self, key: Any) -> None:
        self._removing(key)
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        self._removing(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[Any, Any]:
        item = dict.popitem(self)  # the last one: put back at the end, in order
        cell = self._phx_cell
        if cell.live:
            cell.dirty = True
            cell.undo.append((self, item[0], item[1]))
        return item

    def clear(self) -> None:
        cell = self._phx_cell
        if cell.live and self:
            cell.dirty = True
            # Last key first: the backward replay puts them back in their order.
            cell.undo.extend((self, k, dict.__getitem__(self, k)) for k in reversed(self))
        dict.clear(self)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        self[key] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> WatchedDict:  # type: ignore[misc]
        self.update(other)
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # (a second __init__ updates)
        self.update(*args, **kwargs)

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return {copy.deepcopy(k, memo): copy.deepcopy(v, memo) for k, v in self.items()}


def undo(cell: Cell) -> None:
    """Return every dict of ``cell`` to its committed content (not ``reordered``)."""
    for d, key, old in reversed(cell.undo):
        if old is _MISSING:
            dict.pop(d, key, None)
        else:
            dict.__setitem__(d, key, old)
    cell.committed()


def _refs(holder: dict[Any, Any], key: Any) -> int:
    return sys.getrefcount(holder[key])


# What _refs says of a value that only its holder refers to (calibrated, not assumed:
# the interpreter's own temporaries differ between versions).
_HELD_ONCE = _refs({0: {}}, 0)


def _immutable(value: Any) -> bool:
    """``value`` cannot change in place (so an identity test sees every change)."""
    t = type(value)
    if t in SCALARS:
        return True
    if t is tuple or t is frozenset:
        return all(_immutable(v) for v in value)
    if isinstance(value, msgspec.Struct):
        return (t.__struct_config__.frozen
                and all(_immutable(getattr(value, f)) for f in t.__struct_fields__))
    return isinstance(value, _IMMUTABLE_LEAVES)


def adopt(holder: dict[Any, Any], key: Any, cell: Cell) -> bool:
    """Make ``holder[key]`` trackable under ``cell`` (a dict becomes a watched copy, its
    dicts too); ``False``: it cannot be, and its attribute is opaque."""
    t = type(holder[key])  # (no local holds the value: _refs counts the holders)
    if t in SCALARS:
        return True
    if t is WatchedDict:
        if holder[key]._phx_cell is cell:
            return True  # adopted before; what it was given since is in cell.keys
    elif t is not dict:
        return _immutable(holder[key])
    if _refs(holder, key) > _HELD_ONCE:
        return False  # held elsewhere too: a copy would split it from the state
    value = holder[key]
    for k in list(value):  # children first, while nobody else sees ``value``
        if not adopt(value, k, cell):
            return False
    watched = dict.__new__(WatchedDict)
    watched._phx_cell = cell
    dict.update(watched, value)
    dict.__setitem__(holder, key, watched)
    return True
