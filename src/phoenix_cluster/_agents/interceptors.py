"""Interceptors: a node's hooks around the agent calls it sends and the ones it runs.

An :class:`Interceptor` overrides ``on_outgoing`` (runs on the caller's node, for every
call and cast made through a reference there, before it is routed) and/or
``on_incoming`` (runs on the node that runs the handler, in the agent's turn, after the
arguments are decoded and before the handler). Each gets the :class:`CallInfo` and a
``proceed`` function: awaiting ``proceed()`` runs the rest of the chain and returns the
result (the decoded result of an outgoing call, ``None`` for a cast; the handler's
return value for an incoming one). An interceptor may look at the call, refuse it by
raising, time it, or return another result.

Order: interceptors run in the order they were added, each around the next (the first
added is outermost), on both sides. A call made and served on one node meets that
node's outgoing chain, then its incoming chain.

An exception an interceptor raises (other than a Phoenix error it lets through from
``proceed``) reaches the caller as :class:`~phoenix_cluster.errors.CallRejected`:
definite when the call or handler had not run yet, indefinite once it had. An incoming
rejection rolls the agent's state back like a failing handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import CallRejected, PhoenixError

__all__ = ["CallInfo", "Interceptor", "Interceptors", "Proceed"]

_log = logging.getLogger("phoenix_cluster.agents")

Proceed = Callable[[], Awaitable[Any]]
"""Runs the rest of the chain (the call, or the handler) and returns its result."""


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One call as an interceptor sees it.

    Attributes:
        kind: the agent kind's name.
        key: the agent's key.
        method: the message's name.
        args: positional arguments (incoming: as decoded for the handler).
        kwargs: keyword arguments.
        node: the name of the node running this interceptor.
        direction: ``"outgoing"`` (the caller's node) or ``"incoming"`` (the node that
            runs the handler).
        one_way: ``True`` for a cast (nobody waits for a result).
    """

    kind: str
    key: str
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    node: str
    direction: Literal["outgoing", "incoming"]
    one_way: bool


class Interceptor:
    """Base class of call interceptors: override ``on_outgoing``, ``on_incoming`` or both.

    The defaults pass the call on unchanged; a node skips a side its interceptors do not
    override, so an interceptor of one side costs the other nothing. Add one with
    ``Node(interceptors=[...])`` or ``node.add_interceptor(...)``.
    """

    async def on_outgoing(self, call: CallInfo, proceed: Proceed) -> Any:
        """Around a call or cast this node sends (before it is routed)."""
        return await proceed()

    async def on_incoming(self, call: CallInfo, proceed: Proceed) -> Any:
        """Around a message this node runs (in the agent's turn, before the handler)."""
        return await proceed()


class _Run:
    """One pass through a chain: whether the innermost step started, and what it raised."""

    __slots__ = ("chain", "final", "inner_error", "ran", "side")

    def __init__(self, chain: tuple[Interceptor, ...], side: str, final: Proceed) -> None:
        self.chain = chain
        self.side = side
        self.final = final
        self.ran = False
        self.inner_error: BaseException | None = None

    async def step(self, call: CallInfo, index: int) -> Any:
        if index == len(self.chain):
            self.ran = True
            try:
                return await self.final()
            except BaseException as exc:
                self.inner_error = exc
                raise
        hook = getattr(self.chain[index], self.side)
        return await hook(call, lambda: self.step(call, index + 1))


class Interceptors:
    """A node's interceptors, split by the side each overrides."""

    __slots__ = ("incoming", "outgoing")

    def __init__(self) -> None:
        self.outgoing: tuple[Interceptor, ...] = ()
        self.incoming: tuple[Interceptor, ...] = ()

    def add(self, interceptor: Interceptor) -> None:
        """Append ``interceptor`` (innermost so far) to the sides it overrides.

        Raises:
            TypeError: not an :class:`Interceptor`.
        """
        if not isinstance(interceptor, Interceptor):
            raise TypeError(f"an interceptor must subclass phx.Interceptor, got "
                            f"{interceptor!r}")
        cls = type(interceptor)
        if cls.on_outgoing is not Interceptor.on_outgoing:
            self.outgoing = (*self.outgoing, interceptor)
        if cls.on_incoming is not Interceptor.on_incoming:
            self.incoming = (*self.incoming, interceptor)

    async def run(self, call: CallInfo, final: Proceed) -> Any:
        """Run ``final`` inside the chain of ``call.direction``.

        Raises:
            CallRejected: an interceptor raised something other than a Phoenix error
                (definite unless ``final`` had started).
            BaseException: whatever ``final`` raised, if the chain let it through.
        """
        outgoing = call.direction == "outgoing"
        run = _Run(self.outgoing if outgoing else self.incoming,
                   "on_outgoing" if outgoing else "on_incoming", final)
        try:
            return await run.step(call, 0)
        except PhoenixError:
            raise
        except Exception as exc:
            if exc is run.inner_error:
                raise  # the handler's own failure: an AgentError, as without interceptors
            where = f"{call.kind}/{call.key}.{call.method}"
            culprit = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix(
                "builtins.")
            _log.debug("an %s interceptor on %s rejected %s: %s: %s", call.direction,
                      call.node, where, culprit, exc)
            raise CallRejected(
                f"an {call.direction} interceptor on {call.node} rejected {where}: "
                f"{culprit}: {exc}" + ("" if not run.ran else
                                       " (after the call ran; its outcome is unknown)"),
                definite=not run.ran,
            ) from exc
