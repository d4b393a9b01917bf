"""The runtime side of active-active agents (``consistency="crdt"``).

A crdt kind activates wherever the node's ring view routes it (its home, as any hash
kind), never claims or fences anything, and:

- **loads** by joining what it is handed (passivated state, a handoff record from a
  previous host) with this node's replica and the reachable replicas' (``load``);
- after each message that changed its state, **commits** the delta: joined into this
  node's replica and pushed to the key's other replicas; the reply waits until a
  majority of the replica set holds it, or, cut off from them, until it is stored here
  (``commit``; durability ``async`` replies at once, ``none`` keeps it here only);
- takes **incoming merges** (pushes, anti-entropy) into a live activation between
  messages, in mailbox order (``merged``).

The merge service itself is ``_replication/crdt_sync.py``; the rules are
``_replication/merging.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from .._replication.merging import (
    Fields,
    Schema,
    check_fields,
    decode_fields,
    delta_between,
    encode_fields,
    merge_into,
    schema_of,
)
from ..errors import ConfigError
from .agent import Agent, kind_hints
from .kinds import KindSpec, lookup_kind
from .mailbox import Activation, KindRuntime, Message

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["ActiveActive", "MERGE"]

MERGE = "<merge>"
"""Mailbox entry that joins an incoming change into a live activation."""

_log = logging.getLogger("phoenix_cluster.agents")


class ActiveActive:
    """Loads, commits and merges for the crdt kinds of one node's runtime."""

    def __init__(self, kinds: dict[str, KindRuntime],
                 start_drain: Callable[[Activation], None], cluster: Cluster) -> None:
        self._kinds = kinds
        self._start_drain = start_drain
        self._cluster = cluster
        self._schemas: dict[str, Schema] = {}
        self._encode = msgspec.msgpack.Encoder().encode
        self._raw = msgspec.msgpack.Decoder().decode

    # ----------------------------------------------------------------- state shape

    def fields(self, spec: KindSpec, agent: Agent) -> Fields:
        """The agent's snapshot as CRDT fields; learns the kind's schema on first use.

        Raises:
            ConfigError: a field is not a CRDT (logged).
        """
        try:
            fields = check_fields(spec.name, agent.snapshot())
        except ConfigError as exc:
            _log.error("%s", exc.message)
            raise
        if spec.name not in self._schemas:
            self._schemas[spec.name] = schema_of(fields, kind_hints(spec.cls))
        return fields

    def schema(self, kind: str) -> Schema:
        """Field types of ``kind`` (from a fresh instance the first time).

        Raises:
            AgentNotFound: unknown kind. ConfigError: not a crdt kind, or a field is not
                a CRDT.
        """
        schema = self._schemas.get(kind)
        if schema is not None:
            return schema
        spec = lookup_kind(kind)
        if spec.consistency != "crdt":
            raise ConfigError(f"agent kind {kind!r} is not consistency='crdt'",
                              key="consistency")
        agent: Agent = spec.cls.__new__(spec.cls)
        agent.__init__()  # type: ignore[misc]
        self.fields(spec, agent)
        return self._schemas[kind]

    def decode(self, spec: KindSpec, state: bytes) -> Fields:
        return decode_fields(state, self.schema(spec.name))

    def restore(self, agent: Agent, spec: KindSpec, state: bytes) -> None:
        """``agent.restore`` with typed CRDT fields (annotated at class level or not)."""
        agent.restore(self.decode(spec, state))

    # ----------------------------------------------------------------- activation

    async def load(self, spec: KindSpec, key: str, state: bytes | None) -> bytes | None:
        """The state to activate with: ``state`` (passivated here, or handed over) joined
        with this node's replica and what the reachable replicas hold."""
        sync = self._cluster.crdt_sync  # None on an embedded node: state stays here
        if sync is None or spec.durability == "none":
            return state
        try:
            self.schema(spec.name)
        except ConfigError:
            return state  # not a valid crdt kind: the activation reports it
        if state is not None:
            sync.merge_local(spec.name, key, self.decode(spec, state))
        fields = await sync.load(spec.name, key)
        if fields is None:
            return None
        for name, tp in self.schema(spec.name).items():
            if name not in fields:
                # No replica ever changed it: the empty value (restore() replaces every
                # public attribute, so a missing field would vanish).
                fields[name] = tp()
        return encode_fields(fields)

    # ----------------------------------------------------------------- commits

    async def commit(self, act: Activation, agent: Agent, committed: bytes) -> None:
        """Store and ship the change a message made (``committed`` is the state before).

        Raises:
            ConfigError: the handler left a field that is not a CRDT (logged).
        """
        spec = act.kind.spec
        fields = self.fields(spec, agent)
        sync = self._cluster.crdt_sync  # None on an embedded node: state stays here
        if sync is None or spec.durability == "none":
            return
        delta = delta_between(self.decode(spec, committed), fields)
        await sync.commit(spec.name, act.key, delta, wait=spec.durability == "quorum")

    # ----------------------------------------------------------------- incoming merges

    def merged(self, kind: str, key: str, fields: Fields) -> None:
        """``on_merged`` of the sync service: join into the live activation, if any,
        after the message it is running (mailbox order)."""
        kr = self._kinds.get(kind)
        act = kr.activations.get(key) if kr is not None else None
        if act is None:
            return  # passivated or never active here: the next activation loads it

        def apply() -> None:
            agent = act.agent
            if agent is None:
                return
            current = self.fields(act.kind.spec, agent)
            merge_into(current, fields)  # joins the live attributes in place
            if type(agent).snapshot is Agent.snapshot:
                for name, value in current.items():
                    if getattr(agent, name, None) is not value:
                        setattr(agent, name, value)  # a field this activation lacked
            else:
                agent.restore(current)
            act.committed = self._encode(agent.snapshot())

        msg = Message(MERGE, b"", None, 0.0, 0, apply)
        try:
            if act.put_nowait(msg, 1 << 62):
                self._start_drain(act)
        except Exception as exc:  # pragma: no cover - the mailbox refused an internal entry
            _log.warning("merge into %s/%s dropped (the replica has it): %r", kind, key, exc)
