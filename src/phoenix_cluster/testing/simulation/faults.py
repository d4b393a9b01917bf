"""What a simulation does to the cluster: the ``--faults`` plan and the event trace.

A plan is parsed from one comma-separated string, the same on the command line and in
Python, so the one-line replay command of a failing run is the run itself::

    loss=0.01,dup=0.01,delay=0.5-30,partition,pause,crash,crash-disk

- ``loss=P``: each datagram (gossip) or frame (node to node) is lost with probability P;
- ``dup=P``: each datagram is delivered twice with probability P;
- ``delay=LO-HI``: one-way latency in milliseconds, drawn per datagram, so datagrams
  overtake each other (reordering); frames on one connection keep their order (TCP);
- ``partition``: a third of the members is cut off from the rest for a while, then the
  network heals;
- ``pause``: members freeze (SIGSTOP, a long GC pause) and wake later;
- ``crash``: members crash and come back without their disk (a new machine);
- ``crash-disk``: members crash and come back with their disk (a process restart);
- ``overlap``: the whole-node layer strikes its faults back to back instead of waiting
  for the cluster to settle after each (two replicas of a partition may be down at once);
- ``none``: no fault at all (latency stays at its default).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import IO

__all__ = ["DEFAULT_FAULTS", "FaultPlan", "TraceRecorder"]

DEFAULT_FAULTS = "loss=0.01,dup=0.01,delay=0.5-30,partition,pause,crash,crash-disk"
"""The plan ``phx simulate`` runs when ``--faults`` is not given: every kind of fault."""

_SWITCHES = ("partition", "pause", "crash", "crash-disk", "overlap")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults of one run (see the module docstring for the syntax).

    Attributes:
        loss: probability that one datagram or frame is lost.
        duplicate: probability that one datagram is delivered twice.
        latency_ms: one-way latency range of a datagram, milliseconds.
        partition, pause, crash, crash_disk: whether the run cuts the network, freezes
            members, crashes members that come back empty, or with their disk.
        overlap: whether the whole-node layer's faults follow each other without
            waiting for the cluster to settle.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    latency_ms: tuple[float, float] = (0.5, 3.0)
    partition: bool = False
    pause: bool = False
    crash: bool = False
    crash_disk: bool = False
    overlap: bool = False

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """Read a plan from its string form.

        Raises:
            ValueError: an unknown fault, a probability outside [0, 1), or a latency
                range that is not ``LO-HI`` with ``0 <= LO <= HI``; the message names it.
        """
        values: dict[str, object] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part or part == "none":
                continue
            name, _, value = part.partition("=")
            if name in _SWITCHES and not value:
                values[name.replace("-", "_")] = True
            elif name in ("loss", "dup") and value:
                values["loss" if name == "loss" else "duplicate"] = _probability(name, value)
            elif name == "delay" and value:
                values["latency_ms"] = _latency(value)
            else:
                raise ValueError(f"unknown fault {part!r}: expected loss=P, dup=P, "
                                 f"delay=LO-HI (ms), {', '.join(_SWITCHES)} or none")
        return cls(**values)  # type: ignore[arg-type]

    def __str__(self) -> str:
        parts = []
        if self.loss:
            parts.append(f"loss={self.loss!r}")
        if self.duplicate:
            parts.append(f"dup={self.duplicate!r}")
        if self.latency_ms != (0.5, 3.0):
            parts.append(f"delay={self.latency_ms[0]!r}-{self.latency_ms[1]!r}")
        parts += [name for name in _SWITCHES if getattr(self, name.replace("-", "_"))]
        return ",".join(parts) or "none"


def _probability(name: str, value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: not a number") from None
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name}={value!r}: a probability must be in [0, 1)")
    return p


def _latency(value: str) -> tuple[float, float]:
    lo_text, sep, hi_text = value.partition("-")
    try:
        lo, hi = float(lo_text), float(hi_text if sep else lo_text)
    except ValueError:
        raise ValueError(f"delay={value!r}: expected LO-HI in milliseconds") from None
    if not 0.0 <= lo <= hi:
        raise ValueError(f"delay={value!r}: expected 0 <= LO <= HI")
    return lo, hi


class TraceRecorder:
    """The event trace of a run: every line (and the bytes it carries) goes into one
    SHA-256, and, when ``out`` is given, to that text file (bytes as hex).

    Two runs with the same seed and plan give the same :attr:`sha256`.
    """

    def __init__(self, out: IO[str] | None = None) -> None:
        self._hash = hashlib.sha256()
        self._out = out
        self.events = 0

    def __call__(self, line: str, body: bytes = b"") -> None:
        self.events += 1
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        if body:
            self._hash.update(body)
        if self._out is not None:
            self._out.write(f"{line} {body.hex()}\n" if body else f"{line}\n")

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()
