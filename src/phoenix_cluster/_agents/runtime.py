"""The agent runtime of one node, the host side: messages in, the drain, the commit.

Data path of a local call: the caller (``ref.py``) encodes ``[args, kwargs]`` with the
wire codec, queues a :class:`Message` in the activation's mailbox (creating the
activation on first use), and awaits a future; a peer's message arrives through
:meth:`AgentRuntime.submit`. The activation's drain task, which exists only while messages
wait, activates the agent if needed and runs messages one at a time. After each message
that succeeded it settles the state (``state.py``): its encoding, or for a big state the
attributes that changed (``tracking.py``), is the committed state that a failing handler
is rolled back to, that replicated kinds commit and that passivation keeps.

Arguments and results cross the codec even locally, so code that works on one node works
on a cluster. Timers, reminders, passivation, departures, shutdown and statistics are
the runtime's upkeep (``upkeep.py``), off the path of a message.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from .._foundation.env import Env
from .._foundation.settings import Settings
from .._replication.types import Record
from .._telemetry import events
from .._telemetry.bus import TelemetryBus
from ..errors import (
    AgentNotFound,
    CallRejected,
    CallTimeout,
    ConfigError,
    NodeClosed,
    PhoenixError,
    PhoenixInternalError,
    SerializationError,
)
from .activation import Activator
from .active_active import ActiveActive
from .agent import KindSpec, MethodSpec, worker_of
from .arguments import (
    ENCODE_ERRORS,
    check_payload,
    convert_arguments,
    encode_result,
)
from .casts import Casts
from .chain import CURRENT, decode
from .cluster import Cluster, Homes, Outbound
from .departures import Departures
from .interceptors import CallInfo, Interceptors
from .mailbox import HANDOFF, PASSIVATE, Activation, KindRuntime, Message
from .outcomes import FailedMessages
from .passivation import Passivation
from .ref import Caller
from .reminders import Reminders
from .state import Pending, StateStore
from .timers import AgentTimers
from .upkeep import RuntimeStatistics, RuntimeUpkeep
from .workers import pick_worker, recent_reply

if TYPE_CHECKING:
    from .._replication.service import Replicator
    from .._telemetry.tracing import NodeTracer

__all__ = ["AgentRuntime", "RuntimeStatistics"]


_log = logging.getLogger("phoenix_cluster.agents")


class AgentRuntime(RuntimeUpkeep):
    """Hosts agents on one node. Created and closed by :class:`phoenix_cluster.Node`."""

    def __init__(self, node: Any, settings: Settings, env: Env, bus: TelemetryBus,
                 cluster: Cluster) -> None:
        self.node = node
        self.settings = settings
        self.clock = env.clock
        self.bus = bus
        self.node_name = node.name
        self._kinds: dict[str, KindRuntime] = {}
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode
        self.max_message_bytes = settings.max_message_bytes
        self.hosts_agents = settings.role == "member"
        self.closing = False
        """Set once :meth:`aclose` began: new messages are refused with ``NodeClosed``."""
        self.cluster = cluster
        """The node's parts that reach other nodes, as it starts them (``cluster.py``):
        read here, never assigned."""
        self.active_active = ActiveActive(self._kinds, self.start_drain, cluster)
        """Loads, commits and merges of ``consistency="crdt"`` kinds (``active_active.py``)."""
        self.state = StateStore(self.active_active, self._decode, cluster)
        """Where agent state commits, and its load, commit and rollback (``state.py``)."""
        self.failed = FailedMessages(self.state, bus, self.node_name, self._enqueue,
                                     lambda: self.closing)
        """How messages that will not run here, or failed, end (``outcomes.py``)."""
        self.activator = Activator(self.state, self.clock, bus, self.node_name, self._encode,
                                   self.failed.fail_queued)
        """Creates and restores agents (``activation.py``)."""
        self.timers = AgentTimers(self.clock, bus, self.node_name, self.start_drain)
        """Agents' timers, whose ticks run as messages (``timers.py``)."""
        self.passivation = Passivation(self._kinds, self.state, self.clock, bus,
                                       self.node_name, self._encode, self.start_drain)
        """Deactivation of idle agents, keeping their state (``passivation.py``)."""
        self.departures = Departures(self._kinds, self.state, self.clock, bus, self.node_name,
                                     self.start_drain, self.failed.stop_here)
        """Agents leaving for another node or a lost partition (``departures.py``)."""
        self.interceptors = Interceptors()
        """The node's call interceptors (``interceptors.py``)."""
        self.caller = Caller(self, cluster, self.clock, self.interceptors, self.node_name,
                             call_timeout_s=settings.call_timeout_s,
                             max_message_bytes=settings.max_message_bytes,
                             first_request_id=env.random.getrandbits(62) + 1)
        """Sends this node's calls (``ref.py``, the caller side)."""
        # The caller's own methods, not wrappers: a call meets no extra frame.
        self.call = self.caller.call
        self.encode_payload = self.caller.encode_payload
        self.reminders = Reminders(self.caller.send_call, self.clock, self.node_name,
                                   lambda: self.state.replicator)
        """Durable reminders: registration, re-arming and delivery (``reminders.py``)."""
        self.casts = Casts(self)
        """Casts sent and received, and messages waiting for room (``casts.py``)."""
        self._messages_handled = 0
        self._load_mark = (self.clock.monotonic(), 0)

    @property
    def router(self) -> Outbound | None:
        """The agent router (``dispatch.py``) on a node that talks to others."""
        return self.cluster.router

    @property
    def placement(self) -> Homes | None:
        """Homes, pins and moves of agents (``None`` on an embedded node)."""
        return self.cluster.placement

    @property
    def replicator(self) -> Replicator | None:
        """Quorum replication of agent state (members of a cluster; ``None`` embedded)."""
        return self.cluster.replicator

    @property
    def tracer(self) -> NodeTracer | None:
        """Spans of this node's messages (``None``: tracing is off)."""
        return self.cluster.tracer

    # ----------------------------------------------------------------- calling in

    def kind(self, spec: KindSpec) -> KindRuntime:
        """The runtime of ``spec``'s kind on this node, created on first use."""
        kr = self._kinds.get(spec.name)
        if kr is None or kr.spec is not spec:
            kr = self._kinds[spec.name] = KindRuntime(self, spec, self.settings)
        return kr

    def next_request_id(self) -> int:
        return next(self.caller.request_ids)

    def from_peer(self, spec: KindSpec, method: str, payload: bytes) -> list[Any] | None:
        """The method exists and the arguments from another node are well formed.

        Returns:
            ``[args, kwargs]`` decoded on the fast path (the message carries them to its
            handler, which would otherwise decode the payload again), else ``None``.

        Raises:
            AgentNotFound: no such method.
            SerializationError: arguments that do not decode or match the annotations.
        """
        method_spec = self.method_spec(spec, method)
        # Fast path, as at the caller: [args, kwargs] of exactly the annotated classes.
        # Anything else goes to check_payload, which converts or names the problem.
        try:
            decoded = self._decode(payload)
        except (msgspec.DecodeError, ValueError):
            decoded = None
        if (type(decoded) is not list or len(decoded) != 2 or type(decoded[0]) is not list
                or type(decoded[1]) is not dict
                or (method_spec.checks and (decoded[1] or method_spec.exact_signature
                                            != tuple(map(type, decoded[0]))))):
            check_payload(spec.name, method, method_spec.checks, payload, self._decode)
            return None
        return decoded

    def submit(
        self,
        spec: KindSpec,
        key: str,
        method: str,
        payload: bytes,
        want_reply: bool,
        deadline: float,
        request_id: int,
        *,
        dedup: bool = False,
        chain: str | None = None,
    ) -> asyncio.Future[bytes] | None:
        """Queue an already-encoded message for a local agent (the inbound path).

        With ``dedup``, a request id seen recently by this agent returns the future of
        its first delivery instead of running again: a resent call runs at most once.
        ``chain`` is the call's ``phx-chain`` header (``chain.py``).

        Raises:
            AgentNotFound, Overloaded, NodeClosed: refused; nothing was queued.
            SerializationError: a malformed chain header; nothing was queued.
        """
        decoded = self.from_peer(spec, method, payload)
        links = decode(chain) if chain else ()
        kr = self.kind(spec)
        if dedup:
            if kr.workers:
                seen = recent_reply(kr, key, request_id)
                if seen is not None:
                    return seen
            act = kr.activations.get(key)
            recent = act.recent if act is not None else None
            if recent is not None and request_id in recent:
                return recent[request_id]
        future: asyncio.Future[bytes] | None = None
        if want_reply:
            future = asyncio.get_running_loop().create_future()
        act = self._enqueue(kr, key, Message(method, payload, future, deadline, request_id,
                                             decoded=decoded, chain=links))
        if dedup and future is not None:
            act.remember(request_id, future)
        return future

    def method_spec(self, spec: KindSpec, method: str) -> MethodSpec:
        if self.closing:
            raise NodeClosed(f"node {self.node_name} is shutting down")
        method_spec = spec.methods.get(method)
        if method_spec is None:
            raise AgentNotFound(
                f"agent kind {spec.name!r} has no method {method!r} "
                f"(methods: {', '.join(sorted(spec.methods)) or 'none'})"
            )
        return method_spec

    def _enqueue(self, kr: KindRuntime, key: str, msg: Message) -> Activation:
        if kr.workers:
            key = pick_worker(kr, key)
        act = kr.activations.get(key)
        if act is None:
            act = kr.activations[key] = Activation(kr, key, self.clock.monotonic())
        if act.put_nowait(msg, kr.mailbox_limit):
            self.start_drain(act)
        return act

    def try_enqueue(self, kr: KindRuntime, key: str, msg: Message) -> bool:
        """Queue ``msg`` unless the agent's mailbox is full."""
        if kr.workers:
            key = pick_worker(kr, key)
        act = kr.activations.get(key)
        if act is None:
            act = kr.activations[key] = Activation(kr, key, self.clock.monotonic())
        start = act.try_put(msg, kr.mailbox_limit)
        if start:
            self.start_drain(act)
        return start is not None

    def remember_call(self, kr: KindRuntime, key: str, msg: Message) -> None:
        """Put a queued local call in its agent's reply window, as the inbound path does
        for a peer's (``submit(dedup=True)``): its reply is then committed with the
        change it makes, so the caller may send it again with its request id if the
        commit is fenced, and the next leader answers from the window if it kept it."""
        act = kr.activations.get(key)
        if act is not None and msg.future is not None:
            act.remember(msg.request_id, msg.future)

    # ----------------------------------------------------------------- running

    def start_drain(self, act: Activation) -> None:
        """Start the task that runs ``act``'s mailbox; it ends once the mailbox is empty
        (the caller queued the first message). Every drain task belongs to its busy
        activation (``act.task``, cleared when it ends), and ``aclose`` waits for the
        busy ones and cancels those still running at its deadline. No separate task set:
        one starts per burst of messages, and a set's add and discard made a local call
        about 5 % slower (``phx bench local``)."""
        act.task = asyncio.get_running_loop().create_task(self._drain(act))

    async def _drain(self, act: Activation) -> None:
        """Run queued messages one at a time until the mailbox is empty, then exit."""
        queue = act.queue
        try:
            if act.agent is None and not await self.activator.activate(act):
                return
            interleaves = act.kind.spec.reentrant_methods
            room = act.kind.room
            waiting = room.by_key
            while queue:
                msg = queue.popleft()
                if waiting:
                    room.wake_one(_room_key(act))
                if msg.fn is None:
                    if interleaves and self._interleave(act, msg):
                        await asyncio.sleep(0)  # it runs up to its first await first
                    elif (tracer := self.cluster.tracer) is None:
                        await self._handle(act, msg)
                    else:
                        await tracer.handle(act.kind.spec.name, act.key, msg,
                                            self._handle(act, msg))
                elif msg.method == PASSIVATE or msg.method == HANDOFF:
                    # Anything queued behind it moved to a fresh activation (passivation)
                    # or to another node (handoff).
                    await msg.fn()
                    return
                else:
                    await self._run_internal(act, msg)
        except asyncio.CancelledError:
            self.failed.fail_queued(act, NodeClosed(f"node {self.node_name} stopped"))
            raise
        except BaseException as exc:  # pragma: no cover - a bug in this module
            _log.exception("agent drain loop of %s/%s broke", act.kind.spec.name, act.key)
            self.failed.fail_queued(act, PhoenixInternalError(f"drain loop broke: {exc!r}"))
        finally:
            act.task = None
            if act.queue is queue and not queue:
                act.queue = None
            act.last_used = self.clock.monotonic()
            if act.kind.room.by_key:
                # Emptied, moved or stopped: whoever waits for room tries again.
                act.kind.room.wake_all(_room_key(act))

    def _interleave(self, act: Activation, msg: Message) -> bool:
        """Run a reentrant method's message in a task of its own, apart from the
        drain, which goes on with the next messages while it awaits; ``False``: the
        method is not reentrant (or unknown: ``_handle`` says so)."""
        method = act.kind.spec.methods.get(msg.method)
        if method is None or not method.reentrant:
            return False
        running = self._handle(act, msg)
        tracer = self.cluster.tracer
        if tracer is not None:
            running = tracer.handle(act.kind.spec.name, act.key, msg, running)
        task = asyncio.get_running_loop().create_task(running)
        if act.interleaved is None:
            act.interleaved = set()
        act.interleaved.add(task)
        task.add_done_callback(partial(self._interleaved_done, act))
        return True

    def _interleaved_done(self, act: Activation, task: asyncio.Task[None]) -> None:
        if act.interleaved is not None:
            act.interleaved.discard(task)
        act.last_used = self.clock.monotonic()
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.error("reentrant handler of %s/%s broke", act.kind.spec.name, act.key,
                       exc_info=exc)  # pragma: no cover - _handle catches what handlers raise

    async def _handle(self, act: Activation, msg: Message) -> None:
        future = msg.future
        if future is not None and self.clock.monotonic() > msg.deadline:
            # Nobody waits any more, and running it now would surprise the caller who
            # was told CallTimeout long ago: skip it (it never ran).
            if not future.done():
                future.set_exception(CallTimeout("deadline passed in mailbox",
                                                 request_id=msg.request_id))
            return
        spec = act.kind.spec
        method = spec.methods[msg.method]
        agent = act.agent
        assert agent is not None
        measure = events.AGENT_CALL_STOP in self.bus.listened
        started = self.clock.monotonic() if measure else 0.0
        try:
            decoded = msg.decoded
            if decoded is None:
                args, kwargs = self._decode(msg.payload)
            else:
                msg.decoded = None  # a message run again (rerouted) decodes its payload
                args, kwargs = decoded
            if method.conversions:
                convert_arguments(spec.name, msg.method, method.conversions, args, kwargs)
            # The chain its calls carry (chain.py): who waits on this handler, and it.
            msg.act, msg.handler = act, method
            token = CURRENT.set(msg)
            try:
                if self.interceptors.incoming:
                    result = await self._intercepted(act, msg, method, agent, args, kwargs)
                elif method.is_async:
                    result = await method.fn(agent, *args, **kwargs)
                else:
                    result = method.fn(agent, *args, **kwargs)
            finally:
                msg.handler = None
                CURRENT.reset(token)
            # The arguments may now be in the state: only the state may hold them when
            # it is settled (a tracked dict is adopted only if nothing else holds it).
            del decoded, args, kwargs
            try:
                out = self._encode(result)
            except ENCODE_ERRORS:
                out = b""  # encode_result below says why
            check = method.result_check
            if ((check is not None and type(result) is not check.exact) or not out
                    or len(out) > self.max_message_bytes):
                out = encode_result(spec.name, msg.method, check, result, self._encode,
                                    self.max_message_bytes)
            del result
            pending = self.state.settle(act, agent)
        except asyncio.CancelledError:
            self.state.rollback(act)
            if future is not None and not future.done():
                future.set_exception(NodeClosed(f"node {self.node_name} stopped mid-message"))
            raise
        except (SerializationError, CallRejected) as exc:
            self.state.rollback(act)
            self.failed.refuse(act, msg, exc)
            return
        except Exception as exc:
            self.state.rollback(act)
            self.failed.report_failure(act, msg, exc)
            return
        if pending is not None:
            if spec.consistency == "crdt":
                if not await self._commit_crdt(act, msg):
                    return
            elif not await self._commit(act, pending, msg.request_id, out, future, msg):
                return
            self.state.accept(act, pending)
        elif (future is not None and spec.fences_reads
              and not self.state.lease_runs(spec, act.key)
              and not await self._confirm_lease(act, msg.request_id, future)):
            return
        self._messages_handled += 1
        if future is not None and not future.done():
            future.set_result(out)
        if measure:
            self.bus.execute(
                events.AGENT_CALL_STOP,
                {"duration": self.clock.monotonic() - started},
                {"node": self.node_name, "kind": spec.name, "method": msg.method},
            )

    async def _intercepted(self, act: Activation, msg: Message, method: MethodSpec,
                           agent: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run the handler inside the node's incoming interceptors."""
        async def handler() -> Any:
            if method.is_async:
                return await method.fn(agent, *args, **kwargs)
            return method.fn(agent, *args, **kwargs)

        key = act.key if not act.kind.workers else worker_of(act.key)
        info = CallInfo(act.kind.spec.name, key, msg.method, tuple(args), kwargs,
                        self.node_name, "incoming", msg.future is None)
        return await self.interceptors.run(info, handler)

    async def _run_internal(self, act: Activation, msg: Message) -> None:
        """A timer tick: run the callback as a message, with rollback on failure."""
        agent = act.agent
        assert agent is not None and msg.fn is not None
        spec = act.kind.spec
        msg.act, msg.handler = act, spec
        token = CURRENT.set(msg)
        try:
            try:
                result = msg.fn(*msg.args)
                if asyncio.iscoroutine(result):
                    await result
            finally:
                msg.handler = None
                CURRENT.reset(token)
            pending = self.state.settle(act, agent)
        except Exception as exc:
            self.state.rollback(act)
            self.failed.report_failure(act, msg, exc)
            return
        if pending is not None:
            if act.kind.spec.consistency == "crdt":
                if not await self._commit_crdt(act, msg):
                    return
            elif not await self._commit(act, pending, 0, b"", msg.future, None):
                return
            self.state.accept(act, pending)
        self._messages_handled += 1
        if msg.future is not None and not msg.future.done():
            msg.future.set_result(b"")

    # ----------------------------------------------------------------- replication

    async def _commit(self, act: Activation, pending: Pending, request_id: int, reply: bytes,
                      future: asyncio.Future[bytes] | None, msg: Message | None) -> bool:
        """Commit ``pending`` (and the dedup window) before the message's effects show.

        On failure the message fails with the replication error (``NoQuorum``,
        ``NotLeader``: each says whether anything may have been stored), its state
        change is undone, and the agent stops here: messages queued behind it fail with
        a definite ``NotLeader`` (callers re-route them), casts are routed again in
        order (this one first when nothing of it was stored), and the agent's next
        message activates it again from the replicas. ``True`` at once for an agent
        that is not replicated.
        """
        spec = act.kind.spec
        route = self.state.route(spec, act.key)
        if route is None:
            return True  # not replicated: the state stays in this activation
        replies = self.state.window(act, request_id, reply)
        try:
            await self.state.commit(spec, act.key, Record(self.state.encoded(pending), replies),
                                    route)
        except PhoenixError as exc:
            _log.warning("commit of %s/%s failed: %s", spec.name, act.key, exc.message)
            self.state.rollback(act)
            again = [msg] if msg is not None and future is None and exc.definite else []
            self.failed.stop_here(act, "its state could not be committed", again)
            if future is not None and not future.done():
                exc.request_id = request_id
                future.set_exception(exc)
            return False
        return True

    async def _confirm_lease(self, act: Activation, request_id: int,
                             future: asyncio.Future[bytes]) -> bool:
        """A read (a call that changed nothing) outside this node's read lease: renew the
        lease before answering, or, if this node lost the partition, fail the call as of
        unknown outcome (its caller asks the new leader, with the same request id) and
        stop the agent here: its memory may be older than what the new leader holds."""
        try:
            await self.state.confirm_lease(act.kind.spec, act.key)
        except PhoenixError as exc:
            self.failed.stop_here(act, "its leadership could not be confirmed", [])
            if not future.done():
                exc.request_id = request_id
                future.set_exception(exc)
            return False
        return True

    # ----------------------------------------------------------------- active-active

    async def _commit_crdt(self, act: Activation, msg: Message) -> bool:
        """Store and ship a crdt kind's change (``active_active.py``); the reply waits
        for it. A field left non-CRDT fails the message like a handler that raised
        ``ConfigError`` (``AgentError``, state rolled back)."""
        agent = act.agent
        assert agent is not None
        try:
            await self.active_active.commit(act, agent, act.committed)
        except ConfigError as exc:
            self.state.rollback(act)
            self.failed.report_failure(act, msg, exc)
            return False
        return True

    # ----------------------------------------------------------------- moving agents

    def holds(self, spec: KindSpec, key: str) -> bool:
        """Whether this node has the agent, active or passivated."""
        kr = self._kinds.get(spec.name)
        return kr is not None and (key in kr.activations or key in kr.passive)

    async def ensure_active(self, spec: KindSpec, key: str) -> None:
        """Activate the agent here (pulling it per placement) if it is not active yet.

        Raises:
            PhoenixError: the activation failed (e.g. its holder did not release it).
        """
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        msg = Message("<activate>", b"", future, 0.0, 0, _noop)
        act = self._enqueue(self.kind(spec), key, msg)
        del act
        await future


def _room_key(act: Activation) -> str:
    """The key that messages waiting for room in ``act``'s mailbox wait under: the
    caller's key (a stateless worker's, without its number: any worker's room will do)."""
    if act.kind.workers:
        return worker_of(act.key)
    return act.key


def _noop() -> None:
    """The message that only makes an agent active (``ensure_active``)."""
