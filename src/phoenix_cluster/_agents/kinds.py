"""The static description of an agent kind and the process-wide registry of kinds.

A kind's class (an ``Agent`` subclass, ``agent.py``) is described once, when it is
defined: :class:`KindSpec` holds its options (checked in ``kind_options.py``) and a
:class:`MethodSpec` per message, and the registry maps kind names to them, so a node
that imports a kind's module can host it. This module never sees the ``Agent`` class
itself (the base is passed in), so ``agent.py`` builds on it without an import cycle.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import msgspec

from .._placement.policies import Policy
from ..errors import AgentNotFound, ConfigError
from .arguments import DECODED_EXACTLY, exact_signature, parameter_checks, value_check
from .kind_options import Consistency, Durability

__all__ = ["REMINDER_METHOD", "KindSpec", "MethodSpec", "find_kind", "hosted_kinds",
           "kind_spec", "lookup_kind", "reentrant", "register_kind", "type_hints"]

# Types that msgpack decodes to exactly, so their arguments need no conversion.
_NATIVE: tuple[object, ...] = (int, str, bool, bytes, float, Any, object, type(None), None)

_KINDS: dict[str, KindSpec] = {}

# AgentRef's own attributes: a message with one of these names could not be sent.
_REF_ATTRIBUTES = frozenset({"kind", "options"})

_untyped_decoder = msgspec.msgpack.Decoder()

_F = typing.TypeVar("_F", bound=Callable[..., Any])


def reentrant(method: _F) -> _F:
    """Mark an agent method reentrant: while it awaits (a call to another agent, a
    sleep), its agent may handle other messages, among them calls back into it from the
    agent it waits for. Without it such a call back fails at once with
    ``phx.CallCycle``. ``reentrant=True`` on the class marks every method.

    A reentrant handler starts in mailbox order and runs until its first ``await``;
    then the next messages run while it waits, and it may finish after them. Each
    message that succeeds commits the agent's whole state, including changes a waiting
    handler made before its ``await``, and a message that fails rolls the agent back to
    the last commit, which undoes uncommitted changes of waiting handlers too: change
    the state after the ``await`` where that matters (docs/reminders.md, "Reentrancy").
    """
    method._phx_reentrant = True  # type: ignore[attr-defined]
    return method

REMINDER_METHOD = "<reminder>"
"""The message a reminder tick arrives as (``Agent.on_reminder``); not a Python name, so
no method of a kind can take it, and a reference has no attribute for it."""


class MethodSpec:
    """A message an agent kind accepts: the handler and how to check what it carries.

    ``checks`` and ``result_check`` (``arguments.py``) check every annotated parameter
    and the return annotation with msgspec; they are built once per method.
    """

    __slots__ = ("checks", "conversions", "exact_signature", "fn", "is_async", "name",
                 "parameters", "reentrant", "result_check", "result_decoder")

    def __init__(self, name: str, fn: Callable[..., Any], *, hint_names: Mapping[str, Any],
                 reentrant: bool = False) -> None:
        self.name = name
        self.fn = fn
        self.reentrant = reentrant or bool(getattr(fn, "_phx_reentrant", False))
        """Other messages may run while this handler awaits (``@phx.reentrant``)."""
        self.is_async = inspect.iscoroutinefunction(fn)
        hints = type_hints(fn, hint_names)
        self.parameters, self.checks = parameter_checks(fn, hints)
        # The caller checks every annotated argument; the agent converts only what msgpack
        # does not decode to exactly (a Struct arrives as a dict, an int for a float).
        self.conversions = tuple(c for c in self.checks if c.exact not in DECODED_EXACTLY)
        self.exact_signature = exact_signature(self.parameters, self.checks)
        result = hints.get("return", Any)
        self.result_check = value_check("return value", 0, result)
        self.result_decoder: msgspec.msgpack.Decoder[Any] = (
            _untyped_decoder if result in _NATIVE else msgspec.msgpack.Decoder(result)
        )

    def __repr__(self) -> str:
        return f"<MethodSpec {self.name}>"


def type_hints(obj: Any, names: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved annotations of ``obj`` (a kind's class or method), ``{}`` if some
    cannot be resolved.

    ``names`` are the names the base class's own annotations use: its public module
    (``phoenix_cluster``, its ``__module__``) does not define them, among them a class
    imported for type checking only, so without them no kind's hints would resolve.
    """
    try:
        return typing.get_type_hints(obj, localns=dict(names))
    except Exception:
        # Annotations naming a class local to a function cannot be resolved; such
        # values travel as plain msgpack types.
        return {}


