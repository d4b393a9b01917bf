"""Sending a ``store`` (registrations and tombstones) to another owner of a name.

A coordinator replicates its writes and an owner passes on what it resolved with
``store`` requests to the name's other owners. :meth:`StoreCalls.store_at` sends one and
waits for the reply in a task; :meth:`StoreCalls.start` queues it on the owner's open
connection and hands the reply to a callback from the connection's reader, with no task
(a batch of registrations, ``batching.py``). Either way an owner that did not take it
is ``None`` and a log line, never an error: the caller counts acknowledgements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..errors import PhoenixError
from .cluster import UNREACHABLE, ClusterLink
from .messages import StoreReply, decode

__all__ = ["StoreCalls"]

_log = logging.getLogger("phoenix_cluster.registry")


class StoreCalls:
    """``store`` requests from this node, each with a deadline of ``timeout_s``."""

    __slots__ = ("_link", "_timeout_s")

    def __init__(self, link: ClusterLink, timeout_s: float) -> None:
        self._link = link
        self._timeout_s = timeout_s

    async def store_at(self, node: str, payload: bytes) -> StoreReply | None:
        """Send a ``store`` to ``node``; ``None`` (logged) if it did not take it."""
        try:
            raw = await self._link.call(node, "registry", "store", payload, self._timeout_s)
        except PhoenixError as exc:
            return _stored(node, exc)
        return _stored(node, raw)

    def start(self, node: str, payload: bytes,
              answered: Callable[[StoreReply | None], None]) -> bool:
        """:meth:`store_at` with no task when ``node``'s connection is open: ``answered``
        gets the reply (or ``None``) from the connection's reader. ``False``: nothing
        was sent."""
        return self._link.start(node, "registry", "store", payload, self._timeout_s,
                                lambda result: answered(_stored(node, result)))


def _stored(node: str, result: bytes | BaseException) -> StoreReply | None:
    """A ``store``'s reply payload as its reply; ``None`` (logged) for an error."""
    if isinstance(result, bytes):
        try:
            return decode(StoreReply, result)
        except PhoenixError as exc:
            result = exc
    if isinstance(result, UNREACHABLE):
        _log.debug("store on %s failed: %s", node, result.message)
    elif isinstance(result, PhoenixError):
        _log.warning("store on %s refused: %s", node, result.message)
    else:
        _log.warning("store on %s failed: %r", node, result)
    return None
