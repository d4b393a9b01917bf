"""One node process of a LocalCluster: its address, its process and its log.

:class:`ClusterNode` starts a ``phx node`` process and waits for the READY line it
prints once it serves, signals it (the process faults of ``LocalCluster``), waits for it
and stops it; it reads what the process logged, and picks out the lines about messages it
dropped.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._transport.tcp import parse_address

__all__ = ["DROPPED_LINE", "ClusterNode"]

DROPPED_LINE = re.compile(r"dropped \d+ message\(s\) to ")
"""The WARNING a node logs for messages it dropped (``_agents/flow.py``)."""


@dataclass
class ClusterNode:
    """One node process of a :class:`LocalCluster`."""

    index: int
    name: str
    address: str
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    extra_args: list[str] = field(default_factory=list)
    # What log() read so far: tests and benchmarks poll the log every few milliseconds
    # while a node runs for minutes, so each call reads only what was appended since.
    _log_read: int = field(default=0, repr=False)
    _log_text: str = field(default="", repr=False)
    _log_decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"),
        repr=False)

    @property
    def host(self) -> str:
        """The node's own IP address (its traffic leaves from and arrives at it)."""
        return parse_address(self.address)[0]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        """Everything the node wrote to stderr so far (every life of it: the file is
        appended to)."""
        try:
            with self.log_path.open("rb") as file:
                if file.seek(0, 2) < self._log_read:  # replaced: start over
                    self._log_read, self._log_text = 0, ""
                    self._log_decoder.reset()
                file.seek(self._log_read)
                new = file.read()
        except FileNotFoundError:
            return ""
        if new:
            self._log_read += len(new)
            self._log_text += self._log_decoder.decode(new)
        return self._log_text

    def dropped_messages(self) -> list[str]:
        """The node's log lines about accepted messages it lost with nobody to tell (each
        also counted in ``phoenix_messages_dropped_total``); a healthy run has none."""
        return [line for line in self.log().splitlines() if DROPPED_LINE.search(line)]

    async def start(self, command: Sequence[str], env: dict[str, str],
                    timeout_s: float) -> None:
        """Start the process and wait for its READY line.

        Raises:
            RuntimeError: it is running already, exited before it was ready, or was not
                ready within ``timeout_s`` (the message ends with its log).
        """
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        log = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=log,
                stdin=asyncio.subprocess.DEVNULL, env=env,
            )
        finally:
            log.close()
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    line = await self.process.stdout.readline()
                    if not line:
                        raise RuntimeError(
                            f"{self.name} exited before it was ready:\n{self.log()[-2000:]}"
                        )
                    if line.startswith(b"READY "):
                        return
        except TimeoutError:
            raise RuntimeError(
                f"{self.name} not ready after {timeout_s}s:\n{self.log()[-2000:]}"
            ) from None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the running process.

        Raises:
            RuntimeError: the process is not running.
        """
        if self.process is None or self.process.returncode is not None:
            raise RuntimeError(f"{self.name} is not running")
        self.process.send_signal(sig)

    async def wait(self, timeout_s: float) -> int:
        """Wait for the process to exit; returns its exit code."""
        process = self.process
        assert process is not None
        async with asyncio.timeout(timeout_s):
            return await process.wait()

    def kill(self) -> None:
        """SIGKILL the process if it runs (a paused one too)."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def reap(self) -> None:
        """Wait for a killed process to exit."""
        if self.process is not None:
            await self.process.wait()
