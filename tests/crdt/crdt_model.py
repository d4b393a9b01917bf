"""Random histories of CRDT replicas for the property tests.

A *spec* describes one CRDT type: how to make an empty value, a strategy of operations
(plain data) and how to run one operation as a given replica. ``histories`` draws a run
of three replicas that mutate, merge each other's full states and apply each other's
deltas in random order, and returns their states plus every delta produced (the states
are reachable ones, which is what the laws are about).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from hypothesis import strategies as st

from phoenix_cluster import crdt

REPLICAS = ["a", "b", "c"]
ELEMENTS = ["x", "y", "z"]
KEYS = ["k1", "k2"]

Op = tuple[Any, ...]


@dataclass(frozen=True)
class Spec:
    name: str
    new: Callable[[], crdt.Crdt]
    ops: st.SearchStrategy[Op]
    run: Callable[[Any, Op, str], crdt.Crdt]

    def __repr__(self) -> str:
        return self.name


def _run_gcounter(c: crdt.GCounter, op: Op, r: str) -> crdt.Crdt:
    return c.increment(op[1], replica=r)


def _run_pncounter(c: crdt.PNCounter, op: Op, r: str) -> crdt.Crdt:
    if op[0] == "inc":
        return c.increment(op[1], replica=r)
    return c.decrement(op[1], replica=r)


def _run_gset(s: crdt.GSet[str], op: Op, r: str) -> crdt.Crdt:
    return s.add(op[1], replica=r)


def _run_twopset(s: crdt.TwoPSet[str], op: Op, r: str) -> crdt.Crdt:
    if op[0] == "add":
        return s.add(op[1], replica=r)
    return s.remove(op[1], replica=r)


def _run_orset(s: crdt.ORSet[str], op: Op, r: str) -> crdt.Crdt:
    if op[0] == "add":
        return s.add(op[1], replica=r)
    if op[0] == "remove":
        return s.remove(op[1])
    return s.clear()


def _run_lww(reg: crdt.LWWRegister[str], op: Op, r: str) -> crdt.Crdt:
    return reg.set(op[1], replica=r, timestamp=op[2])


def _run_mv(reg: crdt.MVRegister[str], op: Op, r: str) -> crdt.Crdt:
    return reg.set(op[1], replica=r)


def _run_lwwmap(m: crdt.LWWMap[str, int], op: Op, r: str) -> crdt.Crdt:
    if op[0] == "set":
        return m.set(op[1], op[2], replica=r, timestamp=op[3])
    return m.remove(op[1])


def _increments() -> st.SearchStrategy[int]:
    return st.integers(1, 5)


GCOUNTER = Spec("GCounter", crdt.GCounter, st.tuples(st.just("inc"), _increments()),
                _run_gcounter)
PNCOUNTER = Spec("PNCounter", crdt.PNCounter,
                 st.tuples(st.sampled_from(["inc", "dec"]), _increments()), _run_pncounter)
GSET = Spec("GSet", crdt.GSet[str], st.tuples(st.just("add"), st.sampled_from(ELEMENTS)),
            _run_gset)
TWOPSET = Spec("TwoPSet", crdt.TwoPSet[str],
               st.tuples(st.sampled_from(["add", "add", "remove"]), st.sampled_from(ELEMENTS)),
               _run_twopset)
ORSET = Spec("ORSet", crdt.ORSet[str],
             st.one_of(
                 st.tuples(st.sampled_from(["add", "add", "remove"]), st.sampled_from(ELEMENTS)),
                 st.just(("clear",)),
             ),
             _run_orset)
# Few timestamps, so equal-timestamp ties between replicas are common.
LWWREG = Spec("LWWRegister", crdt.LWWRegister[str],
              st.tuples(st.just("set"), st.sampled_from(ELEMENTS), st.integers(0, 2)), _run_lww)
MVREG = Spec("MVRegister", crdt.MVRegister[str],
             st.tuples(st.just("set"), st.sampled_from(ELEMENTS)), _run_mv)
LWWMAP = Spec("LWWMap", crdt.LWWMap[str, int],
              st.one_of(
                  st.tuples(st.just("set"), st.sampled_from(KEYS), st.integers(0, 9),
                            st.integers(0, 2)),
                  st.tuples(st.just("remove"), st.sampled_from(KEYS)),
              ),
              _run_lwwmap)

LEAVES = [GCOUNTER, PNCOUNTER, GSET, TWOPSET, ORSET, LWWREG, MVREG, LWWMAP]
_LEAF_KINDS: dict[str, tuple[type[crdt.Crdt], Spec]] = {
    s.name: (type(s.new()), s) for s in LEAVES
}


def _map_ops(depth: int) -> st.SearchStrategy[Op]:
    nested: list[st.SearchStrategy[Op]] = [
        st.tuples(st.just("update"), st.sampled_from(KEYS), st.just(s.name), s.ops)
        for s in LEAVES
    ]
    if depth > 0:
        nested.append(
            st.tuples(st.just("update"), st.sampled_from(KEYS), st.just("ORMap"),
                      _map_ops(depth - 1))
        )
    return st.one_of(*nested, st.tuples(st.just("remove"), st.sampled_from(KEYS)))


def _run_ormap(m: crdt.ORMap[str], op: Op, r: str) -> crdt.Crdt:
    if op[0] == "remove":
        return m.remove(op[1])
    _, key, kind_name, inner = op
    if kind_name == "ORMap":
        return m.update(key, crdt.ORMap, lambda v: cast("crdt.ORMap[str]", _run_ormap(v, inner, r)))
    kind, spec = _LEAF_KINDS[kind_name]
    return m.update(key, kind, lambda v: spec.run(v, inner, r))


ORMAP = Spec("ORMap", crdt.ORMap[str], _map_ops(1), _run_ormap)

ALL = [*LEAVES, ORMAP]


@dataclass
class History:
    states: list[crdt.Crdt]
    deltas: list[crdt.Crdt]


@st.composite
def histories(draw: st.DrawFn, spec: Spec, max_steps: int = 25) -> History:
    """Three replicas mutating, merging full states and applying random deltas."""
    states = [spec.new() for _ in REPLICAS]
    deltas: list[crdt.Crdt] = []
    steps: list[tuple[Any, ...]] = draw(st.lists(
        st.one_of(
            st.tuples(st.just("op"), st.integers(0, 2), spec.ops),
            st.tuples(st.just("op"), st.integers(0, 2), spec.ops),
            st.tuples(st.just("merge"), st.integers(0, 2), st.integers(0, 2)),
            st.tuples(st.just("delta"), st.integers(0, 2), st.integers(0, 10**6)),
        ),
        max_size=max_steps,
    ))
    for kind, i, arg in steps:
        if kind == "op":
            deltas.append(spec.run(states[i], arg, REPLICAS[i]))
        elif kind == "merge":
            states[i].merge(states[arg])
        elif deltas:
            states[i].merge(deltas[arg % len(deltas)])
    return History(states, deltas)


def join_all(values: list[crdt.Crdt], start: crdt.Crdt) -> crdt.Crdt:
    acc = start
    for v in values:
        acc.merge(v)
    return acc
