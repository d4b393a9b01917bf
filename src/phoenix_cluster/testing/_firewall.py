"""``iptables`` rules that drop packets between loopback addresses: LocalCluster's faults.

:class:`Firewall` inserts and removes DROP rules in the INPUT chain, each carrying one
comment unique to its cluster (:data:`TAG_PREFIX`, the owner's process id and a random
part), so a cluster removes exactly its own rules, and a later cluster on the same
machine removes those of a process that died without cleaning up
(:meth:`Firewall.sweep_stale`). It also tells, once per command, why rules cannot be set
here (not Linux, no ``iptables``, no privilege).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import ClassVar

__all__ = ["TAG_PREFIX", "Firewall"]

_log = logging.getLogger("phoenix_cluster.testing")

TAG_PREFIX = "phx-lc-"
_TAG_RE = re.compile(rf"{TAG_PREFIX}(\d+)-[0-9a-f]+")


class Firewall:
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
