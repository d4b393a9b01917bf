"""``LocalCluster``: real node processes on loopback, for tests and experiments.

Each node is a ``python -m phoenix_cluster node`` process with its own event loop, talking
to the others over real TCP sockets on 127.0.0.1, authenticated with a fresh cluster
secret. Faults are injected the way they happen in production: ``kill`` sends SIGKILL,
``stop`` SIGTERM, ``pause`` SIGSTOP (``resume`` SIGCONT).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .._node import Node

__all__ = ["ClusterNode", "LocalCluster", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
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
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        """Everything the node wrote to stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class LocalCluster:
    """Start ``nodes`` member processes on loopback that know each other as seeds.

    Use it as an async context manager::

        async with LocalCluster(nodes=3, imports=["myapp.agents"]) as cluster:
            client = await cluster.client()
            await client.ref(Counter, "a").increment()
            cluster.kill(1)

    Args:
        nodes: how many member processes.
        imports: modules each node imports (``--import``) so it can host their kinds.
        node_args: extra ``phx node`` flags for every node.
        env: extra environment variables for the node processes.
        startup_timeout_s: how long each node may take to print its READY line.
    """

    def __init__(
        self,
        nodes: int = 3,
        imports: Sequence[str] = (),
        *,
        node_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, got {nodes}")
        self.cookie = secrets.token_hex(32)
        self.imports = list(imports)
        self.node_args = list(node_args)
        self.startup_timeout_s = startup_timeout_s
        self._dir = tempfile.TemporaryDirectory(prefix="phx-cluster-")
        self._env = {**os.environ, **(env or {}), "PHX_COOKIE": self.cookie}
        # The node processes import the caller's modules the way the caller does.
        self._env["PYTHONPATH"] = os.pathsep.join(
            p for p in [os.getcwd(), *sys.path, self._env.get("PYTHONPATH", "")] if p
        )
        self.nodes = [
            ClusterNode(i, f"node-{i}", f"127.0.0.1:{free_port()}",
                        Path(self._dir.name) / f"node-{i}.log")
            for i in range(nodes)
        ]
        self._clients: list[Node] = []

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    async def __aenter__(self) -> LocalCluster:
        try:
            await asyncio.gather(*(self.start_node(n.index) for n in self.nodes))
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

    async def client(self, *, seeds: Sequence[str] | None = None, **options: Any) -> Node:
        """A started ``role="client"`` node that routes to the cluster (closed with it)."""
        node = Node(
            name=f"client-{secrets.token_hex(3)}",
            role="client",
            seeds=list(seeds) if seeds is not None else self.addresses,
            cookie=options.pop("cookie", self.cookie),
            **options,
        )
        await node.start()
        self._clients.append(node)
        return node

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

    async def aclose(self) -> None:
        """Close clients, stop every node (SIGKILL after a grace period), clean up."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        self._clients.clear()
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
        self._dir.cleanup()

    def __repr__(self) -> str:
        running = sum(n.running for n in self.nodes)
        return f"<LocalCluster [{running}/{len(self.nodes)} running]>"
