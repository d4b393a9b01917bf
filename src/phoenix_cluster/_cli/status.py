"""``phx status``: a cluster as one of its members sees it."""

from __future__ import annotations

import asyncio
import logging
import sys

import click
import msgspec

from .._foundation.extras import require_extra
from .._node import Node, NodeStatus
from .._ring.ring import HashRing
from ..errors import ConfigError, PhoenixError

__all__ = ["status"]


async def _status(seed: str, cookie_file: str | None, timeout_s: float) -> NodeStatus:
    node = Node(role="client", seeds=[seed], cookie_file=cookie_file)
    await node.start()
    try:
        rpc = node._rpc
        assert rpc is not None
        async with asyncio.timeout(timeout_s):
            reply = await rpc.call(seed, "node", "status", b"", timeout_s)
        return msgspec.msgpack.decode(reply, type=NodeStatus)
    finally:
        await node.aclose()


@click.command()
@click.option("--seed", required=True, metavar="HOST:PORT", help="Any member of the cluster.")
@click.option("--cookie-file", metavar="FILE",
              help="File holding the cluster secret (or set PHX_COOKIE).")
@click.option("--timeout-s", default=5.0, show_default=True, metavar="SECONDS")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(seed: str, cookie_file: str | None, timeout_s: float, as_json: bool) -> None:
    """Show the cluster SEED belongs to: members, state, incarnation, ring share and the
    last split-brain decision, as SEED sees them."""
    require_extra("cli", "phx status")
    # This command reports a failure in one line of its own; the client node's log
    # (e.g. "cannot join through seed ...") would only repeat it.
    logging.getLogger("phoenix_cluster").setLevel(logging.CRITICAL)
    try:
        view = asyncio.run(_status(seed, cookie_file, timeout_s))
    except ConfigError as exc:
        click.echo(f"phx status: error: {exc}", err=True)
        sys.exit(2)
    except (PhoenixError, TimeoutError, OSError, msgspec.DecodeError) as exc:
        click.echo(f"phx status: error: cannot read the cluster's status from {seed}: "
                   f"{exc or type(exc).__name__}", err=True)
        sys.exit(1)
    members = sorted(view.members, key=lambda m: m.name)
    ring = HashRing(m.name for m in members if m.role == "member" and
                    m.status in ("alive", "suspect"))
    shares = {m.name: ring.share(m.name) for m in members if m.name in ring}
    if as_json:
        out = msgspec.to_builtins(view)
        out["ring_share"] = shares
        click.echo(msgspec.json.encode(out).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cluster seen from {view.name} ({seed})")
    for column in ("name", "address", "status", "incarnation", "role", "ring share"):
        table.add_column(column, justify="right" if column in ("incarnation",
                                                               "ring share") else "left")
    for m in members:
        share = f"{shares[m.name]:.1%}" if m.name in shares else "-"
        table.add_row(m.name, m.address, m.status, str(m.incarnation), m.role, share)
    Console().print(table)
    alive = sum(m.status == "alive" for m in members)
    click.echo(f"{alive} alive of {len(members)} known members; split brain: "
               f"{view.split_brain}")
    decision = view.last_decision
    click.echo("last split-brain decision: " + (
        "none" if decision is None else f"{decision.action}: {decision.reason}"))
