"""Event-sourced agents: a kind that stores the events that changed its state.

A subclass of :class:`EventSourcedAgent` changes its state only by
``self.persist(event)``, which applies the event (``apply``) at once and queues it;
when the message succeeds, its events are appended to the kind's store in one
conditional write (they are numbered per agent, so a second activation's append
conflicts), together with a snapshot of the state every ``snapshot_every`` events. A
message that fails drops its events with its state change. Activation replays: the
newest snapshot, then every event after it, through ``apply`` (``stored.py``).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

from ..errors import ConfigError, SerializationError
from .agent import Agent
from .kinds import _KINDS

__all__ = ["EventSourcedAgent"]

_encode = msgspec.msgpack.encode


class EventSourcedAgent(Agent):
    """Base class of event-sourced agent kinds: events, not state, are stored.

    ::

        class Account(phx.EventSourcedAgent, kind="account", store="main",
                      snapshot_every=100):
            def __init__(self) -> None:
                self.balance = 0

            def apply(self, event: Deposited) -> None:   # the only place state changes
                self.balance += event.amount

            async def deposit(self, amount: int) -> int:
                self.persist(Deposited(amount))
                return self.balance

    Class keywords: those of :class:`Agent` (``store=`` is required: events live in a
    state store), and ``snapshot_every`` (default 100): a snapshot of the state is
    stored with every this many events, so activation replays at most that many.

    ``apply`` must be deterministic and touch nothing but the state: it runs again on
    every activation, on a fresh instance. Annotate its parameter (a msgspec Struct, a
    union of them, or any msgspec type) to receive typed events on replay. The state is
    the public attributes (do not override ``snapshot``/``restore``). Persist in message
    handlers and timer callbacks; events persisted in ``on_deactivate`` are not stored.
    """

    _phx_reserved = frozenset({"apply", "persist"})
    _phx_snapshot_every: ClassVar[int]
    _phx_event_decoder: ClassVar[Callable[[bytes], Any]]

    def __init_subclass__(cls, *, snapshot_every: int = 100, **kwargs: Any) -> None:
        if not isinstance(snapshot_every, int) or snapshot_every < 1:
            raise ConfigError(f"event-sourced kind {cls.__qualname__}: snapshot_every must "
                              f"be an int >= 1, got {snapshot_every!r}", key="snapshot_every")
        cls._phx_snapshot_every = snapshot_every
        apply = cls.__dict__.get("apply") or getattr(cls, "apply", None)
        if apply is None or apply is EventSourcedAgent.apply:
            raise ConfigError(f"event-sourced kind {cls.__qualname__} must define "
                              "apply(self, event)", key="apply")
        cls._phx_event_decoder = _event_decoder(apply)
        super().__init_subclass__(**kwargs)
        if cls._phx_spec.store is None:
            raise ConfigError(f"event-sourced kind {cls._phx_spec.name!r} needs store=NAME "
                              "(its events live in a state store)", key="store")

    def apply(self, event: Any) -> None:
        """Change the state by ``event``; override it (the only place state changes)."""
        raise NotImplementedError

    def persist(self, event: Any) -> None:
        """Apply ``event`` now and store it when the message succeeds.

        Raises:
            SerializationError: ``event`` does not encode to msgpack (nothing applied).
        """
        try:
            data = _encode(event)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"event {event!r} of {type(self).__qualname__} does not "
                                     f"encode: {exc}") from exc
        self.apply(event)
        self.__dict__["_phx_seq"] = self.__dict__.get("_phx_seq", 0) + 1
        act = self._phx_act
        # The agent runtime (what act.runtime is at run time) owns the stores.
        runtime: Any = act.runtime
        runtime.state.stored.persisted(act.spec, act.key, data)

    def snapshot(self) -> Any:
        state = super().snapshot()
        # The event count is part of the state: a message that persisted an event always
        # commits, even if apply() left the attributes as they were.
        state["_phx_seq"] = self.__dict__.get("_phx_seq", 0)
        return state


def _event_decoder(apply: Any) -> Callable[[bytes], Any]:
    """Decodes stored events to ``apply``'s annotated parameter type (untyped if none)."""
    try:
        hints = typing.get_type_hints(apply)
    except Exception:
        hints = {}
    params = [p for p in hints if p != "return"]
    tp = hints[params[0]] if params else Any
    return msgspec.msgpack.Decoder(tp).decode


# The base class itself is no kind: only its subclasses are.
_KINDS.pop(f"{EventSourcedAgent.__module__}.{EventSourcedAgent.__qualname__}", None)
