"""The ``$registry`` node service: what a node answers when its peers call its registry.

:class:`RegistryService` serves an owner's reads and merges at once on the connection's
reader (``lookup``, ``lookup_many``, ``store``: :meth:`~RegistryService.handle_now`), takes
a ``register`` whose name nobody else is writing there too (answered later, once the
other owners decided it), and serves the rest in a task (a ``register`` of a name being
written, ``unregister`` as the name's coordinator, ``names``, and the notices
``invalidate`` and ``conflict``: :meth:`~RegistryService.handle`).
``lookup_many`` carries the lookups a caller batched in one turn (``turn_batching.py``);
each name gets its own answer. Malformed input is a
``ProtocolError`` for the caller and one rate-limited log line here. The caller's side
of the registry is :class:`~.registry.Registry`.
"""

from __future__ import annotations

import asyncio
import logging

from .._foundation.env import running_loop
from .._transport.tasks import LogLimiter
from ..errors import AgentNotFound, PhoenixError, ProtocolError
from .entries import Entry, check_name
from .holdings import Holdings
from .messages import (
    ConflictNotice,
    Invalidate,
    LookupManyReply,
    LookupManyRequest,
    LookupReply,
    LookupRequest,
    NamesReply,
    NamesRequest,
    RegisterReply,
    RegisterRequest,
    StoreRequest,
    UnregisterRequest,
    decode,
    encode,
)
from .owner import NameOwner
from .turn_batching import MAX_BATCH_BYTES

__all__ = ["RegistryService"]

_log = logging.getLogger("phoenix_cluster.registry")

_METHODS = "conflict, invalidate, lookup, lookup_many, names, register, store, unregister"


class RegistryService:
    """The ``$registry`` service of the node ``me``.

    Args:
        me: this node's name.
        owner: the names this node stores, and their coordination.
        holdings: the names this node holds (told when one loses a conflict).
        cache: the registry's cache of answers (``invalidate`` drops names from it).
        limiter: rate-limits the log lines about bad input.
    """

    def __init__(self, me: str, owner: NameOwner, holdings: Holdings,
                 cache: dict[str, Entry], limiter: LogLimiter) -> None:
        self._me = me
        self._owner = owner
        self._holdings = holdings
        self._cache = cache
        self._limiter = limiter

    def handle_now(self, method: str, payload: bytes) -> bytes | asyncio.Future[bytes] | None:
        """The ``$registry`` methods taken without a task, on the connection's reader:
        ``lookup``, ``lookup_many`` and ``store`` (an owner's reads and merges) answered at
        once, and a ``register`` whose name's lock is free (the reply, or a future of it
        resolved once the other owners decided). ``None`` for the rest, which
        :meth:`handle` serves.

        Raises:
            ProtocolError: malformed payload (logged).
            NameTaken, NoQuorum: a registration refused at once.
        """
        if method != "lookup" and method != "store" and method != "lookup_many" and (
                method != "register"):
            return None
        try:
            if method == "lookup":
                name = check_name(decode(LookupRequest, payload).name)
                return encode(LookupReply(self._owner.live(name)))
            if method == "lookup_many":
                return encode(self._lookup_many(decode(LookupManyRequest, payload).names))
            if method == "register":
                return self._register_now(decode(RegisterRequest, payload))
            return encode(self._owner.on_store(decode(StoreRequest, payload)))
        except (TypeError, ValueError) as exc:  # a bad name inside a well-formed payload
            raise self._bad_input(method, exc) from None
        except PhoenixError as exc:
            self._log_bad_input(method, exc)
            raise

    def _register_now(self, req: RegisterRequest) -> bytes | asyncio.Future[bytes] | None:
        now = self._owner.register_now(req)
        if now is None or isinstance(now, RegisterReply):
            return None if now is None else encode(now)
        encoded: asyncio.Future[bytes] = running_loop().create_future()

        def done(reply: asyncio.Future[RegisterReply]) -> None:
            if encoded.done():
                return
            if reply.cancelled():
                encoded.cancel()
            elif (exc := reply.exception()) is not None:
                encoded.set_exception(exc)
            else:
                encoded.set_result(encode(reply.result()))

        now.add_done_callback(done)
        return encoded

    async def handle(self, method: str, payload: bytes) -> bytes:
        """The ``$registry`` node service.

        Raises:
            AgentNotFound: unknown method.
            ProtocolError: malformed payload (logged).
            NameTaken, NoQuorum: the write was refused.
        """
        now = self.handle_now(method, payload)
        if now is not None:
            return now if isinstance(now, bytes) else await now
        owner = self._owner
        try:
            if method == "register":
                return encode(await owner.register(decode(RegisterRequest, payload)))
            if method == "unregister":
                return encode(await owner.unregister(decode(UnregisterRequest, payload)))
            if method == "names":
                return encode(NamesReply(owner.live_names(decode(NamesRequest, payload).prefix)))
            if method == "invalidate":
                for name in decode(Invalidate, payload).names:
                    self._cache.pop(name, None)
                return b""
            if method == "conflict":
                notice = decode(ConflictNotice, payload)
                self._holdings.lost(notice.loser.name, notice.loser.rid, notice.winner)
                return b""
        except (TypeError, ValueError) as exc:  # a bad name inside a well-formed payload
            raise self._bad_input(method, exc) from None
        except PhoenixError as exc:
            self._log_bad_input(method, exc)
            raise
        raise AgentNotFound(f"node {self._me} has no registry method {method!r} (methods: "
                            f"{_METHODS})")

    def _lookup_many(self, names: list[str]) -> LookupManyReply:
        """One entry per name, in order, cut short once the reply reaches about
        ``MAX_BATCH_BYTES`` (the caller asks for the rest one by one)."""
        live = self._owner.live
        entries: list[Entry | None] = []
        size = 0
        for name in names:
            entry = live(check_name(name))
            if entry is not None:
                size += len(entry.name) + len(entry.key) + len(entry.value)
                if size > MAX_BATCH_BYTES and entries:
                    break
            entries.append(entry)
        return LookupManyReply(entries)

    def _bad_input(self, method: str, exc: Exception) -> ProtocolError:
        self._limiter.warning(_log, "registry-bad-input", "$registry.%s: %s", method, exc)
        return ProtocolError(f"$registry.{method}: {exc}")

    def _log_bad_input(self, method: str, exc: PhoenixError) -> None:
        if exc.code == ProtocolError.code:
            self._limiter.warning(_log, "registry-bad-input", "$registry.%s: %s",
                                  method, exc.message)
