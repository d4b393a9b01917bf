"""The undo journal of one tracked state attribute (``watched.py`` writes it).

A :class:`Cell` collects, for the watched dicts and lists of one state attribute, the
inverse of every change a message made, oldest first. Three shapes of entry:

- ``(dict, key, old)``: put ``old`` back at ``key`` (``MISSING``: remove the key);
- ``(dict, WHOLE, content)``: give the dict back ``content``, a copy taken before a key
  other than its last was deleted (a key put back goes to the end, and dict order is
  part of the state: the copy restores it);
- ``(list, start, old, count)``: the ``count`` items at ``start`` replace ``old`` (a
  sequence); every list change is one: an append is ``(n, (), 1)``, a pop ``(i, (v,),
  0)``, a sort or reverse ``(0, copy, n)``.

:func:`undo` replays entries backwards and returns the entries that would redo them, so
the committed content can be looked at in the middle of a message and the message's
changes put back (:meth:`~.tracking.StateTracker.state`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MISSING", "WHOLE", "Cell", "undo"]

MISSING: Any = object()
"""The old value of a dict key that was added."""

WHOLE: Any = object()
"""The key of a dict entry that restores the whole dict."""

Entry = tuple[Any, ...]


class Cell:
    """What the watched dicts and lists of one state attribute report to."""

    __slots__ = ("dirty", "keys", "lists", "live", "shifts", "undo")

    def __init__(self, lists: bool) -> None:
        self.lists = lists
        """Lists of the attribute are watched too (else they make it opaque)."""
        self.live = True
        self.dirty = False
        """Changed since the last commit."""
        self.undo: list[Entry] = []
        """The inverse of every change since the last commit, oldest first."""
        self.keys: list[tuple[Any, Any, int]] = []
        """``(container, key or index, shifts)`` where values that are not scalars were
        put (adopted at the commit)."""
        self.shifts = 0
        """Changes that moved list items to other indices (an index in ``keys`` taken
        before one may point elsewhere now: its list is scanned instead)."""

    def committed(self) -> None:
        """The changes are committed: forget them."""
        self.dirty = False
        self.undo = []
        self.keys = []
        self.shifts = 0

    def retire(self) -> None:
        self.live = False
        self.committed()


def undo(entries: list[Entry]) -> list[Entry]:
    """Replay ``entries`` backwards (their containers get their content from before the
    first), with the containers' own methods (nothing is journaled); returns the entries
    whose replay puts the changes back, in the same form."""
    redo: list[Entry] = []
    for entry in reversed(entries):
        container = entry[0]
        if type(container) is not dict and isinstance(container, list):
            _, start, old, count = entry
            stop = start + count
            redo.append((container, start, list.__getitem__(container, slice(start, stop)),
                         len(old)))
            list.__setitem__(container, slice(start, stop), old)
            continue
        _, key, old = entry
        if key is WHOLE:
            redo.append((container, WHOLE, dict(container)))
            dict.clear(container)
            dict.update(container, old)
            continue
        redo.append((container, key, dict.get(container, key, MISSING)))
        if old is MISSING:
            dict.pop(container, key, None)
        else:
            dict.__setitem__(container, key, old)
    return redo
