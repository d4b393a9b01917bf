"""The caller side: references to agents (``node.ref(Kind, key)``, its method proxies)
and the calls they send (:class:`Caller`).

A reference is a cheap value (kind, key, options); creating one activates nothing. The
first message does. A call checks and encodes its arguments with the wire codec (even
for an agent on this node, so code that works on one node works on a cluster), takes a
request id, and goes to the agent's owner through the router, or into its mailbox here
(the host side, ``runtime.py``), and waits for the result.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

import msgspec

from ..errors import CallTimeout, PhoenixError
from .arguments import ENCODE_ERRORS, check_arguments, encode_arguments
from .casts import no_host
from .chain import CURRENT, Link, check
from .interceptors import CallInfo
from .mailbox import Message
from .reroute import PLACE, reroute_delay, resend_local

if TYPE_CHECKING:
    from .._foundation.env import Clock
    from .casts import Casts
    from .cluster import Cluster
    from .interceptors import Interceptors
    from .kinds import KindSpec, MethodSpec
    from .mailbox import KindRuntime

__all__ = ["AgentRef", "CallHost", "Caller", "MethodRef", "RefHost"]


class CallHost(Protocol):
    """What a call asks of the node's agent runtime (``runtime.py``): the methods a kind
    accepts, and the mailboxes of the agents it hosts here."""

    @property
    def hosts_agents(self) -> bool: ...

    @property
    def casts(self) -> Casts: ...

    def method_spec(self, spec: KindSpec, method: str) -> MethodSpec: ...

    def kind(self, spec: KindSpec) -> KindRuntime: ...

    def try_enqueue(self, kr: KindRuntime, key: str, msg: Message) -> bool: ...

    def remember_call(self, kr: KindRuntime, key: str, msg: Message) -> None: ...


class RefHost(Protocol):
    """What a reference sends its messages through: the node's agent runtime."""

    @property
    def call(self) -> Callable[..., Coroutine[Any, Any, Any]]: ...

    @property
    def casts(self) -> Casts: ...


