"""The links of the in-memory network: which node reaches which, and how badly.

:class:`LinkModel` holds the faults a test injects between node names, and answers for
every frame and datagram whether it gets through: cuts between two sides (or one side
and everyone else), a probability of loss and a delay per direction (drawn from the
network's seeded random source), and the nodes killed. It knows nothing of connections
or endpoints: :class:`~.memory.MemoryNetwork` builds on it, and its connections and
gossip endpoints ask it. ``trace``, when set, receives one line per frame and datagram
sent, with its encoded bytes.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

__all__ = ["LinkModel"]


class LinkModel:
    """Cuts, loss, delay and deaths between node names.

    Args:
        seed: seeds the random source of ``loss``.
    """

    def __init__(self, *, seed: int = 0) -> None:
        self.random = random.Random(seed)
        self._cuts: list[tuple[frozenset[str], frozenset[str]]] = []
        self._links: dict[tuple[str, str], tuple[float, float]] = {}  # (loss, delay_s)
        self._dead: set[str] = set()
        self.default_link = (0.0, 0.0)
        """``(loss, delay_s)`` of every link :meth:`set_link` did not set."""
        self.trace: Callable[[str, bytes], None] | None = None

    def cut(self, side: Iterable[str], other: Iterable[str] | None = None) -> None:
        """Lose everything between ``side`` and ``other`` (default: everyone else)."""
        a = frozenset(side)
        b = frozenset(other) if other is not None else frozenset()
        self._cuts.append((a, b))

    def heal(self) -> None:
        """Remove every cut."""
        self._cuts.clear()

    def set_link(self, source: str, target: str, *, loss: float = 0.0,
                 delay_s: float = 0.0, both: bool = True) -> None:
        """Lose (``loss``, a probability) or delay what ``source`` sends ``target``."""
        if not 0.0 <= loss <= 1.0 or delay_s < 0:
            raise ValueError(f"loss must be in [0, 1] and delay_s >= 0, got {loss}, {delay_s}")
        self._links[(source, target)] = (loss, delay_s)
        if both:
            self._links[(target, source)] = (loss, delay_s)

    def reachable(self, source: str, target: str) -> bool:
        """Whether anything ``source`` sends ``target`` can arrive (no cut, no death)."""
        if source in self._dead or target in self._dead:
            return False
        for a, b in self._cuts:
            if b:
                if (source in a and target in b) or (source in b and target in a):
                    return False
            elif (source in a) != (target in a):
                return False
        return True

    def loses(self, source: str, target: str) -> bool:
        """Whether the next frame or datagram from ``source`` to ``target`` is lost."""
        loss = self._links.get((source, target), self.default_link)[0]
        return loss > 0.0 and self.random.random() < loss

    def delay(self, source: str, target: str) -> float:
        """How long what ``source`` sends ``target`` travels."""
        return self._links.get((source, target), self.default_link)[1]
