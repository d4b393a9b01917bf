"""``LocalCluster``: real node processes on loopback, for tests and experiments.

Each node is a ``python -m phoenix_cluster node`` process with its own event loop, talking
to the others over real TCP sockets, authenticated with a fresh cluster secret. Every node
(and every client node made by :meth:`LocalCluster.client`) gets a loopback address of
its own, ``127.A.B.10+i`` in a block ``127.A.B.0/24`` drawn at random per cluster, so
two clusters on one machine never share an address and the network between any two
nodes can be cut. Faults are injected the way they happen in production: ``kill`` sends
SIGKILL, ``stop`` SIGTERM, ``pause`` SIGSTOP (``resume`` SIGCONT), and ``partition``,
``isolate`` and ``flap`` drop packets in the kernel with ``iptables`` rules (root only),
which ``heal`` and ``aclose`` remove again. The nodes die with the process that started
them, also when it is killed without cleaning up (``_foundation/parent_death.py``).

This module places the nodes and clients on loopback and starts, converges and stops
them; one node's process is a :class:`~._cluster_node.ClusterNode`, the network faults
are :class:`~._network_faults.NetworkFaults` and their rules :mod:`._firewall`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .._foundation.extras import require_extra
from .._foundation.parent_death import PARENT_PID_ENV
from .._membership.messages import SyncState, decode_sync_state, encode_sync_state
from .._node import Node
from .._transport.tcp import parse_address
from ..errors import PhoenixError
from ._cluster_node import DROPPED_LINE, ClusterNode
from ._firewall import TAG_PREFIX, Firewall
from ._network_faults import Member, NetworkFaults
from ._wait import wait_until

__all__ = ["DROPPED_LINE", "ClusterNode", "LocalCluster", "Member", "free_port"]

_FIRST_NODE_OCTET = 10
_FIRST_CLIENT_OCTET = 100
_LAST_OCTET = 254


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalCluster(NetworkFaults):
    """Start ``nodes`` member processes on loopback that know each other as seeds.

    Use it as an async context manager::

        async with LocalCluster(nodes=3, imports=["myapp.agents"]) as cluster:
            client = await cluster.client()
            await client.ref(Counter, "a").increment()
            cluster.partition([0], [1, 2, client])   # node 0 cut off (needs root)
            cluster.heal()
            cluster.kill(1)

    Network faults (``partition``, ``isolate``, ``flap``) need Linux, root (or
    CAP_NET_ADMIN) and the ``iptables`` command; without them they raise
    ``RuntimeError`` saying why (:meth:`network_faults_unavailable` tells in advance).
    Their rules carry a comment unique to this cluster and are removed by :meth:`heal`,
    by :meth:`aclose` (also when the ``async with`` body raises), by an ``atexit`` hook,
    and, should the process die without any of these, by the next cluster that injects
    a network fault on this machine.

    Args:
        nodes: how many member processes.
        imports: modules each node imports (``--import``) so it can host their kinds.
        node_args: extra ``phx node`` flags for every node.
        env: extra environment variables for the node processes. Nodes run with
            ``PHX_ON_DOWNED=exit`` (a downed node exits with code 3, which tests
            observe) unless ``env`` sets it, e.g. to ``rejoin``, ``phx node``'s default.
        startup_timeout_s: how long each node may take to print its READY line.
        loopback_prefix: the first three octets of the nodes' addresses (e.g.
            ``"127.0.0"``: node ``i`` on ``127.0.0.{10+i}``); default a random
            ``127.A.B``. Where only 127.0.0.1 can be bound (macOS), every node uses it
            and network faults are unavailable.

    Raises:
        MissingExtra: the ``cli`` extra (which ``phx node`` needs) is not installed.
    """

    def __init__(
        self,
        nodes: int = 3,
        imports: Sequence[str] = (),
        *,
        node_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout_s: float = 30.0,
        loopback_prefix: str | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, got {nodes}")
        if nodes > _FIRST_CLIENT_OCTET - _FIRST_NODE_OCTET:
            raise ValueError(f"at most {_FIRST_CLIENT_OCTET - _FIRST_NODE_OCTET} nodes,"
                             f" got {nodes}")
        # Its nodes are `phx node` processes: say so now, not in each node's exit line.
        require_extra("cli", "LocalCluster (it runs phx node processes)")
        self.cookie = secrets.token_hex(32)
        self.imports = list(imports)
        self.node_args = list(node_args)
        self.startup_timeout_s = startup_timeout_s
        self.tag = f"{TAG_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        """The comment on every iptables rule of this cluster."""
        self._dir = tempfile.TemporaryDirectory(prefix="phx-cluster-")
        # A downed node exits (code 3) here unless ``env`` says PHX_ON_DOWNED=rejoin:
        # tests observe downing as an exit, and the nemesis restarts what exited.
        # Nodes die with this process (PARENT_PID_ENV), even when it is killed -9.
        self._env = {**os.environ, "PHX_ON_DOWNED": "exit", **(env or {}),
                     "PHX_COOKIE": self.cookie, PARENT_PID_ENV: str(os.getpid())}
        # The node processes import the caller's modules the way the caller does.
        self._env["PYTHONPATH"] = os.pathsep.join(
            p for p in [os.getcwd(), *sys.path, self._env.get("PYTHONPATH", "")] if p
        )
        self._prefix = _loopback_prefix(loopback_prefix)
        self.nodes = [
            ClusterNode(i, f"node-{i}", self._node_address(i),
                        Path(self._dir.name) / f"node-{i}.log")
            for i in range(nodes)
        ]
        self._clients: list[Node] = []
        self._probe: Node | None = None
        self._client_hosts = 0
        self._firewall = Firewall(self.tag)
        self._flaps: set[asyncio.Task[Any]] = set()
        self._atexit_registered = False
        self._closed = False

    def _node_address(self, index: int) -> str:
        host = "127.0.0.1" if self._prefix is None else \
            f"{self._prefix}.{_FIRST_NODE_OCTET + index}"
        return f"{host}:{free_port(host)}"

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    @property
    def clients(self) -> list[Node]:
        """The client nodes made by :meth:`client` and not yet closed."""
        return list(self._clients)

    async def __aenter__(self) -> LocalCluster:
        try:
            await asyncio.gather(*(self.start_node(n.index) for n in self.nodes))
            await self.wait_converged()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _command(self, node: ClusterNode) -> list[str]:
        cmd = [sys.executable, "-m", "phoenix_cluster", "node", "--name", node.name,
               "--listen", node.address, "--log-level", "info"]
        for other in self.nodes:
            if other is not node:
                cmd += ["--seed", other.address]
        for module in self.imports:
            cmd += ["--import", module]
        return [*cmd, *self.node_args, *node.extra_args]

    async def start_node(self, index: int) -> None:
        """Start (or restart) node ``index`` and wait for its READY line."""
        node = self.nodes[index]
        await node.start(self._command(node), self._env, self.startup_timeout_s)

    async def add_node(self, *extra_args: str) -> int:
        """Start one more node (a join) seeded with the others; returns its index.

        Waits for its READY line, not for convergence (:meth:`wait_converged`).
        """
        index = len(self.nodes)
        if index >= _FIRST_CLIENT_OCTET - _FIRST_NODE_OCTET:
            raise RuntimeError("no loopback address left for another node")
        node = ClusterNode(index, f"node-{index}", self._node_address(index),
                           Path(self._dir.name) / f"node-{index}.log",
                           extra_args=list(extra_args))
        self.nodes.append(node)
        await self.start_node(index)
        return index

    async def restart(self, index: int) -> None:
        """SIGKILL node ``index`` (if running) and start it again on the same address."""
        if self.nodes[index].running:
            self.kill(index)
            await self.wait(index)
        await self.start_node(index)

    async def client(self, *, seeds: Sequence[str] | None = None, host: str | None = None,
                     **options: Any) -> Node:
        """A started ``role="client"`` node that routes to the cluster (closed with it).

        The client listens on a loopback address of its own (``host``, default the next
        free one of the cluster's block) and dials from it, so :meth:`partition` can put
        it on either side. Pass ``listen=None`` for a client that dials from the
        machine's default address and is never cut off by a partition (only by
        :meth:`isolate`). Other options go to :class:`~phoenix_cluster.Node`.
        """
        if "listen" not in options and self._prefix is not None:
            if host is None:
                octet = _FIRST_CLIENT_OCTET + self._client_hosts
                if octet > _LAST_OCTET:
                    raise RuntimeError("no loopback address left for another client")
                self._client_hosts += 1
                host = f"{self._prefix}.{octet}"
            options["listen"] = f"{host}:0"
        elif host is not None:
            options.setdefault("listen", f"{host}:0")
        node = Node(
            name=options.pop("name", f"client-{secrets.token_hex(3)}"),
            role="client",
            seeds=list(seeds) if seeds is not None else self.addresses,
            cookie=options.pop("cookie", self.cookie),
            **options,
        )
        await node.start()
        self._clients.append(node)
        running = {n.name for n in self.nodes if n.running}
        await wait_until(
            lambda: running <= {m.name for m in node.members() if m.status == "alive"},
            timeout=30.0, what=f"{node.name} to see {sorted(running)} alive",
        )
        return node

    async def wait_converged(self, timeout_s: float = 30.0) -> None:
        """Wait until every running node sees every running node alive, and no other
        member alive or suspect (asks each node for its member table)."""
        if self._probe is None:
            self._probe = Node(name=f"probe-{secrets.token_hex(3)}", role="client",
                               seeds=self.addresses, cookie=self.cookie)
            await self._probe.start()
        rpc = self._probe._rpc
        assert rpc is not None
        empty = encode_sync_state(SyncState(self._probe.name, ()))
        running = [n for n in self.nodes if n.running]
        names = {n.name for n in running}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        views: dict[str, set[str]] = {}
        while True:
            for n in running:
                try:
                    reply = await rpc.call(n.address, "membership", "sync", empty, 2.0)
                except PhoenixError:
                    views[n.name] = set()
                    continue
                live = [u for u in decode_sync_state(reply).members
                        if u.status in ("alive", "suspect") and u.role == "member"]
                # A suspect still holds its keys on the ring: not converged yet.
                ok = all(u.status == "alive" for u in live)
                views[n.name] = {u.name for u in live} if ok else set()
            if all(views.get(name) == names for name in names):
                return
            if loop.time() > deadline:
                raise TimeoutError(f"cluster did not converge in {timeout_s}s: {views}")
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------ process faults

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``: no goodbye, no flush (a crash or a power cut)."""
        self._signal(index, signal.SIGKILL)

    def pause(self, index: int) -> None:
        """SIGSTOP node ``index`` (a long GC pause or a frozen VM)."""
        self._signal(index, signal.SIGSTOP)

    def resume(self, index: int) -> None:
        """SIGCONT a paused node."""
        self._signal(index, signal.SIGCONT)

    async def stop(self, index: int, timeout_s: float = 20.0) -> int:
        """SIGTERM node ``index`` and wait for it to exit; returns its exit code."""
        self._signal(index, signal.SIGTERM)
        return await self.wait(index, timeout_s)

    async def wait(self, index: int, timeout_s: float = 20.0) -> int:
        """Wait for node ``index`` to exit; returns its exit code."""
        return await self.nodes[index].wait(timeout_s)

    def _signal(self, index: int, sig: signal.Signals) -> None:
        self.nodes[index].signal(sig)

    def _all_hosts(self) -> set[str]:
        return {n.host for n in self.nodes} | {
            parse_address(c.address)[0] for c in self._clients if c.address is not None}

    def _hosts_of(self, member: Member) -> list[str]:
        if isinstance(member, bool):
            raise TypeError(f"not a cluster member: {member!r}")
        if isinstance(member, int):
            if not 0 <= member < len(self.nodes):
                raise ValueError(f"no node {member} in a cluster of {len(self.nodes)}")
            return [self.nodes[member].host]
        if isinstance(member, Node):
            if member.address is None:
                raise ValueError(f"client {member.name} has no address of its own"
                                 " (it was started with listen=None)")
            return [parse_address(member.address)[0]]
        if member in ("client", "clients"):
            hosts = [parse_address(c.address)[0] for c in self._clients
                     if c.address is not None]
            if not hosts:
                raise ValueError("this cluster has no client with an address of its own")
            return hosts
        for n in self.nodes:
            if n.name == member:
                return [n.host]
        for c in self._clients:
            if c.name == member and c.address is not None:
                return [parse_address(c.address)[0]]
        try:
            return [str(ipaddress.IPv4Address(member))]
        except ValueError:
            raise ValueError(f"unknown cluster member {member!r}") from None

    # ------------------------------------------------------------ shutdown

    async def aclose(self) -> None:
        """Remove network faults, close clients, kill every node (SIGKILL), clean up.
        Rules are removed even when something else fails.

        The nodes are killed, not stopped gracefully: when every member leaves at once
        none of them can take over another's partitions, so a graceful leave would wait
        out its whole hand-over budget (half of ``shutdown_timeout_s``, 5 s) for nothing.
        To check a graceful leave, :meth:`stop` a node (or all of them) first."""
        self._closed = True
        try:
            for task in list(self._flaps):
                if task is not asyncio.current_task():
                    task.cancel()
            self._firewall.clear()
            await self._close_processes()
        finally:
            try:
                self._firewall.clear()
            finally:
                if self._atexit_registered:
                    atexit.unregister(self._firewall.clear)
                    self._atexit_registered = False
                self._dir.cleanup()

    async def _close_processes(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        self._clients.clear()
        if self._probe is not None:
            with contextlib.suppress(Exception):
                await self._probe.aclose()
            self._probe = None
        for node in self.nodes:
            node.kill()
        for node in self.nodes:
            await node.reap()

    def __repr__(self) -> str:
        running = sum(n.running for n in self.nodes)
        return f"<LocalCluster {self.tag} [{running}/{len(self.nodes)} running]>"


def _loopback_prefix(prefix: str | None) -> str | None:
    """The ``127.A.B`` block for a cluster, or ``None`` if only 127.0.0.1 binds here."""
    if prefix is None:
        prefix = f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(256)}"
    probe = f"{prefix}.{_FIRST_NODE_OCTET}"
    try:
        if not ipaddress.IPv4Address(probe).is_loopback:
            raise ValueError(f"{prefix!r} is not a loopback block (127.x.y)")
    except ipaddress.AddressValueError:
        raise ValueError(f"bad loopback prefix {prefix!r}: expected 127.x.y") from None
    try:
        free_port(probe)
    except OSError:
        return None
    return prefix
