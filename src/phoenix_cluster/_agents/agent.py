"""The ``Agent`` base class and the process-wide registry of agent kinds.

A kind is a subclass of :class:`Agent`. Defining the class registers it under its kind
name (``module.QualName`` unless ``kind=`` says otherwise), so a node that imports the
module can host it. Class keywords set per-kind options; the class body's public methods
are its messages and its public attributes are its state.

This module builds the static description of a kind (:class:`KindSpec`) from its class
keywords, checked in ``kind_options.py``; running agents is the runtime's job
(``runtime.py``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import msgspec

from .._placement.policies import Policy
from ..errors import AgentNotFound, ConfigError
from .agent_timer import AgentTimer
from .arguments import DECODED_EXACTLY, exact_signature, parameter_checks, value_check
from .kind_options import Consistency, Durability, check_kind_options

if TYPE_CHECKING:
    from .._foundation.env import Clock

__all__ = ["REMINDER_METHOD", "Agent", "Consistency", "Durability", "KindSpec", "MethodSpec",
           "find_kind", "foreign_kind", "hosted_kinds", "kind_spec", "lookup_kind",
           "reentrant"]

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

    def __init__(self, name: str, fn: Callable[..., Any], *, reentrant: bool = False) -> None:
        self.name = name
        self.fn = fn
        self.reentrant = reentrant or bool(getattr(fn, "_phx_reentrant", False))
        """Other messages may run while this handler awaits (``@phx.reentrant``)."""
        self.is_async = inspect.iscoroutinefunction(fn)
        hints = _type_hints(fn)
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


def _type_hints(obj: Any) -> dict[str, Any]:
    # The base class's own annotations name things that its public module
    # (``phoenix_cluster``, its ``__module__``) does not define, among them a class
    # imported for type checking only: supply them, or no kind's hints would resolve.
    names = {"Seat": Seat, "AgentTimer": AgentTimer, "ClassVar": ClassVar,
             "KindSpec": KindSpec}
    try:
        return typing.get_type_hints(obj, localns=names)
    except Exception:
        # Annotations naming a class local to a function cannot be resolved; such
        # values travel as plain msgpack types.
        return {}


class KindSpec:
    """Everything the runtime needs to know about an agent kind. Immutable once built."""

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
        cls: type[Agent],
        name: str,
        *,
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
        self.cls = cls
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
        # Framework methods of a base class below Agent (EventSourcedAgent's persist).
        reserved: frozenset[str] = getattr(cls, "_phx_reserved", frozenset())
        for attr in dir(cls):
            if attr.startswith("_") or attr in _RESERVED or attr in reserved:
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
            self.methods[attr] = MethodSpec(attr, fn, reentrant=reentrant)
        if cls.on_reminder is not Agent.on_reminder:
            self.methods[REMINDER_METHOD] = MethodSpec(REMINDER_METHOD, cls.on_reminder,
                                                       reentrant=reentrant)
        self.reentrant_methods = any(m.reentrant for m in self.methods.values())
        """Some method is reentrant: the drain looks for them (``runtime.py``)."""
        self.has_on_activate = cls.on_activate is not Agent.on_activate
        self.has_on_deactivate = cls.on_deactivate is not Agent.on_deactivate
        self.has_upgrade = "upgrade_state" in {k for c in cls.__mro__[:-1]
                                               if c is not Agent for k in vars(c)}
        hints = _type_hints(cls)
        self.state_types: dict[str, Any] = {
            k: v
            for k, v in hints.items()
            if not k.startswith("_") and v not in _NATIVE and typing.get_origin(v) is not ClassVar
        }

    def __repr__(self) -> str:
        return f"<KindSpec {self.name} [{len(self.methods)} methods, {self.durability}]>"


class SeatHost(Protocol):
    """The node's agent runtime as an agent sees it (``runtime.py``; the runtime's side
    is ``mailbox.AgentHost``)."""

    @property
    def node(self) -> Any: ...

    @property
    def clock(self) -> Clock: ...

    def deliver_reminder(self, kind: str, key: str, name: str, tick: int,
                         until: float) -> None: ...


class Seat(Protocol):
    """An agent's activation as the agent sees it (``mailbox.Activation``): its key and
    kind, the runtime, and the runtime's services run for this agent. A protocol, so
    that this module never imports the mailbox that holds agents."""

    @property
    def key(self) -> str: ...

    @property
    def spec(self) -> KindSpec: ...

    @property
    def runtime(self) -> SeatHost: ...

    def start_timer(self, delay_s: float, callback: Callable[..., Any],
                    args: tuple[Any, ...], repeat: bool) -> AgentTimer: ...

    async def remind(self, name: str, every_s: float, first_s: float | None) -> None: ...

    async def cancel_reminder(self, name: str) -> bool: ...


class Agent:
    """Base class of agent kinds.

    Subclass it; public attributes set in ``__init__`` (which takes no arguments) are the
    agent's state, public methods (``async def`` or plain ``def``) are its messages::

        class Counter(phx.Agent, kind="counter", idle_timeout=60):
            def __init__(self) -> None:
                self.count = 0

            async def increment(self, by: int = 1) -> int:
                self.count += by
                return self.count

    Class keywords (all optional):
        kind: the kind's name on the wire; default ``module.QualName``. Name it explicitly
            if the class may move between modules.
        durability: ``"quorum"`` (default), ``"async"`` or ``"none"``: how state changes
            are replicated (state replication arrives with the replication layer; today
            every kind keeps its state in the hosting node's memory).
        idle_timeout: seconds without messages before the agent is passivated; its state
            is kept and it reactivates on the next message. Default: the node's
            ``idle_timeout_s``.
        placement: ``"hash"`` (default: the key's home on the ring), ``"local"`` (the
            node of the first caller), ``"least_loaded"``, ``"scored"`` or
            ``phx.Scored(resources=, affinity=, latency=, load=)`` (weighted node score).
            See ``docs/distributed-agents.md``. ``"stateless"``: a stateless worker,
            served on the caller's node (a client's calls go to some member) by up to
            ``max_workers`` activations per key at once; its state is per activation
            and volatile, never replicated (``docs/stateless-workers.md``).
        max_workers: with ``placement="stateless"``: activations of one key per node
            (default 4).
        replicas: copies of the replicated state in the cluster, 1 to 5 (default 3;
            anything else is a ``ConfigError``), capped by the number of members. A
            write is acknowledged once a majority (``replicas // 2 + 1``) stored it,
            so a kind survives the loss of ``(replicas - 1) // 2`` of its replicas at
            once, and more one after another as copies are rebuilt. ``replicas=1``
            keeps no copy beyond the owner: its state is lost with that node unless the
            node has a ``data_dir``. crdt kinds have 3; stateless and ``store=`` kinds
            do not replicate. See docs/distributed-agents.md.
        mailbox_limit: messages waiting before new ones wait for room (up to their
            timeout, then ``phx.Overloaded``). Default: the node's ``mailbox_limit``.
        reentrant: ``True``: every method is reentrant (``phx.reentrant``): while a
            handler awaits, the agent may handle other messages. Default ``False``:
            one message at a time, and a call back into a waiting agent fails at once
            with ``phx.CallCycle``.
        consistency: ``"fenced"`` (default: one leader per partition, state changes
            committed to a quorum, fenced by epochs) or ``"crdt"`` (active-active: every
            state field is a ``phx.crdt`` type, mutated with ``replica=self.replica``;
            replicas on both sides of a partition accept updates and merge after it
            heals). A crdt kind needs ``placement="hash"``. See docs/crdt.md.
        store: the name of a state store (``phx node --store NAME=URL``,
            ``Node(stores={NAME: URL})``) the kind commits its state to instead of its
            replicas: SQLite or PostgreSQL, so the state survives a restart of the whole
            cluster. Writes are conditional on the version read, so two activations of
            one agent never both commit. See docs/state-stores.md.
        state_version: the version of the state this code writes (default 1). Raise it
            when the state's shape changes and define :meth:`upgrade_state`, so state
            written by the previous release is read by the new one.

    State must serialize to msgpack (None, bool, int, float, str, bytes, list, dict,
    msgspec Structs). Annotate attributes at class level (``items: list[Item]``) to get
    typed values back after a rollback or reactivation; override :meth:`snapshot` and
    :meth:`restore` for anything else. Once the state is past 4 KiB encoded, a message
    costs what it changed (``tracking.py``): its dicts become ``dict`` subclasses that
    journal their changes (``type(d) is dict`` no longer holds), and lists, sets and
    mutable Structs are encoded after every message.
    """

    __slots__ = ("_phx_act",)
    _phx_act: Seat

    _phx_spec: ClassVar[KindSpec]

    def __init_subclass__(
        cls,
        *,
        kind: str | None = None,
        durability: Durability | None = None,
        idle_timeout: float | None = None,
        placement: Policy | Literal["stateless"] = "hash",
        replicas: int = 3,
        mailbox_limit: int | None = None,
        consistency: Consistency = "fenced",
        max_workers: int | None = None,
        store: str | None = None,
        state_version: int = 1,
        reentrant: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        name = kind if kind is not None else f"{cls.__module__}.{cls.__qualname__}"
        where = f"agent kind {name!r}"
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: kind must be a non-empty string", key="kind")
        options = check_kind_options(
            where, durability=durability, idle_timeout=idle_timeout, placement=placement,
            replicas=replicas, mailbox_limit=mailbox_limit, consistency=consistency,
            max_workers=max_workers, store=store, state_version=state_version,
            reentrant=reentrant)
        spec = KindSpec(
            cls,
            name,
            durability=options.durability,
            idle_timeout_s=options.idle_timeout,
            placement=options.policy,
            replicas=options.replicas,
            mailbox_limit=options.mailbox_limit,
            consistency=options.consistency,
            max_workers=options.workers,
            store=options.store,
            state_version=options.state_version,
            reentrant=options.reentrant,
        )
        cls._phx_spec = spec
        # A later definition under the same name wins, as a re-imported module would.
        _KINDS[name] = spec

    @property
    def key(self) -> str:
        """This agent's key (read-only; not part of the state)."""
        act = self._phx_act
        if act.spec.stateless:
            return worker_of(act.key)
        return act.key

    @property
    def node(self) -> Any:
        """The node hosting this activation (read-only; not part of the state)."""
        return self._phx_act.runtime.node

    @property
    def replica(self) -> str:
        """This activation's replica id for CRDT mutators (read-only; not state).

        ``"<node name>@<node incarnation>"``: the same for every agent of one node
        process, different after a restart (a node restarted without its memory must
        not mint dots it minted before), so two replicas never share an id. Pass it as
        ``replica=`` to the mutators of a ``consistency="crdt"`` kind's fields.
        """
        node = self._phx_act.runtime.node
        return f"{node.name}@{node.incarnation}"

    async def on_activate(self) -> None:
        """Called after the agent is created or restored, before its first message."""

    async def on_deactivate(self) -> None:
        """Called before the agent is passivated or its node stops. State changes made
        here are kept."""

    def snapshot(self) -> Any:
        """The agent's state as msgpack-serializable data. Default: public attributes."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def restore(self, state: Any) -> None:
        """Replace the agent's state with ``state`` (a decoded :meth:`snapshot`)."""
        types = type(self)._phx_spec.state_types
        attrs = self.__dict__
        for name in [k for k in attrs if not k.startswith("_")]:
            del attrs[name]
        for name, value in state.items():
            tp = types.get(name)
            attrs[name] = value if tp is None else msgspec.convert(value, tp)

    @classmethod
    def upgrade_state(cls, old_version: int, state: Any) -> Any:
        """Turn ``state`` (a decoded :meth:`snapshot` written when the kind's
        ``state_version`` was ``old_version``) into the current version's state.

        Define it once ``state_version`` is above 1; it must handle every older version
        still stored (step through them in order). Without it, an agent whose stored
        state is older than the code fails to activate with ``StateVersionError``.
        """
        raise NotImplementedError  # never called: has_upgrade is False without an override

    def set_timer(
        self,
        delay_s: float,
        callback: Callable[..., Awaitable[Any] | Any],
        *args: Any,
        repeat: bool = False,
    ) -> AgentTimer:
        """Run ``callback(*args)`` as a message of this agent after ``delay_s`` seconds.

        The callback runs one message at a time with the others, and a failure rolls
        the state back like any handler's. With ``repeat=True`` it runs every
        ``delay_s`` seconds. Timers die with the activation: passivation cancels them,
        and timer ticks do not keep an idle agent active.

        Returns:
            A handle whose ``cancel()`` stops the timer.
        """
        return self._phx_act.start_timer(delay_s, callback, args, repeat)

    async def remind(self, name: str, *, every: float, first: float | None = None) -> None:
        """Register (or replace) the durable reminder ``name`` of this agent: its
        :meth:`on_reminder` runs ``first`` seconds from now (default ``every``), then
        every ``every`` seconds, until :meth:`cancel_reminder`.

        Unlike a timer, a reminder is stored with the cluster (committed to a quorum of
        replicas before this returns), outlives the activation (a passivated agent is
        activated for its tick) and keeps firing after its node fails. Delivery is at
        least once: handlers de-duplicate by the tick number. Registration is not part
        of the handler's state: it stays even if the handler then fails and rolls back.
        See docs/reminders.md.

        Raises:
            ConfigError: the kind has no ``on_reminder``, or ``every``/``first`` are out
                of range (nothing was stored).
            PhoenixError: the registration could not be committed (each error says
                whether it may have been stored).
        """
        await self._phx_act.remind(name, every, first)

    async def cancel_reminder(self, name: str) -> bool:
        """Stop the reminder ``name`` of this agent. ``False``: there was none.

        A tick already on its way may still arrive once (at-least-once delivery).

        Raises:
            PhoenixError: the cancellation could not be committed.
        """
        return await self._phx_act.cancel_reminder(name)

    async def on_reminder(self, name: str, tick: int) -> None:
        """Called for each tick of a durable reminder of this agent (:meth:`remind`).

        ``tick`` numbers the periods from the first due time (``0`` for the first
        firing); a tick may arrive more than once (after a failover), so compare it with
        the last one handled. It runs as a message: one at a time with the others, its
        state change committed, and rolled back if it raises (the error is logged; the
        next tick arrives as planned). Override it to use reminders.
        """


WORKER_SEPARATOR = "\x00"
"""Between a stateless worker's key and its number in the activation's key (``key\x000``)."""

def worker_of(activation_key: str) -> str:
    """The caller's key of a stateless worker's activation key (``key\x000`` -> ``key``)."""
    return activation_key.rpartition(WORKER_SEPARATOR)[0]


_RESERVED = frozenset(name for name in dir(Agent) if not name.startswith("_"))


def kind_spec(kind: type[Agent] | str) -> KindSpec:
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


_FOREIGN: dict[str, KindSpec] = {}


def foreign_kind(name: str) -> KindSpec:
    """A stand-in spec for kind ``name``, whose code this node does not have.

    A member that is the home of such an agent keeps its directory entry and its
    replicated state, and sends its messages to a member that hosts the kind
    (``docs/design/migration.md``, "Capabilities"); it never activates it. The stand-in
    is placed like a policy kind (``hashed`` is ``False``) and has no methods.
    """
    spec = _FOREIGN.get(name)
    if spec is None:
        spec = KindSpec(Agent, name, durability="quorum", idle_timeout_s=None,
                        placement="hash", replicas=3, mailbox_limit=None)
        spec.foreign = True
        spec.hashed = False
        spec = _FOREIGN.setdefault(name, spec)
    return spec
