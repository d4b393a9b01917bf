"""The garbage collector settings of a ``phx node`` process, tuned for serving.

CPython starts a young-generation collection every 700 container allocations. A node
allocates a few dozen short-lived containers per message (futures, handles, tuples,
decoded arguments, replication items), almost all freed by reference counting, so the
default threshold runs a collection every few dozen messages, and every tenth one also
walks the middle generation. Profiles of a node under load (docs/design/performance.md)
put a quarter of its CPU there. ``phx node`` therefore, once serving:

- freezes what startup allocated (modules, classes, settings: never garbage) into the
  permanent generation, so full collections stop walking it;
- raises the young threshold to :data:`YOUNG_THRESHOLD` allocations and lets the older
  generations run half as often.

The cost is memory: reference cycles that became garbage wait longer for a collection
(at most :data:`YOUNG_THRESHOLD` container allocations, a few MB). A program embedding
``phx.Node`` keeps its own collector settings: a library does not change them.
"""

from __future__ import annotations

import gc

__all__ = ["OLDER_THRESHOLD", "YOUNG_THRESHOLD", "tune_for_serving"]

YOUNG_THRESHOLD = 50_000
"""Container allocations (minus frees) between two young-generation collections."""

OLDER_THRESHOLD = 20
"""Collections of one generation between two of the next (the default is 10)."""


def tune_for_serving() -> tuple[int, int, int]:
    """Freeze the objects alive now and raise the collection thresholds.

    Returns:
        The thresholds before (to restore them, e.g. in tests).
    """
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    return before
