"""Application versions of members, compared for rolling upgrades.

A member runs one application version (``--app-version``). During a rolling upgrade new
activations prefer the members of the newest version, and older members hand their agents
to them, as Akka's app-version rebalancing does (``docs/design/migration.md``, "Rolling
upgrades"). Versions compare part by part (split on ``.``, ``-``, ``+`` and ``_``), numeric
parts as numbers, so ``1.10`` is newer than ``1.9``; a text part ranks above a number.
The empty version ranks below every other.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import re

__all__ = ["version_key"]

_PARTS = re.compile(r"[.\-+_]")


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """A sort key for ``version``: compare keys to compare versions."""
    if not version:
        return ()
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in _PARTS.split(version))
