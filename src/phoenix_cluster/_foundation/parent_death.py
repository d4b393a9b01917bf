"""Die with the parent process: node processes a test harness started never outlive it.

``LocalCluster`` (and every ``phx bench`` cluster, which is one) starts ``phx node``
processes with :data:`PARENT_PID_ENV` set to its own pid. When the harness is killed
without a chance to clean up (``kill -9``, pytest-timeout's ``os._exit``, an OOM kill),
its nodes would otherwise go on running, holding ports and CPU, forever. A process that
finds the variable arranges to get SIGKILL when its parent dies: on Linux the kernel does
it (``prctl(PR_SET_PDEATHSIG)``), elsewhere a daemon thread polls ``os.getppid()``.

SIGKILL rather than SIGTERM: the cluster's owner is gone, so a graceful leave helps
nobody, and SIGTERM would stay pending forever on a node a test paused with SIGSTOP.
A plain ``phx node`` (no variable) is unaffected: production supervisors decide alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

__all__ = ["PARENT_PID_ENV", "exit_with_parent_from_env", "watch_parent"]

PARENT_PID_ENV = "PHX_EXIT_WITH_PARENT"
"""Environment variable naming the pid whose death must end this process."""

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.25


def exit_with_parent_from_env() -> str | None:
    """Honour :data:`PARENT_PID_ENV` if it is set (and remove it, so that processes this
    one starts do not inherit it); returns how (``"prctl"``, ``"watchdog"``) or ``None``.

    A value that is not a pid is ignored with one line on stderr: the process runs on.
    """
    value = os.environ.pop(PARENT_PID_ENV, None)
    if value is None:
        return None
    try:
        parent = int(value)
    except ValueError:
        print(f"phx: ignoring {PARENT_PID_ENV}={value!r}: not a process id", file=sys.stderr)
        return None
    return watch_parent(parent)


def watch_parent(parent: int) -> str:
    """SIGKILL this process when ``parent`` (its parent's pid) is gone.

    Returns ``"prctl"`` when the kernel will deliver the signal, ``"watchdog"`` when a
    daemon thread polls for it. If the parent is already gone, the process dies now.
    """
    how = "prctl" if _set_death_signal(signal.SIGKILL) else "watchdog"
    # The parent may have died before the death signal was armed: check after arming.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "watchdog":
        threading.Thread(target=_poll_parent, args=(parent,), name="phx-parent-watch",
                         daemon=True).start()
    return how


def _set_death_signal(sig: signal.Signals) -> bool:
    """Ask Linux to send ``sig`` when the parent dies; ``False`` where that is unavailable.

    The death signal is tied to the thread that forked this process; the harness forks
    from its event-loop thread, whose end means the cluster is gone anyway.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent: int) -> None:
    # When the parent dies this process is re-parented (to init or a subreaper).
    while os.getppid() == parent:
        time.sleep(_POLL_S)
    os.kill(os.getpid(), signal.SIGKILL)
