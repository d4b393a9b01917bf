"""``phx status``: show a cluster's members as one of its seeds sees them."""

from __future__ import annotations

import asyncio
import sys

import click
from rich.console import Console
from rich.table import Table

from .._membership.snapshot import Member
from .._node import Node
from .._ring.ring import HashRing
from ..errors import ConfigError, PhoenixError

__all__ = ["status"]


async def _members(seed: str, cookie_file: str | None, timeout_s: float) -> list[Member]:
    node = Node(role="client", seeds=[seed], cookie_file=cookie_file)
    await node.start()
    try:
        observer = node._observer
        assert observer is not None
        for _ in range(max(1, int(timeout_s / 0.2))):
            if await observer.refresh():
                return sorted(observer.snapshot().members, key=lambda m: m.name)
            await asyncio.sleep(0.2)
        raise TimeoutError(f"no answer within {timeout_s}s")
    finally:
        await node.aclose()


@click.command()
@click.option("--seed", required=True, metavar="HOST:PORT", help="Any member of the cluster.")
@click.option("--cookie-file", metavar="FILE",
              help="File holding the cluster secret (or set PHX_COOKIE).")
@click.option("--timeout-s", default=5.0, show_default=True, metavar="SECONDS")
def status(seed: str, cookie_file: str | None, timeout_s: float) -> None:
    """Show the members of the cluster SEED belongs to: state, incarnation, ring share."""
    try:
        members = asyncio.run(_members(seed, cookie_file, timeout_s))
    except ConfigError as exc:
        click.echo(f"phx status: error: {exc}", err=True)
        sys.exit(2)
    except (PhoenixError, TimeoutError, OSError) as exc:
        click.echo(f"phx status: error: cannot read the member table from {seed}: "
                   f"{exc or type(exc).__name__}", err=True)
        sys.exit(1)
    ring = HashRing(m.name for m in members if m.role == "member" and
                    m.status in ("alive", "suspect"))
    table = Table(title=f"cluster seen from {seed}")
    for column in ("name", "address", "status", "incarnation", "role", "ring share"):
        table.add_column(column, justify="right" if column in ("incarnation",
                                                               "ring share") else "left")
    for m in members:
        share = f"{ring.share(m.name):.1%}" if m.name in ring else "-"
        table.add_row(m.name, m.address, m.status, str(m.incarnation), m.role, share)
    Console().print(table)
    alive = sum(m.status == "alive" for m in members)
    click.echo(f"{alive} alive of {len(members)} known members")
