"""A linearizability checker for histories of registers (read / write / compare-and-set).

A history is linearizable when every operation can be given one instant between its
invocation and its completion such that, taken in the order of those instants, the
operations are a legal run of a single sequential register. This module decides that
with the search of Wing and Gong as improved by Lowe ("Testing for linearizability",
2017), the algorithm Knossos and Porcupine use:

- walk the history as a list of call and return events in time order; at a call, try to
  *linearize* that operation now (apply it to the model state); on success remove its
  call and return from the list and start again from the front; reaching a return whose
  operation is not yet linearized means the last choice was wrong: undo it and try the
  next candidate;
- remember every (set of linearized operations, model state) already explored, so a
  configuration reached again along another path is pruned at once (Lowe's cache: the
  sets are bitmasks);
- check each key on its own (linearizability is compositional, Herlihy and Wing's
  locality, which Porcupine calls P-compositionality): a search over one register's
  history instead of the product of all of them;
- a value no read returned and no compare-and-set expected is *unseen*: the register
  cannot tell such values apart, so they all become one state (more cache hits), and
  the ``info`` operations that would write one are interchangeable within their class
  (writes; compare-and-sets from the same expected value): the search only ever applies
  the earliest one still pending of each class. Without this symmetry every timed-out
  write would double the configurations to explore;
- an ``info`` operation is applied only on the way to an acknowledged operation it makes
  legal (any order that applies one and then something that did not need it can apply
  it later, or never), so timed-out operations are not tried at every point of the
  search.

Outcomes follow Jepsen: ``ok`` (the operation happened and returned ``output``), ``fail``
(a definite error: it did not happen, so it is dropped) and ``info`` (an indefinite
error: a timeout, an unknown outcome). An ``info`` operation may take effect at any
instant after its invocation, or never; its output is unknown, so an ``info`` read,
which changes nothing, is dropped as well.

The search is exponential in the worst case (the problem is NP-complete); ``max_steps``
bounds it, and a key whose search ran out is reported as undecided, never as
linearizable. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "KeyResult",
    "Op",
    "OpKind",
    "Outcome",
    "check_history",
    "check_key",
]

Outcome = Literal["ok", "fail", "info"]
OpKind = Literal["read", "write", "cas"]

DEFAULT_MAX_STEPS = 2_000_000
"""Search steps per key before it is reported undecided (seconds of CPU, not minutes)."""


@dataclass(frozen=True, slots=True)
class Op:
    """One operation on a register, as a client saw it.

    ``value`` is what a write writes, or the new value of a compare-and-set;
    ``expected`` is what a compare-and-set compares with; ``output`` is what a read
    returned or whether a compare-and-set swapped (``True``) or found another value
    (``False``). ``complete`` is ``None`` for an ``info`` operation (never known to end).
    """

    key: str
    kind: OpKind
    invoke: float
    complete: float | None
    outcome: Outcome
    value: int | None = None
    expected: int | None = None
    output: int | bool | None = None
    client: int = 0

    def describe(self) -> str:
        if self.kind == "read":
            what = f"read -> {self.output}" if self.outcome == "ok" else "read"
        elif self.kind == "write":
            what = f"write {self.value}"
        else:
            what = f"cas {self.expected}->{self.value}"
            if self.outcome == "ok":
                what += " swapped" if self.output else " refused"
        end = f"{self.complete:.3f}" if self.complete is not None else "?"
        return f"{what} ({self.outcome}, client {self.client}, {self.invoke:.3f}-{end})"


@dataclass
class KeyResult:
    """The verdict on one key's history."""

    key: str
    linearizable: bool | None
    """``True``, ``False``, or ``None`` when the search ran out of ``max_steps``."""
    counts: dict[str, int] = field(default_factory=dict)
    """Operations by outcome (``ok``, ``fail``, ``info``)."""
    steps: int = 0
    """Search steps taken."""
    explanation: str = ""
    """For a violation: how far the longest linearization got and what it could not place."""


