"""Process lifecycle of ``phx node``: serve until a signal, then exit with a code that says why.

The node starts in a fresh event loop (uvloop when installed), installs its SIGTERM and
SIGINT handlers, prints READY once it has joined or formed its cluster with every replica
caught up, and serves until it stops. A node downed by split-brain resolution rejoins as a
new incarnation in the same process unless ``on_downed`` is ``exit``. :func:`exit_code_for`
maps the reason it stopped to the process exit code listed in ``phx node --help``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import msgspec

from .._foundation.gc_tuning import tune_for_serving
from .._node import DOWNED_PREFIX, Node
from .._splitbrain import EXIT_DOWNED
from ..errors import ConfigError
from .node_config import EXIT_CONFIG, OneLineError, config_error_line

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_JOINED",
    "EXIT_OK",
    "NOT_JOINED_PREFIX",
    "exit_code_for",
    "rejoining",
    "run_node",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_JOINED = 4

NOT_JOINED_PREFIX = "not joined: "
"""Start of ``stop_reason`` when the node gave up joining after ``join_timeout_s``."""

_log = logging.getLogger("phoenix_cluster.cli")


def exit_code_for(stop_reason: str) -> int:
    """The process exit code for a node that stopped with ``stop_reason``.

    ``0`` when a signal asked it to stop (a graceful shutdown is success); ``3`` when
    split-brain resolution downed it (with ``on_downed = rejoin`` the process rejoins
    instead of exiting); ``4`` when it joined no cluster within ``join_timeout_s``;
    ``1`` for anything else, e.g. ``services failed: ...``.
    """
    if stop_reason.startswith("signal"):
        return EXIT_OK
    if stop_reason.startswith(DOWNED_PREFIX):
        return EXIT_DOWNED
    if stop_reason.startswith(NOT_JOINED_PREFIX):
        return EXIT_NOT_JOINED
    return EXIT_FAILED


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _wait_joined(node: Node) -> bool:
    """Wait until ``node`` joined or formed its cluster; ``False`` if it stopped first
    or gave up after ``join_timeout_s`` (then it is stopping with a reason that says why)."""
    timeout_s = node.settings.join_timeout_s
    joined = asyncio.ensure_future(node.wait_joined())
    stopped = asyncio.ensure_future(node.wait_stopped())
    try:
        await asyncio.wait((joined, stopped), timeout=timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (joined, stopped):
            waiter.cancel()
    if node.joined and not stopped.done():
        return True
    if not stopped.done():
        why = node.join_report()
        _log.error("phx node %s joined no cluster within %gs (%s); exiting with code %d",
                   node.name, timeout_s, why, EXIT_NOT_JOINED)
        node.request_shutdown(f"{NOT_JOINED_PREFIX}{why}")
    return False


async def _serve(node: Node, kinds: int) -> str:
    await node.start()
    node.install_signal_handlers()
    if not await _wait_joined(node):
        return await node.wait_stopped()
    # Ready means serving with every replica caught up: a rolling restart takes the
    # next node when this line appears.
    if not await node.wait_caught_up():
        return await node.wait_stopped()
    s = node.settings
    _log.info(
        "phx node %s ready (listen %s, role %s, %d kind%s imported)",
        node.name, node.address or "-", s.role, kinds, "" if kinds == 1 else "s",
    )
    # Startup's objects are never garbage; messages allocate short-lived containers by
    # the thousand (docs/design/performance.md): collect less often from here on.
    tune_for_serving()
    # Machine-readable readiness for supervisors and tests; flushed so pipes see it now.
    sys.stdout.write(f"READY {node.name} {node.address or '-'}\n")
    sys.stdout.flush()
    return await node.wait_stopped()


def run_node(node: Node, kinds: int) -> int:
    """Serve ``node`` (``kinds``: how many agent kinds were imported) until it stops for
    good; the process exit code."""
    while True:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                reason = runner.run(_serve(node, kinds))
        except KeyboardInterrupt:  # SIGINT before the handlers were installed
            return 130
        except ConfigError as exc:  # e.g. a port taken since _check_ports looked
            OneLineError(config_error_line(exc)).show()
            return EXIT_CONFIG
        except Exception as exc:
            _log.error("phx node %s failed: %s: %s", node.name, type(exc).__name__, exc)
            return EXIT_FAILED
        code = exit_code_for(reason)
        if code == EXIT_DOWNED and node.settings.on_downed == "rejoin":
            again = rejoining(node, reason)
            if again is not None:
                node = again
                continue
        if code not in (EXIT_OK, EXIT_NOT_JOINED):  # not joined: _wait_joined said why
            _log.error("phx node %s exiting with code %d: %s", node.name, code, reason)
        return code


def rejoining(node: Node, reason: str) -> Node | None:
    """The node that takes over after ``node`` was downed (``on_downed = rejoin``): same
    name and settings, a new incarnation, empty agents and replicas, seeded with the
    members ``node`` knew. It only joins, never forms a cluster of its own (its own
    address is no seed), so a node downed on a cut-off side waits for the heal.
    ``None`` (then it exits with code 3) when it knew nobody to rejoin through."""
    own = {node.address, node.settings.listen}
    seeds = [m.address for m in node.members()
             if m.role == "member" and m.name != node.name and m.address not in own]
    why = reason.removeprefix(DOWNED_PREFIX)
    if not seeds:
        _log.error("phx node %s was downed (%s) and knows no other member to rejoin"
                   " through", node.name, why)
        return None
    _log.warning("phx node %s was downed (%s); rejoining as a new incarnation through %s"
                 " (--on-downed=exit to exit with code 3 instead)", node.name, why,
                 ", ".join(seeds))
    settings = msgspec.structs.replace(node.settings, name=node.name, seeds=seeds)
    return Node(settings=settings)
