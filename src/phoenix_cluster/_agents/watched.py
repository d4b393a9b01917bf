"""Watched dicts and lists: the containers of a tracked agent state, which journal their
own changes.

A :class:`WatchedDict` is a ``dict`` subclass and a :class:`WatchedList` a ``list``
subclass (``isinstance`` holds, they encode, compare and print like the plain ones;
``type(x) is dict`` does not hold) whose every mutating method marks the
:class:`~.journal.Cell` of the state attribute the container belongs to as changed and
appends the inverse of the change to the cell's undo journal (``journal.py``: put back
the old value, remove a key that was added, put back the items a slice had). Replaying
a journal backwards returns every container of the attribute to its committed content,
nested ones included, at a cost proportional to what changed. Deleting a dict key other
than the last journals a copy of the dict first (a key put back goes to the end, and
dict order is part of the state); sorting or reversing a list journals a copy of it
(both cost as much as the sort itself).

Values that are not scalars put into a watched container are noted in ``Cell.keys`` so
the tracker adopts them (:func:`adopt`: plain dicts and lists become watched copies)
once the message is committed. A copy replaces the object, so it is made only when the
state holds it once (its reference count says so); otherwise the attribute is opaque
(encoded after every message). Sets and other mutable values are never adopted.

What the journal cannot see: code that changes a container below its methods. For a
dict that is ``dict.__setitem__(d, k, v)`` called on a watched dict, which no library
does on a value it was given. For a list it is ``list.append(l, x)`` and, above all,
``heapq``, whose C functions change any list (subclasses included) without calling its
methods. So lists are watched only for kinds whose code does not use ``heapq``
(``state.py``: ``lists_trackable``); a cell made with ``lists=False`` keeps every list
opaque, as all lists were before lists were tracked.

A cell is ``live`` while its attribute's value is the committed one; a retired cell's
containers (replaced, deleted or detached values) stop journaling, so that a container
kept elsewhere does not grow a journal nobody replays.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import operator
import sys
import uuid
from collections.abc import Iterable
from typing import Any, SupportsIndex

import msgspec

from .journal import MISSING, WHOLE, Cell

__all__ = ["SCALARS", "WatchedDict", "WatchedList", "adopt"]

SCALARS = frozenset({type(None), bool, int, float, str, bytes})
"""Types whose values cannot change in place (exact types: a subclass may add state)."""

_IMMUTABLE_LEAVES = (datetime.date, datetime.time, datetime.timedelta, decimal.Decimal,
                     uuid.UUID, enum.Enum)


class WatchedDict(dict[Any, Any]):
    """A dict of a tracked agent state (see the module). Its copies (``copy()``, ``|``,
    ``copy.copy``, ``copy.deepcopy``) are plain dicts."""

    __slots__ = ("_phx_cell",)
    _phx_cell: Cell

    def __setitem__(self, key: Any, value: Any) -> None:
        cell = self._phx_cell
        if cell.live:
            cell.undo.append((self, key, dict.get(self, key, MISSING)))
            cell.dirty = True
            if type(value) not in SCALARS:
                cell.keys.append((self, key, 0))
        dict.__setitem__(self, key, value)

    def _removing(self, key: Any) -> None:
        cell = self._phx_cell
        if cell.live and dict.__contains__(self, key):
            cell.dirty = True
            last = next(reversed(self))
            if last is not key and last != key:
                cell.undo.append((self, WHOLE, dict(self)))  # (the order: see the module)
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
            cell.undo.append((self, WHOLE, dict(self)))
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


class WatchedList(list[Any]):
    """A list of a tracked agent state (see the module). Its copies (``copy()``,
    slices, ``+``, ``copy.copy``, ``copy.deepcopy``) are plain lists.

    Every change is journaled as ``(list, start, old items, count)`` (``journal.py``);
    one that moves items to other indices (an insert or a deletion before the end, a
    slice of another length, a sort) counts in ``Cell.shifts``."""

    __slots__ = ("_phx_cell",)
    _phx_cell: Cell

    def _given(self, cell: Cell, start: int, values: Iterable[Any]) -> None:
        for i, value in enumerate(values, start):
            if type(value) not in SCALARS:
                cell.keys.append((self, i, cell.shifts))

    def _whole(self, cell: Cell) -> None:
        """Journal a copy of the whole list (a change that reorders it)."""
        cell.dirty = True
        cell.shifts += 1
        n = list.__len__(self)
        cell.undo.append((self, 0, list.__getitem__(self, slice(0, n)), n))

    def append(self, value: Any) -> None:
        cell = self._phx_cell
        if cell.live:
            n = list.__len__(self)
            cell.undo.append((self, n, (), 1))
            cell.dirty = True
            if type(value) not in SCALARS:
                cell.keys.append((self, n, cell.shifts))
        list.append(self, value)

    def extend(self, values: Iterable[Any]) -> None:
        cell = self._phx_cell
        if not cell.live:
            list.extend(self, values)
            return
        items = list(values)
        n = list.__len__(self)
        cell.undo.append((self, n, (), len(items)))
        cell.dirty = True
        self._given(cell, n, items)
        list.extend(self, items)

    def __iadd__(self, values: Iterable[Any]) -> WatchedList:  # type: ignore[misc]
        self.extend(values)
        return self

    def insert(self, index: SupportsIndex, value: Any) -> None:
        cell = self._phx_cell
        if cell.live:
            n = list.__len__(self)
            i = operator.index(index)
            i = min(max(i + n if i < 0 else i, 0), n)
            if i < n:
                cell.shifts += 1
            cell.undo.append((self, i, (), 1))
            cell.dirty = True
            if type(value) not in SCALARS:
                cell.keys.append((self, i, cell.shifts))
        list.insert(self, index, value)

    def _removed(self, cell: Cell, index: int, n: int, value: Any) -> None:
        """``value`` was taken from ``index`` of the ``n`` items (a valid index)."""
        i = index + n if index < 0 else index
        if i != n - 1:
            cell.shifts += 1
        cell.undo.append((self, i, (value,), 0))
        cell.dirty = True

    def pop(self, index: SupportsIndex = -1) -> Any:
        n = list.__len__(self)
        value = list.pop(self, index)  # (raises before anything changed)
        cell = self._phx_cell
        if cell.live:
            self._removed(cell, operator.index(index), n, value)
        return value

    def remove(self, value: Any) -> None:
        del self[list.index(self, value)]

    def __delitem__(self, index: SupportsIndex | slice) -> None:
        cell = self._phx_cell
        n = list.__len__(self)
        if not cell.live:
            list.__delitem__(self, index)
        elif isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step != 1:
                self._whole(cell)
            elif stop > start:
                cell.undo.append((self, start, list.__getitem__(self, index), 0))
                cell.dirty = True
                cell.shifts += 1
            list.__delitem__(self, index)
            if step != 1:  # the copy's count is the length after the deletion
                *entry, _ = cell.undo.pop()
                cell.undo.append((*entry, list.__len__(self)))
        else:
            value = list.__getitem__(self, index)  # (raises before anything changed)
            list.__delitem__(self, index)
            self._removed(cell, operator.index(index), n, value)

    def __setitem__(self, index: SupportsIndex | slice, value: Any) -> None:
        cell = self._phx_cell
        if not cell.live:
            list.__setitem__(self, index, value)
            return
        n = list.__len__(self)
        if not isinstance(index, slice):
            old = list.__getitem__(self, index)  # (raises before anything changed)
            list.__setitem__(self, index, value)
            i = operator.index(index)
            i = i + n if i < 0 else i
            cell.undo.append((self, i, (old,), 1))
            cell.dirty = True
            if type(value) not in SCALARS:
                cell.keys.append((self, i, cell.shifts))
            return
        items = list(value)
        start, stop, step = index.indices(n)
        if step == 1:
            stop = max(stop, start)
            old_items = list.__getitem__(self, slice(start, stop))
            list.__setitem__(self, slice(start, stop), items)
            if len(items) != len(old_items):
                cell.shifts += 1
            cell.undo.append((self, start, old_items, len(items)))
            cell.dirty = True
            self._given(cell, start, items)
            return
        copied = list.__getitem__(self, slice(0, n))
        list.__setitem__(self, index, items)  # (an extended slice keeps the length)
        cell.undo.append((self, 0, copied, n))
        cell.dirty = True
        cell.shifts += 1
        for i, item in zip(range(start, stop, step), items, strict=False):
            if type(item) not in SCALARS:
                cell.keys.append((self, i, cell.shifts))

    def clear(self) -> None:
        cell = self._phx_cell
        if cell.live and list.__len__(self):
            cell.undo.append((self, 0, list.__getitem__(self, slice(None)), 0))
            cell.dirty = True
            cell.shifts += 1
        list.clear(self)

    def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        cell = self._phx_cell
        if cell.live:
            self._whole(cell)  # (before: a failed comparison leaves the list reordered)
        list.sort(self, key=key, reverse=reverse)

    def reverse(self) -> None:
        cell = self._phx_cell
        if cell.live:
            self._whole(cell)
        list.reverse(self)

    def __imul__(self, times: SupportsIndex) -> WatchedList:
        cell = self._phx_cell
        n = list.__len__(self)
        k = operator.index(times)
        if not cell.live or n == 0 or k == 1:
            pass
        elif k <= 0:
            self.clear()
            return self
        else:  # (the same objects again: adopt() finds them held twice)
            cell.undo.append((self, n, (), n * (k - 1)))
            cell.dirty = True
            self._given(cell, n, list.__getitem__(self, slice(0, n)) * (k - 1))
        list.__imul__(self, k)
        return self

    def __init__(self, values: Iterable[Any] = ()) -> None:  # (a second __init__)
        self.clear()
        self.extend(values)

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [copy.deepcopy(v, memo) for v in self]


def _refs(holder: Any, key: Any) -> int:
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


def adopt(holder: Any, key: Any, cell: Cell) -> bool:
    """Make ``holder[key]`` (``holder``: a dict, or a list and an index) trackable under
    ``cell``: a dict becomes a watched copy, its dicts too, and so does a list if the
    cell watches lists; ``False``: it cannot be, and its attribute is opaque."""
    t = type(holder[key])  # (no local holds the value: _refs counts the holders)
    if t in SCALARS:
        return True
    if t is WatchedDict or t is WatchedList:
        if holder[key]._phx_cell is cell:
            return True  # adopted before; what it was given since is in cell.keys
        is_dict = t is WatchedDict
    elif t is dict or (t is list and cell.lists):
        is_dict = t is dict
    else:
        return _immutable(holder[key])
    if is_dict is False and not cell.lists:
        return False
    if _refs(holder, key) > _HELD_ONCE:
        return False  # held elsewhere too: a copy would split it from the state
    value = holder[key]
    # Children first, while nobody else sees ``value``.
    for k in (list(value) if is_dict else range(len(value))):
        if not adopt(value, k, cell):
            return False
    watched: WatchedDict | WatchedList
    if is_dict:
        watched = dict.__new__(WatchedDict)
        dict.update(watched, value)
    else:
        watched = list.__new__(WatchedList)
        list.extend(watched, value)
    watched._phx_cell = cell
    if type(holder) is dict or isinstance(holder, dict):
        dict.__setitem__(holder, key, watched)
    else:
        list.__setitem__(holder, key, watched)
    return True