_UNSEEN = object()
"""The one state every unseen value becomes (see the module docstring)."""

_NO_CHAIN = object()
"""No info operation applied since the last acknowledged one."""


@dataclass(frozen=True)
class _Move:
    """An operation as the search applies it, its values made canonical."""

    kind: OpKind
    info: bool
    value: object
    expected: object
    output: object

    @property
    def passive(self) -> bool:
        """Never changes the state, whenever it runs."""
        return not self.info and (self.kind == "read"
                                  or (self.kind == "cas" and not self.output))

    def step(self, state: object) -> tuple[bool, object]:
        """The sequential register: may this run on ``state``, and the state after it."""
        if self.kind == "write":
            return True, self.value
        if self.kind == "read":
            return self.output == state, state
        swapped = state == self.expected
        if self.info:
            # An info compare-and-set that took effect swapped; one that found another
            # value changed nothing, which is the same as never taking effect.
            return swapped, self.value
        if self.output:
            return swapped, self.value
        return not swapped, state


def _moves(live: list[Op]) -> tuple[list[_Move], list[object]]:
    """Each operation as a :class:`_Move`, and its symmetry class (``None``: none)."""
    seen = {op.output for op in live if op.kind == "read"}
    seen |= {op.expected for op in live if op.kind == "cas"}

    def canonical(value: object) -> object:
        return value if value in seen else _UNSEEN

    moves = [_Move(op.kind, op.outcome == "info", canonical(op.value), op.expected, op.output)
             for op in live]
    classes: list[object] = [
        (m.kind, m.expected) if m.info and m.value is _UNSEEN else None for m in moves]
    return moves, classes


