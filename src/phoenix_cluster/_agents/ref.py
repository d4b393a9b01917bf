"""References to agents: ``node.ref(Kind, key)`` and its method proxies.

A reference is a cheap value (kind, key, options); creating one activates nothing. The
first message does.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import KindSpec
    from .runtime import AgentRuntime

__all__ = ["AgentRef", "MethodRef"]


class MethodRef:
    """``ref.method``: await a call with ``ref.method(...)``, or send with ``.cast(...)``."""

    __slots__ = ("_method", "_ref")

    def __init__(self, ref: AgentRef, method: str) -> None:
        self._ref = ref
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Call the method and wait for its result.

        Raises:
            AgentError: the handler raised (the agent's state was rolled back).
            AgentNotFound: no such kind or method.
            SerializationError: an argument or the result has the wrong type, cannot be
                encoded, or is over ``max_message_bytes``; the handler did not run (or
                was rolled back).
            Overloaded: the agent's mailbox is full; nothing was queued.
            CallTimeout: no result within the timeout (the handler may have run).
        """
        ref = self._ref
        return ref._runtime.call(ref._spec, ref._key, self._method, args, kwargs, ref._timeout)

    def cast(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, None]:
        """Send the message without waiting for its result.

        Returns once the message is in the agent's mailbox, on whichever node hosts it
        (a remote owner acknowledges it). A full mailbox is waited on, yielding, for up
        to the reference's timeout, so a loop of casts is paced by the agent. A failure
        of the handler is logged by the hosting node, not reported here.

        Raises:
            AgentNotFound: no such kind or method.
            SerializationError: an argument has the wrong type, cannot be encoded, or the
                arguments are over ``max_message_bytes``; nothing was sent.
            Overloaded: the mailbox stayed full for the timeout; nothing was queued.
            CallTimeout, NodeUnavailable: the owner did not acknowledge the cast in time
                or went away (``definite`` says whether it may have been queued).
        """
        ref = self._ref
        return ref._runtime.casts.send(ref._spec, ref._key, self._method, args, kwargs,
                                 ref._timeout)

    def cast_unacknowledged(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, None]:
        """Send the message without waiting for the owner to acknowledge it (fire and
        forget): for fan-out where throughput matters more than knowing each arrived.

        It never waits for the agent. On the agent's own node it queues the message, or
        fails at once with ``Overloaded`` if the mailbox is full. To another node it
        returns once the message is queued to send: a remote owner that
        refuses it (full mailbox, unknown method, shutting down) or a connection lost on
        the way loses it without telling you. The owner logs such a refusal and counts it
        in ``phoenix_messages_dropped_total{reason="refused"}``; a lost connection is not
        counted. Use :meth:`cast` unless you accept that. Pub/sub uses it to hand
        messages to agent subscribers (its own delivery counts are best effort).

        Raises:
            AgentNotFound, SerializationError: as for :meth:`cast`; nothing was sent.
            Overloaded: the connection's send queue (or a local mailbox) stayed full.
        """
        ref = self._ref
        return ref._runtime.casts.send(ref._spec, ref._key, self._method, args, kwargs,
                                 ref._timeout, acknowledged=False)

    def __repr__(self) -> str:
        return f"<MethodRef {self._ref._spec.name}/{self._ref._key}.{self._method}>"


class AgentRef:
    """A reference to the agent ``(kind, key)``, valid on any node of the cluster.

    Attribute access gives a :class:`MethodRef` for any public name; whether the method
    exists is checked when the message is sent (``AgentNotFound``).
    """

    __slots__ = ("_key", "_runtime", "_spec", "_timeout")

    def __init__(
        self, runtime: AgentRuntime, spec: KindSpec, key: str, timeout: float | None = None
    ) -> None:
        self._runtime = runtime
        self._spec = spec
        self._key = key
        self._timeout = timeout

    @property
    def kind(self) -> str:
        """The agent's kind name."""
        return self._spec.name

    @property
    def key(self) -> str:
        """The agent's key."""
        return self._key

    def options(self, *, timeout: float | None = None) -> AgentRef:
        """A copy of this reference with other call options.

        Args:
            timeout: seconds before a call fails with ``CallTimeout`` (default: the node's
                ``call_timeout_s``, 5 s).
        """
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        return AgentRef(self._runtime, self._spec, self._key, timeout)

    def __getattr__(self, name: str) -> MethodRef:
        if name.startswith("_"):
            raise AttributeError(name)
        return MethodRef(self, name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentRef):
            return NotImplemented
        return (self._spec.name, self._key) == (other._spec.name, other._key)

    def __hash__(self) -> int:
        return hash((self._spec.name, self._key))

    def __repr__(self) -> str:
        return f"<AgentRef {self._spec.name}/{self._key}>"
