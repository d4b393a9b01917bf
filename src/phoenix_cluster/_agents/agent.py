"""The ``Agent`` base class: what an agent kind subclasses, and what an agent sees of
its activation (the ``Seat`` protocol).

A kind is a subclass of :class:`Agent`. Defining the class registers it under its kind
name (``module.QualName`` unless ``kind=`` says otherwise), so a node that imports the
module can host it. Class keywords set per-kind options; the class body's public methods
are its messages and its public attributes are its state.

Defining a subclass builds the static description of its kind (``kinds.py``) from its
class keywords, checked in ``kind_options.py``; running agents is the runtime's job
(``runtime.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import msgspec

from .._placement.policies import Policy
from ..errors import ConfigError
from .agent_timer import AgentTimer
from .kind_options import Consistency, Durability, check_kind_options
from .kinds import KindSpec, MethodSpec, register_kind, type_hints

if TYPE_CHECKING:
    from .._foundation.env import Clock

# KindSpec and MethodSpec live in kinds.py; they are named here too for the modules that
# still import them from this one (runtime.py, dispatch.py, state.py).
__all__ = ["HINT_NAMES", "Agent", "KindSpec", "MethodSpec", "Seat", "SeatHost",
           "foreign_kind", "kind_hints", "worker_of"]


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
            base=Agent,
            hint_names=HINT_NAMES,
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
        register_kind(spec)

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


HINT_NAMES: Mapping[str, Any] = {"Seat": Seat, "AgentTimer": AgentTimer,
                                  "ClassVar": ClassVar, "KindSpec": KindSpec}
"""The names :class:`Agent`'s own annotations use (``kinds.type_hints``)."""


def kind_hints(obj: Any) -> dict[str, Any]:
    """The resolved annotations of a kind's class or method (``{}`` if unresolvable)."""
    return type_hints(obj, HINT_NAMES)


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
        spec = KindSpec(Agent, name, base=Agent, hint_names=HINT_NAMES,
                        durability="quorum", idle_timeout_s=None,
                        placement="hash", replicas=3, mailbox_limit=None)
        spec.foreign = True
        spec.hashed = False
        spec = _FOREIGN.setdefault(name, spec)
    return spec
