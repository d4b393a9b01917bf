"""What ``phx backup`` and ``phx restore`` share: a client node in the cluster, the
cluster's partition table as the members see it, calls to a member's ``$backup``
service, progress lines and exit codes."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import click
import msgspec

from .._node import Node
from .._replication.export import decode_reply
from .._ring.partitions import PartitionTable
from .._ring.ring import HashRing
from ..errors import PhoenixError

__all__ = [
    "EXIT_CODES",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "RETRYABLE",
    "Cluster",
    "Progress",
    "connect",
    "count",
    "fail",
    "size",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CODES = """\b
Exit codes:
  0  done
  1  the cluster could not be reached, or a read or write failed
  2  usage or configuration: bad options, no cluster secret, a backup file that
     is not whole and intact, kinds the target cluster does not import, state
     the target holds already (phx restore without --overwrite)"""

RETRYABLE = (PhoenixError, TimeoutError, OSError)
"""Failures of one call that a fresh view of the cluster may cure (a leader changing,
a member leaving): tried again until the command's ``--timeout-s``."""

RPC_TIMEOUT_S = 30.0
"""Deadline of one export page or restore batch (elections and quorum writes inside)."""

_T = TypeVar("_T")


class Cluster:
    """A client node's view of the cluster: who is the primary of which partition."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def table(self) -> PartitionTable:
        """The partition table the members use (the ring of the hosting members).

        Raises:
            PhoenixError: no member is alive in this node's view.
        """
        hosts = sorted(m.name for m in self.node.members()
                       if m.role == "member" and m.status in ("alive", "suspect"))
        if not hosts:
            raise PhoenixError("no member of the cluster is alive")
        return PartitionTable.build(HashRing(hosts), 3)

    def members(self) -> list[str]:
        return [m.name for m in self.node.members()
                if m.role == "member" and m.status == "alive"]

    async def call(self, member: str, method: str, request: msgspec.Struct,
                   reply_type: type[_T]) -> _T:
        """``$backup.method`` on ``member``."""
        rpc = self.node._rpc
        assert rpc is not None
        payload = await rpc.call_node("backup", member, method,
                                      msgspec.msgpack.encode(request), RPC_TIMEOUT_S)
        return decode_reply(payload, reply_type)


@asynccontextmanager
async def connect(seed: str, cookie_file: str | None,
                  timeout_s: float) -> AsyncIterator[Cluster]:
    """A client node joined through ``seed`` (as ``phx status`` connects), closed after.

    Raises:
        ConfigError: no cluster secret.
        TimeoutError: not joined within ``timeout_s`` (the message says why).
    """
    node = Node(role="client", seeds=[seed], cookie_file=cookie_file)
    await node.start()
    try:
        try:
            async with asyncio.timeout(timeout_s):
                await node.wait_joined()  # a client: once it sees a member alive
        except TimeoutError:
            why = node.join_report() or "no member answered"
            raise TimeoutError(f"cannot join the cluster through {seed} within "
                               f"{timeout_s:g} s: {why}") from None
        yield Cluster(node)
    finally:
        await node.aclose()


class Progress:
    """Progress lines on stderr, at most one per ``every_s``, and the elapsed time."""

    def __init__(self, command: str, every_s: float = 1.0) -> None:
        self.command = command
        self.started = time.monotonic()
        self._every_s = every_s
        self._last = self.started

    def maybe(self, line: str) -> None:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            click.echo(f"phx {self.command}: {line}", err=True)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


def fail(command: str, code: int, message: str) -> None:
    """Print one error line and exit with ``code``."""
    click.echo(f"phx {command}: error: {message}", err=True)
    sys.exit(code)


def count(n: int, noun: str) -> str:
    """``1 agent``, ``2 agents``, ``20,000 agents``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def size(n: int) -> str:
    """``n`` bytes in a unit a person reads at a glance."""
    if n < 1024:
        return f"{n:,} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"