class KindSpec:
    """Everything the runtime needs to know about an agent kind. Immutable once built.

    ``base`` is the framework's base class (``Agent``): its public names are not
    messages, and a hook the kind does not override is not called. ``hint_names``
    resolve the base class's annotations (:func:`type_hints`).
    """

    __slots__ = (
        "cls",
        "commits_replies",
        "consistency",
        "durability",
        "fences_reads",
        "foreign",
        "has_on_activate",
        "has_on_deactivate",
        "has_upgrade",
        "hashed",
        "idle_timeout_s",
        "mailbox_limit",
        "max_workers",
        "methods",
        "name",
        "placement",
        "reentrant",
        "reentrant_methods",
        "replicas",
        "snapshot_every",
        "state_types",
        "state_version",
        "stateless",
        "store",
    )

    def __init__(
        self,
        cls: type[Any],
        name: str,
        *,
        base: type[Any],
        hint_names: Mapping[str, Any],
        durability: Durability,
        idle_timeout_s: float | None,
        placement: Policy,
        replicas: int,
        mailbox_limit: int | None,
        consistency: Consistency = "fenced",
        max_workers: int = 0,
        store: str | None = None,
        state_version: int = 1,
        reentrant: bool = False,
    ) -> None:
        self.cls: Any = cls
        """The kind's ``Agent`` subclass (typed ``Any``: this module sits below
        ``agent.py`` and never names the base class)."""
        self.reentrant = reentrant
        """Every method of the kind is reentrant (``reentrant=True``)."""
        self.store = store
        """The name of the state store this kind commits to (``None``: its replicas)."""
        self.state_version = state_version
        """The version of the state this kind's code writes (``versions.py``)."""
        self.snapshot_every: int = cls.__dict__.get("_phx_snapshot_every", 0)
        """Event-sourced kinds (``events.py``): a snapshot every this many events;
        ``0``: the kind stores its state, not events."""
        self.foreign = False
        """``True`` for the stand-in of a kind whose code this node lacks
        (:func:`foreign_kind`): it routes and directs such agents, never runs them."""
        self.consistency = consistency
        """``"fenced"`` (one leader, quorum commits) or ``"crdt"`` (active-active, merged)."""
        self.name = name
        self.durability = durability
        self.commits_replies = durability != "none" and consistency != "crdt"
        """Its state changes are committed with the agent's reply window (``dedup.py``):
        a call fenced mid-commit may be sent again with its request id, even locally."""
        self.fences_reads = durability == "quorum" and consistency == "fenced" and store is None
        """A call that changes nothing is answered only under the leader's read lease
        (``_replication/leases.py``): never from a deposed leader's memory."""
        self.idle_timeout_s = idle_timeout_s
        self.placement = placement
        self.hashed = placement == "hash"
        """``True`` for hash placement: the agent lives at its home, no directory entry."""
        self.replicas = replicas
        self.mailbox_limit = mailbox_limit
        self.max_workers = max_workers
        """Activations of one key on one node (``placement="stateless"``; 0 otherwise)."""
        self.stateless = max_workers > 0
        """``placement="stateless"``: served on any member by up to ``max_workers``
        activations per key per node; no state is replicated (``workers.py``)."""
        self.methods: dict[str, MethodSpec] = {}
        # The base's public names, and framework methods of a base class below it
        # (EventSourcedAgent's persist).
        reserved = frozenset(n for n in dir(base) if not n.startswith("_")) | frozenset(
            getattr(cls, "_phx_reserved", frozenset()))
        for attr in dir(cls):
            if attr.startswith("_") or attr in reserved:
                continue
            fn = inspect.getattr_static(cls, attr)
            if isinstance(fn, (staticmethod, classmethod, property)) or not callable(fn):
                continue
            if attr in _REF_ATTRIBUTES:
                raise ConfigError(
                    f"agent kind {name!r}: a message cannot be named {attr!r}, "
                    f"references use that name ({', '.join(sorted(_REF_ATTRIBUTES))})",
                    key=attr,
                )
            self.methods[attr] = MethodSpec(attr, fn, hint_names=hint_names,
                                             reentrant=reentrant)
        if cls.on_reminder is not base.on_reminder:
            self.methods[REMINDER_METHOD] = MethodSpec(
                REMINDER_METHOD, cls.on_reminder, hint_names=hint_names, reentrant=reentrant)
        self.reentrant_methods = any(m.reentrant for m in self.methods.values())
        """Some method is reentrant: the drain looks for them (``runtime.py``)."""
        self.has_on_activate = cls.on_activate is not base.on_activate
        self.has_on_deactivate = cls.on_deactivate is not base.on_deactivate
        self.has_upgrade = "upgrade_state" in {k for c in cls.__mro__[:-1]
                                               if c is not base for k in vars(c)}
        hints = type_hints(cls, hint_names)
        self.state_types: dict[str, Any] = {
            k: v
            for k, v in hints.items()
            if not k.startswith("_") and v not in _NATIVE and typing.get_origin(v) is not ClassVar
        }

    def __repr__(self) -> str:
        return f"<KindSpec {self.name} [{len(self.methods)} methods, {self.durability}]>"


def register_kind(spec: KindSpec) -> None:
    """Register ``spec`` under its name; a later definition under the same name wins, as
    a re-imported module would."""
    _KINDS[spec.name] = spec


def kind_spec(kind: type[Any] | str) -> KindSpec:
    """The spec of an agent class or kind name.

    Raises:
        AgentNotFound: no kind of that name has been defined in this process.
    """
    if isinstance(kind, str):
        return lookup_kind(kind)
    spec = kind.__dict__.get("_phx_spec") if isinstance(kind, type) else None
    if not isinstance(spec, KindSpec):
        raise TypeError(f"expected an Agent subclass or a kind name, got {kind!r}")
    return spec


def lookup_kind(name: str) -> KindSpec:
    """The spec registered under ``name``.

    Raises:
        AgentNotFound: unknown kind (was its module imported on this node?).
    """
    spec = _KINDS.get(name)
    if spec is None:
        raise AgentNotFound(f"unknown agent kind {name!r} (is its module imported on this node?)")
    return spec


def find_kind(name: str) -> KindSpec | None:
    """The spec registered under ``name``, or ``None``."""
    return _KINDS.get(name)


def hosted_kinds() -> tuple[str, ...]:
    """The names of every kind defined in this process, sorted (what a member hosts)."""
    return tuple(sorted(_KINDS))
