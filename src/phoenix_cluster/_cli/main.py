"""``phx``: run nodes, the demo and the benchmarks.

The entry point imports nothing optional itself: the command group (``commands.py``)
needs the ``cli`` extra, and some commands need more (``phx demo`` the ``demo`` extra,
``phx node --http`` the ``web`` extra). When one is missing, ``phx`` prints one line
naming the extra to install and exits with code 2 -- never a traceback.
"""

from __future__ import annotations

import sys

from .._foundation.extras import MissingExtra, extra_of_module
from .._foundation.parent_death import exit_with_parent_from_env

__all__ = ["EXIT_MISSING_EXTRA", "main"]

EXIT_MISSING_EXTRA = 2
"""Exit code when an optional part Phoenix needs for the command is not installed."""


def _missing_extra_line(exc: ImportError) -> str | None:
    if isinstance(exc, MissingExtra):
        return f"phx: error: {exc}"
    extra = extra_of_module(exc.name) if isinstance(exc, ModuleNotFoundError) else None
    if extra is None:
        return None
    return (f"phx: error: this command needs the '{extra}' extra ({exc.name} is not "
            f"installed): pip install 'phoenix-cluster[{extra}]'")


def main() -> None:
    """Console-script entry point."""
    # First, before the imports: a harness that started this process may die any moment.
    exit_with_parent_from_env()
    try:
        from .commands import cli

        cli(prog_name="phx")
    except ImportError as exc:
        line = _missing_extra_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        sys.exit(EXIT_MISSING_EXTRA)