def check_key(ops: Iterable[Op], *, initial: int | None = None,
              max_steps: int = DEFAULT_MAX_STEPS) -> KeyResult:
    """Is one register's history linearizable? (All ``ops`` must share one key.)"""
    ops = list(ops)
    key = ops[0].key if ops else ""
    counts = {"ok": 0, "fail": 0, "info": 0}
    for op in ops:
        counts[op.outcome] += 1
    # Failed operations did not happen; an info read changes nothing and said nothing.
    live = [op for op in ops
            if op.outcome == "ok" or (op.outcome == "info" and op.kind != "read")]
    n = len(live)
    # Events: (time, 0 for a call / 1 for a return, op index). A call at the same
    # instant as a return sorts first: the two count as concurrent (the permissive
    # reading of equal timestamps). Info operations have no return.
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(live):
        events.append((op.invoke, 0, i))
        if op.outcome == "ok":
            assert op.complete is not None, f"ok operation without completion: {op}"
            events.append((op.complete, 1, i))
    events.sort()
    # A doubly linked list over the events, with a sentinel head at index 0.
    size = len(events) + 1
    nxt = [*range(1, size), -1]
    prv = [-1, *range(size - 1)]
    ev_op = [-1] + [e[2] for e in events]
    ev_ret = [False] + [e[1] == 1 for e in events]
    ret_of = [-1] * n
    for pos in range(1, size):
        if ev_ret[pos]:
            ret_of[ev_op[pos]] = pos

    def lift(pos: int) -> None:
        nxt[prv[pos]] = nxt[pos]
        if nxt[pos] != -1:
            prv[nxt[pos]] = prv[pos]

    def unlift(pos: int) -> None:
        nxt[prv[pos]] = pos
        if nxt[pos] != -1:
            prv[nxt[pos]] = pos

    moves, classes = _moves(live)
    # Per symmetry class, the call positions of its operations not yet linearized.
    pending: dict[object, list[int]] = {}
    for pos in range(1, size):
        if not ev_ret[pos] and classes[ev_op[pos]] is not None:
            pending.setdefault(classes[ev_op[pos]], []).append(pos)

    remaining_ok = counts["ok"]
    state: object = initial
    # The state before the info operations applied since the last acknowledged one.
    chain_from: object = _NO_CHAIN
    linearized = 0
    cache: set[tuple[int, object, object]] = set()
    # (call position, state before it, chain_from before it, forced): a forced step
    # dominated its alternatives.
    stack: list[tuple[int, object, object, bool]] = []
    best: tuple[int, int] = (-1, -1)  # (ok ops linearized, return position that blocked)
    steps = 0
    entry = nxt[0]
    while True:
        if remaining_ok == 0:
            return KeyResult(key, True, counts, steps)
        steps += 1
        if steps > max_steps:
            return KeyResult(key, None, counts, steps,
                             f"undecided after {max_steps:,} search steps")
        dead_end = entry == -1 or ev_ret[entry]
        if not dead_end:
            i = ev_op[entry]
            kin = classes[i]
            if kin is not None and pending[kin][0] != entry:
                entry = nxt[entry]  # an earlier one of its class is still pending
                continue
            move = moves[i]
            legal, after = move.step(state)
            if legal and move.info:
                # An info operation that would change nothing is kept for later; an info
                # write makes the info operations before it useless, so it starts a chain.
                legal = after != state and (move.kind != "write" or chain_from is _NO_CHAIN)
                then = chain_from if chain_from is not _NO_CHAIN else state
            elif legal:
                # After info operations, only an acknowledged one they made legal may
                # follow: any order that applies info operations and then something
                # that did not need them can apply them later, or never.
                legal = chain_from is _NO_CHAIN or not move.step(chain_from)[0]
                then = _NO_CHAIN
            # An acknowledged operation that never changes the state (a read, a refused
            # compare-and-set) is placed as soon as it is legal and never taken back:
            # placing it later can only be harder. (Not a write that happens to change
            # nothing now: later it might.)
            forced = legal and move.passive
            if legal:
                marked = linearized | (1 << i)
                if (marked, after, then) not in cache:
                    cache.add((marked, after, then))
                    stack.append((entry, state, chain_from, forced))
                    state, linearized, chain_from = after, marked, then
                    lift(entry)
                    if kin is not None:
                        pending[kin].pop(0)
                    if ret_of[i] != -1:
                        lift(ret_of[i])
                        remaining_ok -= 1
                    entry = nxt[0]
                    continue
                dead_end = forced
            if not dead_end:
                entry = nxt[entry]
                continue
        # A return of an operation not yet linearized (or the end, where only info
        # operations that cannot apply are left): the last free choice was wrong.
        done = counts["ok"] - remaining_ok
        if entry != -1 and ev_ret[entry] and done > best[0]:
            best = (done, entry)
        while True:
            if not stack:
                return KeyResult(key, False, counts, steps,
                                 _explain(live, ev_op, best, counts))
            entry, state, chain_from, forced = stack.pop()
            i = ev_op[entry]
            linearized &= ~(1 << i)
            if ret_of[i] != -1:
                unlift(ret_of[i])
                remaining_ok += 1
            unlift(entry)
            if classes[i] is not None:
                pending[classes[i]].insert(0, entry)
            if not forced:
                break
        entry = nxt[entry]


def _explain(live: list[Op], ev_op: list[int], best: tuple[int, int],
             counts: dict[str, int]) -> str:
    done, pos = best
    if pos == -1:
        return "no linearization"
    return (f"no linearization: the longest placed {done} of {counts['ok']} acknowledged "
            f"operations, then could not place {live[ev_op[pos]].describe()}")


def check_history(ops: Iterable[Op], *, initial: int | None = None,
                  max_steps: int = DEFAULT_MAX_STEPS) -> dict[str, KeyResult]:
    """Check every key's history on its own (locality); results by key."""
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    return {key: check_key(key_ops, initial=initial, max_steps=max_steps)
            for key, key_ops in by_key.items()}
