"""Activations and their mailboxes, and each kind's activations on this node.

An :class:`Activation` is the record of one live agent. While the agent is idle it is a
passive record: no task, no queue, no timer of its own (the node's passivation sweep
finds idle agents). Only while messages are waiting does it own a ``deque`` and one
drain task, both dropped as soon as the mailbox is empty again. That keeps an idle agent
at a few hundred bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import Overloaded
from .agent_timer import AgentTimer
from .flow import RoomWaiters

if TYPE_CHECKING:
    from .._foundation.env import Clock
    from .._foundation.settings import Settings
    from .agent import Agent
    from .kinds import KindSpec, MethodSpec
    from .tracking import StateTracker

__all__ = ["CURRENT", "DEDUP_WINDOW", "HANDOFF", "PASSIVATE", "Activation", "AgentHost",
           "KindRuntime", "Link", "Message"]

DEDUP_WINDOW = 256
"""Request ids of calls remembered per agent, so a resent call runs at most once
(``dedup.py``)."""


Link = tuple[str, str, bool]
"""``(kind, key, reentrant)``: one agent of a call chain and whether its waiting handler
lets other messages in (``chain.py``)."""


CURRENT: ContextVar[Message | None] = ContextVar("phoenix_call_chain", default=None)
"""The message whose handler this task runs, if any (its ``handler`` is ``None`` once
that returned): the chain of a call made here (``chain.py``). A context variable rather
than a dict keyed by ``asyncio.current_task()``, which cost about twice as much per
message."""


class Message:
    """One queued message: a call (with a future), a cast, or an internal step.

    ``payload`` is the codec's bytes of ``[args, kwargs]``; internal steps (timer ticks,
    passivation) carry a Python callable in ``fn`` instead and never cross the wire.
    ``decoded`` is ``[args, kwargs]`` already decoded from ``payload`` when the owner
    checked a peer's arguments (the handler takes them instead of decoding again).
    """

    __slots__ = ("act", "args", "chain", "deadline", "decoded", "fn", "future", "handler",
                 "method", "payload", "request_id")

    # Set by the runtime just before the handler runs (not here: nothing reads them
    # before, and a message is made per call). ``handler``: the method (a timer tick:
    # the kind), whose ``reentrant`` is the last link of the chain of calls made from
    # it; ``None`` once it returned (``chain.py``).
    act: Activation
    handler: MethodSpec | KindSpec | None

    def __init__(
        self,
        method: str,
        payload: bytes,
        future: asyncio.Future[bytes] | None,
        deadline: float,
        request_id: int,
        fn: Callable[..., Any] | None = None,
        args: tuple[Any, ...] = (),
        decoded: list[Any] | None = None,
        chain: tuple[Link, ...] = (),
    ) -> None:
        self.decoded = decoded
        self.method = method
        self.payload = payload
        self.future = future
        self.deadline = deadline
        self.request_id = request_id
        self.fn = fn
        self.args = args
        self.chain = chain
        """The agents waiting on this call, outermost first (``chain.py``)."""


PASSIVATE = "\x00passivate"
"""Method name of the internal message that passivates an activation in mailbox order."""

HANDOFF = "\x00handoff"
"""Method name of the internal message that freezes an agent for a move to another node."""


class Activation:
    """One active agent: its instance, committed state and (while busy) its mailbox.

    ``committed`` holds the codec's bytes of the state after the last message that
    succeeded: a failing handler is rolled back to it, passivation stores it, and the
    replication layer ships it. An activation with a big state keeps it attribute by
    attribute in a :class:`~.tracking.StateTracker` instead (``tracker``), and
    ``committed`` joins the parts when read.
    """

    __slots__ = (
        "_committed",
        "agent",
        "answered",
        "interleaved",
        "key",
        "kind",
        "last_used",
        "queue",
        "recent",
        "task",
        "timers",
    )

    def __init__(self, kind: KindRuntime, key: str, now: float) -> None:
        self.kind = kind
        self.key = key
        self.agent: Agent | None = None
        self._committed: bytes | StateTracker = b""
        self.queue: deque[Message] | None = None
        self.task: asyncio.Task[None] | None = None
        self.last_used = now
        self.timers: list[AgentTimer] | None = None
        # Calls' request id -> reply future (the dedup window), made on first use.
        self.recent: dict[int, asyncio.Future[bytes]] | None = None
        # How far ``recent`` is settled, with the answers up to there: the replicated
        # window's cache (``state.py``, ``StateStore.window``), made at the first commit.
        self.answered: tuple[int, asyncio.Future[bytes],
                             tuple[tuple[int, bytes], ...]] | None = None
        # Reentrant handlers running apart from the drain (``runtime.py``), made on first use.
        self.interleaved: set[asyncio.Task[None]] | None = None

    @property
    def committed(self) -> bytes:
        committed = self._committed
        return committed if isinstance(committed, bytes) else committed.state()

    @committed.setter
    def committed(self, state: bytes) -> None:
        self._committed = state  # (a tracker, if any, is dropped: these bytes are newer)

    @property
    def tracker(self) -> StateTracker | None:
        """The committed state kept attribute by attribute (``tracking.py``), if it is."""
        committed = self._committed
        return None if isinstance(committed, bytes) else committed

    @tracker.setter
    def tracker(self, tracker: StateTracker) -> None:
        self._committed = tracker

    @property
    def runtime(self) -> AgentHost:
        return self.kind.runtime

    @property
    def spec(self) -> KindSpec:
        return self.kind.spec

    # What its agent asks of it (``agent.Seat``): the runtime's services for this agent.

    def start_timer(self, delay_s: float, callback: Callable[..., Any],
                    args: tuple[Any, ...], repeat: bool) -> AgentTimer:
        return self.kind.runtime.start_timer(self, delay_s, callback, args, repeat)

    async def remind(self, name: str, every_s: float, first_s: float | None) -> None:
        await self.kind.runtime.remind(self, name, every_s, first_s)

    async def cancel_reminder(self, name: str) -> bool:
        return await self.kind.runtime.cancel_reminder(self, name)

    @property
    def busy(self) -> bool:
        return self.task is not None or bool(self.interleaved)

    def try_put(self, msg: Message, limit: int) -> bool | None:
        """Queue ``msg`` unless ``limit`` messages are already waiting (then ``None``);
        ``True`` if a drain task must be started."""
        queue = self.queue
        if queue is None:
            self.queue = deque((msg,))
            return self.task is None
        if len(queue) >= limit:
            return None
        queue.append(msg)
        return self.task is None

    def remember(self, request_id: int, future: asyncio.Future[bytes]) -> None:
        """Put a queued call's reply future in the dedup window (``dedup.py``); the
        oldest leaves past ``DEDUP_WINDOW``."""
        recent = self.recent
        if recent is None:
            recent = self.recent = {}
        recent[request_id] = future
        if len(recent) > DEDUP_WINDOW:
            del recent[next(iter(recent))]

    def put_nowait(self, msg: Message, limit: int) -> bool:
        """Queue ``msg``; return ``True`` if a drain task must be started.

        Raises:
            Overloaded: ``limit`` messages are already waiting; nothing was queued.
        """
        queue = self.queue
        if queue is None:
            self.queue = deque((msg,))
            return self.task is None
        if len(queue) >= limit:
            raise Overloaded(
                f"mailbox of {self.kind.spec.name}/{self.key} is full "
                f"({len(queue)} queued, mailbox_limit {limit})",
                request_id=msg.request_id,
            )
        queue.append(msg)
        return self.task is None

    def __repr__(self) -> str:
        queued = len(self.queue) if self.queue else 0
        state = "busy" if self.task else ("idle" if self.agent else "activating")
        return f"<Activation {self.kind.spec.name}/{self.key} {state} [{queued} queued]>"


class AgentHost(Protocol):
    """What an agent reaches through its activation: the node (``Agent.node``), the
    node's clock, the runtime's timers (``Agent.set_timer``) and durable reminders
    (``Agent.remind``, ``reminders.py``). The agent itself sees it as a ``SeatHost``
    (``agent.py``), without the activation-taking methods, which its
    :class:`Activation` calls for it."""

    @property
    def node(self) -> Any: ...

    @property
    def clock(self) -> Clock: ...

    async def remind(self, act: Activation, name: str, every_s: float,
                     first_s: float | None) -> None: ...

    async def cancel_reminder(self, act: Activation, name: str) -> bool: ...

    def deliver_reminder(self, kind: str, key: str, name: str, tick: int,
                         until: float) -> None: ...

    def start_timer(self, act: Activation, delay_s: float, callback: Callable[..., Any],
                    args: tuple[Any, ...], repeat: bool) -> AgentTimer: ...


class KindRuntime:
    """One kind's activations on this node, and the state of its passivated agents.

    ``runtime`` is the node's agent runtime, seen only as what an agent calls on it.
    """

    __slots__ = ("activations", "idle_timeout_s", "mailbox_limit", "passive", "room", "runtime",
                 "spec", "workers")

    def __init__(self, runtime: AgentHost, spec: KindSpec, settings: Settings) -> None:
        self.runtime = runtime
        self.spec = spec
        self.activations: dict[str, Activation] = {}
        # Passivated agents: key -> committed state bytes (in memory until replication).
        self.passive: dict[str, bytes] = {}
        self.idle_timeout_s = spec.idle_timeout_s or settings.idle_timeout_s
        self.mailbox_limit = spec.mailbox_limit or settings.mailbox_limit
        self.room = RoomWaiters()
        """Casts waiting for room in this kind's full mailboxes (``flow.py``)."""
        self.workers = spec.max_workers
        """Activations per key of a stateless kind (``workers.py``); 0 for any other."""

    def __repr__(self) -> str:
        return (
            f"<KindRuntime {self.spec.name} [{len(self.activations)} active, "
            f"{len(self.passive)} passive]>"
        )
