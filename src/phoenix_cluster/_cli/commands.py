"""The ``phx`` command group (needs the ``cli`` extra: click and rich).

Each subcommand lives in its own module; this one only assembles the group.
``main.py`` imports it, so a missing extra is reported there in one line.
"""

from __future__ import annotations

import click

from .._version import __version__
from .agents import agents
from .backup import backup
from .bench import bench
from .chaos import chaos
from .demo import demo
from .node import node
from .restore import restore
from .simulate import simulate
from .status import status

__all__ = ["cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="phx")
def cli() -> None:
    """Phoenix: a distributed-native agent runtime for Python."""


cli.add_command(node)
cli.add_command(demo)
cli.add_command(bench)
cli.add_command(status)
cli.add_command(agents)
cli.add_command(chaos)
cli.add_command(backup)
cli.add_command(restore)
cli.add_command(simulate)

