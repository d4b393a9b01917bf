"""``phx agents list`` and ``phx agents show``: the agents of a running cluster.

They connect as ``phx status`` does (a client node, ``--seed``, ``--cookie-file``) and
ask the seed's ``$inspect`` service, which asks every live member at once
(``_agents/inspection.py``); the HTTP endpoint's ``/api/agents/list`` and
``/api/agents/show`` serve the same answers."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeVar

import click
import msgspec

from .._agents.inspection import (
    AgentListing,
    ListRequest,
    ShowReply,
    ShowRequest,
    agent_json,
    listing_json,
)
from .._foundation.extras import require_extra
from .._node import Node
from ..errors import ConfigError, PhoenixError
from .backup_client import fail

__all__ = ["agents"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CODES = """\b
Exit codes:
  0  done
  1  the cluster could not be reached through SEED
  2  usage or configuration: bad options, no cluster secret, an agent kind no
     member imports
  3  (show) no member holds the agent and no replica has it committed"""

_T = TypeVar("_T")


async def _ask(seed: str, cookie_file: str | None, timeout_s: float, method: str,
               request: msgspec.Struct, reply_type: type[_T]) -> _T:
    node = Node(role="client", seeds=[seed], cookie_file=cookie_file)
    await node.start()
    try:
        rpc = node._rpc
        assert rpc is not None
        async with asyncio.timeout(timeout_s):
            reply = await rpc.call(seed, "inspect", method, msgspec.msgpack.encode(request),
                                   timeout_s)
        return msgspec.msgpack.decode(reply, type=reply_type)
    finally:
        await node.aclose()


def _run(command: str, seed: str, cookie_file: str | None, timeout_s: float, method: str,
         request: msgspec.Struct, reply_type: type[_T]) -> _T:
    require_extra("cli", f"phx agents {command}")
    # One line of our own on failure; the client node's log would only repeat it.
    logging.getLogger("phoenix_cluster").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(_ask(seed, cookie_file, timeout_s, method, request, reply_type))
    except ConfigError as exc:
        _fail(command, EXIT_USAGE, str(exc))
    except (PhoenixError, TimeoutError, OSError, msgspec.DecodeError) as exc:
        _fail(command, EXIT_FAILURE, f"cannot read the agents of the cluster of {seed}: "
                                     f"{exc or type(exc).__name__}")
    raise AssertionError("unreachable")  # pragma: no cover


def _fail(command: str, code: int, message: str) -> None:
    fail(f"agents {command}", code, message)


def _unknown_kind(command: str, kind: str) -> None:
    _fail(command, EXIT_USAGE, f"unknown agent kind {kind!r}: no member imports it "
                               "(phx node --import MODULE)")


def _age(wall: float | None) -> str:
    if wall is None:
        return "-"
    seconds = max(time.time() - wall, 0.0)
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


_SEED = click.option("--seed", required=True, metavar="HOST:PORT",
                     help="Any member of the cluster.")
_COOKIE = click.option("--cookie-file", metavar="FILE",
                       help="File holding the cluster secret (or set PHX_COOKIE).")
_TIMEOUT = click.option("--timeout-s", default=5.0, show_default=True, metavar="SECONDS")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def agents() -> None:
    """Look at the agents of a running cluster (read-only)."""


@agents.command("list", epilog=EXIT_CODES)
@_SEED
@click.option("--kind", default="", metavar="KIND", help="Only agents of this kind.")
@click.option("--node", "node_name", default="", metavar="NAME",
              help="Only agents on this member.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1),
              help="At most this many agents per member.")
@_COOKIE
@_TIMEOUT
@_JSON
def list_agents(seed: str, kind: str, node_name: str, limit: int, cookie_file: str | None,
                timeout_s: float, as_json: bool) -> None:
    """List the agents active or passivated on every member: kind, key, node, status,
    mailbox depth, last activity. Members that do not answer are named on stderr."""
    listing = _run("list", seed, cookie_file, timeout_s, "cluster_list",
                   ListRequest(kind, node_name, limit), AgentListing)
    if listing.unknown_kind:
        _unknown_kind("list", kind)
    if as_json:
        click.echo(msgspec.json.encode(listing_json(listing)).decode())
    else:
        _print_listing(listing)
    if listing.unreachable:
        click.echo(f"phx agents list: warning: no answer from {', '.join(listing.unreachable)}"
                   "; their agents are missing", err=True)


def _print_listing(listing: AgentListing) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(listing.agents):,} agents")
    for column in ("kind", "key", "node", "status", "mailbox", "last active"):
        table.add_column(column, justify="right" if column == "mailbox" else "left")
    for a in listing.agents:
        status = a.status + (" (busy)" if a.busy else "")
        if a.workers > 1:
            status += f", {a.workers} workers"
        table.add_row(a.kind, a.key, a.node, status, str(a.mailbox_depth),
                      _age(a.last_active))
    Console().print(table)
    if listing.truncated:
        click.echo("(a member had more agents than --limit; raise it to see them all)")


@agents.command("show", epilog=EXIT_CODES)
@_SEED
@click.argument("kind")
@click.argument("key")
@_COOKIE
@_TIMEOUT
@_JSON
def show_agent(seed: str, kind: str, key: str, cookie_file: str | None, timeout_s: float,
               as_json: bool) -> None:
    """Show one agent: its state as JSON, owner, replicas, committed version, mailbox
    depth and last activity."""
    reply = _run("show", seed, cookie_file, timeout_s, "cluster_show", ShowRequest(kind, key),
                 ShowReply)
    if reply.unknown_kind:
        _unknown_kind("show", kind)
    body = agent_json(reply)
    if reply.unreachable:
        click.echo(f"phx agents show: warning: no answer from {', '.join(reply.unreachable)}",
                   err=True)
    if body is None:
        _fail("show", EXIT_NOT_FOUND, f"agent {kind}/{key} not found: no member holds it and "
                                      "no replica has it committed")
        return
    if as_json:
        click.echo(msgspec.json.encode(body).decode())
        return
    _print_agent(body)


def _print_agent(body: dict[str, Any]) -> None:
    lines = [
        ("agent", f"{body['kind']}/{body['key']}"),
        ("status", body["status"] + (" (busy)" if body["busy"] else "")),
        ("owner", body["owner"] or "-"),
        ("hosts", ", ".join(body["hosts"]) or "-"),
        ("replicas", ", ".join(body["replicas"]) or "- (not replicated)"),
        ("version", body["version"] or "-"),
        ("mailbox", str(body["mailbox_depth"])),
        ("last active", _age(body["last_active"])),
    ]
    if body["workers"] > 1:
        lines.append(("workers", str(body["workers"])))
    for label, value in lines:
        click.echo(f"{label:<12} {value}")
    state = msgspec.json.format(msgspec.json.encode(body["state"]), indent=2).decode()
    click.echo(f"{'state':<12} {state}")
