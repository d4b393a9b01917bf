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
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import itertools
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeAlias

from .._foundation.extras import require_extra
from .._foundation.parent_death import PARENT_PID_ENV
from .._membership.messages import SyncState, decode_sync_state, encode_sync_state
from .._node import Node
from .._transport.tcp import parse_address
from ..errors import PhoenixError
from ._wait import wait_until

__all__ = ["ClusterNode", "LocalCluster", "Member", "free_port"]

_log = logging.getLogger("phoenix_cluster.testing")

DROPPED_LINE = re.compile(r"dropped \d+ message\(s\) to ")
"""The WARNING a node logs for messages it dropped (``_agents/flow.py``)."""

Member: TypeAlias = "int | str | Node"
"""Who a fault applies to: a node index, a :class:`~phoenix_cluster.Node` made by
:meth:`LocalCluster.client`, a node or client name, ``"client"`` (every client of the
cluster) or an IPv4 address."""

_TAG_PREFIX = "phx-lc-"
_TAG_RE = re.compile(rf"{_TAG_PREFIX}(\d+)-[0-9a-f]+")
_FIRST_NODE_OCTET = 10
_FIRST_CLIENT_OCTET = 100
_LAST_OCTET = 254


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ClusterNode:
    """One node process of a :class:`LocalCluster`."""

    index: int
    name: str
    address: str
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        """The node's own IP address (its traffic leaves from and arrives at it)."""
        return parse_address(self.address)[0]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        """Everything the node wrote to stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def dropped_messages(self) -> list[str]:
        """The node's log lines about accepted messages it lost with nobody to tell (each
        also counted in ``phoenix_messages_dropped_total``); a healthy run has none."""
        return [line for line in self.log().splitlines() if DROPPED_LINE.search(line)]


class _Firewall:
    """``iptables`` DROP rules in the INPUT chain, each tagged with one comment.

    On loopback every packet passes INPUT once, so one rule per direction drops a flow
    of any protocol (TCP and UDP alike). Rules are inserted at the top of the chain so
    an ``-i lo -j ACCEPT`` rule cannot let them be bypassed.
    """

    command: ClassVar[str] = "iptables"
    _availability: ClassVar[dict[str, str | None]] = {}

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.used = False

    @classmethod
    def executable(cls) -> str | None:
        search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
        return shutil.which(cls.command, path=search)

    @classmethod
    def unavailable(cls) -> str | None:
        """Why rules cannot be set here, or ``None`` if they can (cached per command)."""
        if cls.command in cls._availability:
            return cls._availability[cls.command]
        reason: str | None = None
        exe = cls.executable()
        if not sys.platform.startswith("linux"):
            reason = f"network faults need Linux iptables (this is {sys.platform})"
        elif exe is None:
            reason = (f"network faults need the {cls.command!r} command, which is not"
                      " installed (apt-get install iptables)")
        else:
            try:
                done = subprocess.run([exe, "-w", "-S", "INPUT"], capture_output=True,
                                      text=True, timeout=30, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                reason = f"network faults need a working {exe}: {exc}"
            else:
                if done.returncode != 0:
                    who = "" if os.geteuid() == 0 else " (they need root or CAP_NET_ADMIN)"
                    reason = (f"cannot set iptables rules{who}: {exe} -S INPUT failed:"
                              f" {done.stderr.strip() or done.returncode}")
        cls._availability[cls.command] = reason
        return reason

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = self.executable()
        if exe is None:
            raise RuntimeError(f"the {self.command!r} command disappeared")
        done = subprocess.run([exe, "-w", *args], capture_output=True, text=True,
                              timeout=30, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{shlex.join([self.command, *args])} failed:"
                               f" {done.stderr.strip() or done.returncode}")
        return done

    def drop(self, source: str, destination: str, *, negate: str = "") -> list[str]:
        """The rule spec dropping packets from ``source`` to ``destination``.

        ``negate`` is ``"s"`` or ``"d"``: match every source (destination) but that one.
        """
        src = ["!", "-s", source] if negate == "s" else ["-s", source]
        dst = ["!", "-d", destination] if negate == "d" else ["-d", destination]
        return [*src, *dst, "-m", "comment", "--comment", self.tag, "-j", "DROP"]

    def insert(self, specs: Sequence[list[str]]) -> None:
        """Insert every rule, or none of them (those already inserted are removed)."""
        self.used = True
        done: list[list[str]] = []
        try:
            for spec in specs:
                self._run("-I", "INPUT", "1", *spec)
                done.append(spec)
        except BaseException:
            self.delete(done)
            raise

    def delete(self, specs: Iterable[list[str]]) -> None:
        """Delete one instance of each rule; rules already gone are skipped."""
        for spec in specs:
            self._run("-D", "INPUT", *spec, check=False)

    def listed(self) -> list[list[str]]:
        """Every rule in INPUT carrying this tag, as ``-A INPUT ...`` token lists."""
        return [r for r in _input_rules(self._run("-S", "INPUT").stdout) if self.tag in r]

    def clear(self) -> None:
        """Remove every rule with this tag (whoever added it)."""
        if not self.used:
            return
        for rule in self.listed():
            self._run("-D", *rule[1:], check=False)

    @classmethod
    def sweep_stale(cls, own_pid: int) -> None:
        """Remove rules left by ``LocalCluster`` processes that no longer exist."""
        exe = cls.executable()
        if exe is None:
            return
        listing = subprocess.run([exe, "-w", "-S", "INPUT"], capture_output=True,
                                 text=True, timeout=30, check=False).stdout
        for rule in _input_rules(listing):
            tag = next((t for t in rule if _TAG_RE.fullmatch(t)), None)
            if tag is None:
                continue
            match = _TAG_RE.fullmatch(tag)
            assert match is not None
            pid = int(match.group(1))
            if pid == own_pid or _pid_alive(pid):
                continue
            _log.warning("removing a stale fault-injection rule of dead process %d: %s",
                         pid, shlex.join(rule))
            subprocess.run([exe, "-w", "-D", *rule[1:]], capture_output=True, timeout=30,
                           check=False)


def _input_rules(listing: str) -> list[list[str]]:
    rules = []
    for line in listing.splitlines():
        tokens = shlex.split(line)
        if tokens[:2] == ["-A", "INPUT"]:
            rules.append(tokens)
    return rules


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalCluster:
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
        self.tag = f"{_TAG_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
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
        self._firewall = _Firewall(self.tag)
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
        if node.running:
            raise RuntimeError(f"{node.name} is already running")
        log = node.log_path.open("ab")
        try:
            node.process = await asyncio.create_subprocess_exec(
                *self._command(node), stdout=asyncio.subprocess.PIPE, stderr=log,
                stdin=asyncio.subprocess.DEVNULL, env=self._env,
            )
        finally:
            log.close()
        assert node.process.stdout is not None
        try:
            async with asyncio.timeout(self.startup_timeout_s):
                while True:
                    line = await node.process.stdout.readline()
                    if not line:
                        raise RuntimeError(
                            f"{node.name} exited before it was ready:\n{node.log()[-2000:]}"
                        )
                    if line.startswith(b"READY "):
                        return
        except TimeoutError:
            raise RuntimeError(
                f"{node.name} not ready after {self.startup_timeout_s}s:\n{node.log()[-2000:]}"
            ) from None

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
        process = self.nodes[index].process
        assert process is not None
        async with asyncio.timeout(timeout_s):
            return await process.wait()

    def _signal(self, index: int, sig: signal.Signals) -> None:
        node = self.nodes[index]
        if node.process is None or node.process.returncode is not None:
            raise RuntimeError(f"{node.name} is not running")
        node.process.send_signal(sig)

    # ------------------------------------------------------------ network faults

    @classmethod
    def network_faults_unavailable(cls) -> str | None:
        """Why ``partition``/``isolate``/``flap`` cannot work here, or ``None``.

        Tests call it first and ``pytest.skip`` with the reason (Phoenix's own suite
        turns such a skip into a failure under ``CI``).
        """
        return _Firewall.unavailable()

    def partition(self, *groups: Sequence[Member]) -> None:
        """Drop every packet (TCP and UDP, both directions) between different groups.

        Members in no group keep talking to everyone: ``partition([0], [1])`` breaks
        only the link between nodes 0 and 1. With a single group, the other group is
        every other node and client. Partitions add up until :meth:`heal`.

        Raises:
            RuntimeError: not root, no ``iptables``, or the nodes share an address
                (the message says which); tests ``pytest.skip`` on it.
            ValueError: a member is unknown or in two groups.
        """
        self._check_faults()
        sides = [self._side(group) for group in groups]
        if not sides:
            raise ValueError("partition() needs at least one group")
        if len(sides) == 1:
            sides.append(self._all_hosts() - sides[0])
        for a, b in itertools.combinations(sides, 2):
            if not a or not b:
                raise ValueError("every side of a partition needs a member")
            if a & b:
                raise ValueError(f"{sorted(a & b)} cannot be on two sides of a partition")
        specs = []
        for a, b in itertools.combinations(sides, 2):
            specs += self._between(a, b)
        self._firewall.insert(specs)
        _log.info("cluster %s partitioned: %s", self.tag,
                  " | ".join(",".join(sorted(s)) for s in sides))

    def isolate(self, member: Member) -> None:
        """Drop every packet to and from ``member`` (a node index or a client), from
        anyone: the cable is pulled.

        Raises:
            RuntimeError, ValueError: as :meth:`partition`.
        """
        self._check_faults()
        hosts = self._side([member])
        specs = []
        for h in sorted(hosts):
            specs += [self._firewall.drop(h, h, negate="d"),
                      self._firewall.drop(h, h, negate="s")]
        self._firewall.insert(specs)
        _log.info("cluster %s isolated %s", self.tag, ",".join(sorted(hosts)))

    def cut_one_way(self, source: Sequence[Member] | Member,
                    destination: Sequence[Member] | Member) -> None:
        """Drop every packet (TCP and UDP) from ``source`` to ``destination``; the other
        direction keeps working: asymmetric loss. Gossip sees it as one-way (pings one
        way arrive, their acks never do); a TCP connection between the two breaks both
        ways (its acknowledgements are lost). Cuts add up until :meth:`heal`.

        Raises:
            RuntimeError, ValueError: as :meth:`partition`.
        """
        self._check_faults()
        sources = self._side(_as_group(source))
        destinations = self._side(_as_group(destination))
        if not sources or not destinations or sources & destinations:
            raise ValueError("cut_one_way() needs two disjoint, non-empty sides")
        fw = self._firewall
        fw.insert([fw.drop(x, y) for x in sorted(sources) for y in sorted(destinations)])
        _log.info("cluster %s: packets from %s to %s dropped", self.tag,
                  ",".join(sorted(sources)), ",".join(sorted(destinations)))

    def heal(self) -> None:
        """Remove every network fault of this cluster (no-op if none was injected).

        A running :meth:`flap` keeps flapping; cancel it to stop it.
        """
        self._firewall.clear()

    def firewall_rules(self) -> list[str]:
        """This cluster's iptables rules as ``iptables -S`` prints them."""
        if not self._firewall.used:
            return []
        return [shlex.join(rule) for rule in self._firewall.listed()]

    async def flap(self, a: Member | Sequence[Member], b: Member | Sequence[Member], *,
                   period_s: float = 1.0, duration_s: float = 10.0) -> int:
        """Cut the link between ``a`` and ``b`` for half of every ``period_s``, restore
        it for the other half, for ``duration_s``; the link is up again on return (also
        when cancelled, and :meth:`aclose` cancels a running flap).

        Returns:
            How many times the link went down.

        Raises:
            RuntimeError, ValueError: as :meth:`partition`.
        """
        if period_s <= 0 or duration_s <= 0:
            raise ValueError("period_s and duration_s must be positive")
        self._check_faults()
        side_a, side_b = self._side(_as_group(a)), self._side(_as_group(b))
        if side_a & side_b:
            raise ValueError(f"{sorted(side_a & side_b)} cannot be on both ends of a link")
        specs = self._between(side_a, side_b)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration_s
        task = asyncio.current_task()
        if task is not None:
            self._flaps.add(task)
        downs = 0
        try:
            while (left := deadline - loop.time()) > 0:
                self._check_faults()
                self._firewall.insert(specs)
                downs += 1
                try:
                    await asyncio.sleep(min(period_s / 2, left))
                finally:
                    self._firewall.delete(specs)
                if (left := deadline - loop.time()) > 0:
                    await asyncio.sleep(min(period_s / 2, left))
        finally:
            if task is not None:
                self._flaps.discard(task)
        return downs

    def _check_faults(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        reason = self.network_faults_unavailable()
        if reason is None and self._prefix is None:
            reason = ("network faults need a loopback address per node, but only"
                      " 127.0.0.1 can be bound here")
        if reason is not None:
            raise RuntimeError(reason)
        if not self._atexit_registered:
            _Firewall.sweep_stale(os.getpid())
            atexit.register(self._firewall.clear)
            self._atexit_registered = True

    def _between(self, a: set[str], b: set[str]) -> list[list[str]]:
        fw = self._firewall
        return [spec for x in sorted(a) for y in sorted(b)
                for spec in (fw.drop(x, y), fw.drop(y, x))]

    def _side(self, group: Sequence[Member]) -> set[str]:
        hosts: set[str] = set()
        for member in _as_group(group):
            hosts.update(self._hosts_of(member))
        return hosts

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
        """Remove network faults, close clients, stop every node (SIGKILL after a grace
        period), clean up. Rules are removed even when something else fails."""
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
            if node.running:
                assert node.process is not None
                with contextlib.suppress(ProcessLookupError):
                    node.process.send_signal(signal.SIGCONT)
                    node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                async with asyncio.timeout(15):
                    await node.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    node.process.kill()
                await node.process.wait()

    def __repr__(self) -> str:
        running = sum(n.running for n in self.nodes)
        return f"<LocalCluster {self.tag} [{running}/{len(self.nodes)} running]>"


def _as_group(group: Member | Sequence[Member]) -> Sequence[Member]:
    if isinstance(group, int | str | Node):
        return [group]
    return group


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
