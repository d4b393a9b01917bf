"""Kinds with ``store=``: their loads and commits against a state store.

The store route of ``state.py``: a kind that names a store commits there instead of to
its replicas (docs/design/replication.md, State stores). Each commit is conditional on
the row version this node last read or wrote for the agent, so when two activations of
one agent exist (a partition, a handoff in doubt) only one of them commits; the other's
message fails with ``WriteConflict`` and that activation stops, to be activated again
from the store's newest state.

Plain kinds store a :class:`~.._replication.types.Record` (state and reply window) per
agent. Event-sourced kinds (``events.py``) append the events a message persisted, and
every ``snapshot_every`` events also the state as a snapshot; loading one replays the
events after its newest snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from .._replication.types import Record
from .._stores.base import StateStore
from .._stores.urls import open_store
from ..errors import AgentError, ConfigError, StoreUnavailable
from .agent import Agent
from .kinds import KindSpec
from .versions import upgrade

__all__ = ["StoredKinds"]

_log = logging.getLogger("phoenix_cluster.agents")

_record_decoder = msgspec.msgpack.Decoder(Record)
_encode = msgspec.msgpack.encode


class StoredKinds:
    """This node's state stores and the versions its activations read from them."""

    __slots__ = ("_decode", "_pending", "_stores", "_versions")

    def __init__(self, decode: Callable[[bytes], Any]) -> None:
        self._decode = decode
        self._stores: dict[str, StateStore] = {}
        self._versions: dict[tuple[str, str], int] = {}
        """(kind, key) -> the version this node's activation last read or wrote (what its
        next write expects); only for agents active here (``forget``)."""
        self._pending: dict[tuple[str, str], list[bytes]] = {}
        """(kind, key) -> encoded events persisted by the running message, not committed."""

    def configure(self, stores: Mapping[str, str | StateStore]) -> None:
        """Open (lazily: they connect on first use) the stores ``stores`` names.

        Raises:
            ConfigError: a URL Phoenix cannot open, or a value that is neither a URL
                nor a :class:`StateStore`.
        """
        for name, target in stores.items():
            if isinstance(target, str):
                self._stores[name] = open_store(name, target)
            elif isinstance(target, StateStore):
                self._stores[name] = target
            else:
                raise ConfigError(f"bad setting stores: store {name!r} must be a URL or a "
                                  f"StateStore, got {type(target).__name__}", key="stores")

    def store(self, spec: KindSpec) -> StateStore:
        """The store of ``spec``'s kind on this node.

        Raises:
            ConfigError: this node maps no store of that name.
        """
        assert spec.store is not None
        found = self._stores.get(spec.store)
        if found is None:
            known = ", ".join(sorted(self._stores)) or "none"
            raise ConfigError(
                f"agent kind {spec.name!r} uses store {spec.store!r}, which this node does "
                f"not map (its stores: {known}); start it with --store {spec.store}=URL",
                key="stores")
        return found

    # ----------------------------------------------------------------- loads

    async def load(self, spec: KindSpec, key: str) -> Record | None:
        """The agent's newest committed record in its store, at the kind's current
        state version (``None``: nothing stored).

        Raises:
            StoreUnavailable, StateVersionError, ConfigError.
        """
        store = self.store(spec)
        k = (spec.name, key)
        self._pending.pop(k, None)
        if spec.snapshot_every:
            return await self._replay(spec, key, store)
        row = await store.read(spec.name, key)
        if row is None:
            self._versions[k] = 0
            return None
        record = _record_decoder.decode(row.data)
        state = upgrade(spec, key, row.state_version, record.state, self._decode)
        self._versions[k] = row.version
        return record if state is record.state else Record(state, record.replies)

    async def _replay(self, spec: KindSpec, key: str, store: StateStore) -> Record | None:
        """An event-sourced agent's state: its newest snapshot, then every later event
        applied to it (``apply`` runs on a scratch instance, before the activation's)."""
        stored = await store.read_events(spec.name, key)
        self._versions[(spec.name, key)] = stored.version
        if stored.snapshot is None and not stored.events:
            return None
        decode_event: Callable[[bytes], Any] = spec.cls._phx_event_decoder
        snapshot = None
        if stored.snapshot is not None:
            snap = stored.snapshot
            snapshot = self._decode(upgrade(spec, key, snap.state_version, snap.data,
                                            self._decode))
        try:
            agent: Agent = spec.cls.__new__(spec.cls)
            agent.__init__()  # type: ignore[misc]
            if snapshot is not None:
                agent.restore(snapshot)
            for event in stored.events:
                agent.apply(decode_event(event))  # type: ignore[attr-defined]
        except Exception as exc:
            raise AgentError.from_exception(exc, f"replay of {spec.name}/{key}") from exc
        agent.__dict__["_phx_seq"] = stored.version
        return Record(_encode(agent.snapshot()))

    # ----------------------------------------------------------------- commits

    async def commit(self, spec: KindSpec, key: str, record: Record) -> None:
        """Write ``record`` if the store still holds the version this node read.

        Raises:
            WriteConflict: another activation committed first; nothing was written.
            StoreUnavailable: ``definite`` says whether anything may have been written.
        """
        store = self.store(spec)
        k = (spec.name, key)
        expected = self._versions.get(k, 0)
        if spec.snapshot_every:
            await self._append(spec, key, store, record, expected)
            return
        try:
            self._versions[k] = await store.write(
                spec.name, key, _encode(record), state_version=spec.state_version,
                expected=expected)
        except StoreUnavailable as exc:
            if not exc.definite:
                self._versions.pop(k, None)  # unknown: the next activation reads it again
            raise
        except Exception:
            self._versions.pop(k, None)
            raise

    async def _append(self, spec: KindSpec, key: str, store: StateStore, record: Record,
                      expected: int) -> None:
        k = (spec.name, key)
        events = self._pending.pop(k, [])
        if not events:
            raise ConfigError(
                f"event-sourced agent {spec.name}/{key} changed its state without "
                "persist(): its state must change only in apply(), through persist(event)",
                key="persist")
        last = expected + len(events)
        every = spec.snapshot_every
        snapshot = record.state if last // every > expected // every else None
        try:
            self._versions[k] = await store.append(
                spec.name, key, events, expected=expected, snapshot=snapshot,
                state_version=spec.state_version)
        except Exception:
            self._versions.pop(k, None)
            raise

    # ----------------------------------------------------------------- events

    def persisted(self, spec: KindSpec, key: str, event: bytes) -> None:
        """An event-sourced agent persisted ``event`` in the running message."""
        self._pending.setdefault((spec.name, key), []).append(event)

    def forget(self, spec: KindSpec, key: str) -> None:
        """The agent left this node's memory (passivated, moved, stopped): what it read
        is of no use to its next activation, which reads the store again."""
        k = (spec.name, key)
        self._versions.pop(k, None)
        self._pending.pop(k, None)

    def discard(self, spec: KindSpec, key: str) -> None:
        """The running message failed: its persisted events are dropped with it."""
        self._pending.pop((spec.name, key), None)

    async def aclose(self) -> None:
        """Close every store (at node shutdown, after the agents stopped)."""
        for name, store in self._stores.items():
            try:
                await store.aclose()
            except Exception as exc:  # pragma: no cover - a user store's close broke
                _log.warning("closing state store %s failed: %r", name, exc)
        self._stores.clear()