class Caller:
    """Sends this node's calls to agents, wherever they live.

    Args:
        host: the node's agent runtime (method specs, local mailboxes).
        cluster: the node's started parts (the router, the tracer; ``cluster.py``).
        clock: the node's clock.
        interceptors: the node's call interceptors (the outgoing chain runs here).
        node_name: this node's name.
        call_timeout_s: a call's timeout when its reference names none.
        max_message_bytes: the largest encoded arguments a call may carry.
        first_request_id: where this node's request ids start (random per start).
    """

    def __init__(self, host: CallHost, cluster: Cluster, clock: Clock,
                 interceptors: Interceptors, node_name: str, *, call_timeout_s: float,
                 max_message_bytes: int, first_request_id: int) -> None:
        self._host = host
        self.cluster = cluster
        self.clock = clock
        self.interceptors = interceptors
        self.node_name = node_name
        self.call_timeout_s = call_timeout_s
        self.max_message_bytes = max_message_bytes
        self._encode = msgspec.msgpack.Encoder().encode
        # Request ids are unique cluster-wide and across a node's lives (the reply
        # windows committed with agents' states compare them, and they outlive a
        # restart): counted up from a random 62-bit start, two nodes' ranges overlap
        # only when their starts fall within the calls they make of each other.
        self.request_ids = itertools.count(first_request_id)

    def call(
        self,
        spec: KindSpec,
        key: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Coroutine[Any, Any, Any]:
        """Send a call and wait for its result (decoded with the method's result type).

        A plain function returning the coroutine to await: without interceptors the
        caller awaits :meth:`send_call` itself, with no extra frame on the hot path."""
        if self.interceptors.outgoing:
            return self.interceptors.run(
                CallInfo(spec.name, key, method, args, kwargs, self.node_name, "outgoing",
                         False),
                partial(self.send_call, spec, key, method, args, kwargs, timeout))
        return self.send_call(spec, key, method, args, kwargs, timeout)

    async def send_call(
        self,
        spec: KindSpec,
        key: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """The call itself (what :meth:`call` runs inside the outgoing interceptors):
        routed to the owner, or queued here, and routed again while the agent's
        partition changes hands."""
        host = self._host
        timeout_s = self.call_timeout_s if timeout is None else timeout
        request_id = next(self.request_ids)
        method_spec = host.method_spec(spec, method)
        running = CURRENT.get()  # the message whose handler makes this call, if any
        chain: tuple[Link, ...] = ()
        if running is not None and (handler := running.handler) is not None:
            caller = running.act
            chain = (*running.chain, (caller.kind.spec.name, caller.key, handler.reentrant))
            check(chain, spec.name, key)  # a cycle would wait for itself: CallCycle now
        payload = self.encode_payload(spec, method_spec, args, kwargs)
        router = self.cluster.router  # hot paths read the seam, not the property
        deadline = self.clock.monotonic() + timeout_s
        remember = router is not None and spec.commits_replies
        for attempt in itertools.count():
            remaining = max(deadline - self.clock.monotonic(), 0.001)
            if router is not None:
                address = router.remote_address(spec, key)
                if address is PLACE:
                    address = await router.resolve(spec, key)
                if router.cast_paths:
                    await router.keep_order(spec, key, cast(str | None, address), False)
                if address is not None:
                    return await router.call(spec, key, method_spec, payload, remaining,
                                             request_id, cast(str, address), chain)
            if not host.hosts_agents:
                raise no_host(spec, key)
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            msg = Message(method, payload, future, deadline, request_id, chain=chain)
            kr = host.kind(spec)
            wait_s = remaining
            if not host.try_enqueue(kr, key, msg):
                await host.casts.enqueue_when_room(kr, key, msg, remaining)
                wait_s = max(msg.deadline - self.clock.monotonic(), 0.0)  # what is left
            if remember:
                host.remember_call(kr, key, msg)
            tracer = self.cluster.tracer
            if tracer is not None:
                tracer.local_call(spec.name, key, method, request_id, future)
            timer = self.clock.call_later(wait_s, partial(_expire, future, msg, spec, key))
            try:
                result = await future
            except PhoenixError as exc:
                # Nothing ran (the partition is changing hands), or its commit was fenced
                # and the window kept its reply: route it again with its request id.
                delay = reroute_delay(attempt, deadline - self.clock.monotonic())
                if not resend_local(exc, remember) or delay is None:
                    raise
                await self.clock.sleep(delay)
                continue
            finally:
                timer.cancel()
            return method_spec.result_decoder.decode(result)
        raise AssertionError("unreachable")  # pragma: no cover

    def encode_payload(self, spec: KindSpec, method: MethodSpec, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> bytes:
        """``[args, kwargs]`` checked against the method's annotations and encoded.

        Raises:
            SerializationError: a wrong type, an unencodable value, or over
                ``max_message_bytes``; nothing was queued or sent.
        """
        # Fast path: every positional parameter annotated with a class the values are
        # exactly instances of (``inc(1)`` for ``inc(self, by: int)``).
        if method.checks and (kwargs or method.exact_signature != tuple(map(type, args))):
            check_arguments(spec.name, method.name, method.checks, args, kwargs)
        try:
            payload = self._encode((args, kwargs))
        except ENCODE_ERRORS:
            payload = b""  # encode_arguments below names the culprit
        if not payload or len(payload) > self.max_message_bytes:
            payload = encode_arguments(spec.name, method.name, method.parameters, args,
                                       kwargs, self._encode, self.max_message_bytes)
        return payload


def _expire(future: asyncio.Future[bytes], msg: Message, spec: KindSpec, key: str) -> None:
    if not future.done():
        future.set_exception(
            CallTimeout(
                f"call {spec.name}/{key}.{msg.method} timed out (request {msg.request_id})",
                request_id=msg.request_id,
            )
        )



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
        self, runtime: RefHost, spec: KindSpec, key: str, timeout: float | None = None
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
