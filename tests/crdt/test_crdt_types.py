"""What each type promises: add-wins, kept concurrent values, deterministic ties, counts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster import crdt

TYPES = settings(max_examples=40, deadline=None)


def _fork(value: crdt.Crdt, n: int = 2) -> list[crdt.Crdt]:
    return [value.copy() for _ in range(n)]


@TYPES
@given(
    incs=st.lists(st.tuples(st.sampled_from("abc"), st.integers(-5, 5)), max_size=30),
    order=st.randoms(use_true_random=False),
)
def test_counters_sum_every_replicas_changes(incs: list[tuple[str, int]],
                                             order: random.Random) -> None:
    replicas = {r: (crdt.GCounter(), crdt.PNCounter()) for r in "abc"}
    deltas: list[crdt.Crdt] = []
    for r, by in incs:
        g, pn = replicas[r]
        deltas.append(g.increment(abs(by), replica=r))
        deltas.append(pn.increment(by, replica=r))
    g_all, pn_all = crdt.GCounter(), crdt.PNCounter()
    order.shuffle(deltas)
    for d in deltas:
        if isinstance(d, crdt.GCounter):
            g_all.merge(d)
        else:
            assert isinstance(d, crdt.PNCounter)
            pn_all.merge(d)
    assert g_all.value == sum(abs(by) for _, by in incs)
    assert pn_all.value == sum(by for _, by in incs)


def test_counter_argument_errors() -> None:
    c = crdt.GCounter()
    with pytest.raises(ValueError, match="cannot decrease"):
        c.increment(-1, replica="a")
    with pytest.raises(TypeError, match="int"):
        c.increment(1.5, replica="a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        c.increment(replica="")
    with pytest.raises(TypeError, match="str"):
        c.increment(replica=7)  # type: ignore[arg-type]
    assert c.increment(0, replica="a").is_bottom() and c.value == 0
    pn = crdt.PNCounter()
    pn.decrement(3, replica="a")
    pn.increment(-2, replica="a")
    assert pn.value == -5


def test_orset_concurrent_add_wins_over_remove() -> None:
    s = crdt.ORSet[str]()
    s.add("x", replica="a")
    left, right = _fork(s)
    assert isinstance(left, crdt.ORSet) and isinstance(right, crdt.ORSet)
    removal = left.remove("x")
    re_add = right.add("x", replica="b")
    assert "x" not in left and "x" in right
    left.merge(re_add)
    right.merge(removal)
    assert left == right and left.value == {"x"}
    # A remove that has seen the add does remove it.
    seen = left.remove("x")
    right.merge(seen)
    assert right.value == frozenset() and len(right) == 0


def test_orset_remove_of_absent_element_is_an_empty_delta() -> None:
    s = crdt.ORSet[int]()
    assert s.remove(1).is_bottom()
    s.add(1, replica="a")
    s.add(2, replica="a")
    cleared = s.clear()
    assert len(cleared.context) == 2 and s.value == frozenset()


def test_gset_and_twopset() -> None:
    g = crdt.GSet[str]()
    assert not g.add("x", replica="a").is_bottom()
    assert g.add("x", replica="b").is_bottom()
    assert set(g) == {"x"} and "x" in g

    t = crdt.TwoPSet[str]()
    t.add("x", replica="a")
    left, right = _fork(t)
    assert isinstance(left, crdt.TwoPSet) and isinstance(right, crdt.TwoPSet)
    left.remove("x", replica="a")
    right.add("y", replica="b")
    right.merge(left)
    assert right.value == {"y"} and right.removed() == {"x"}
    assert right.add("x", replica="b").is_bottom()  # removed for good
    assert right.remove("x", replica="b").is_bottom()
    assert "x" not in right and list(right) == ["y"] and len(right) == 1
    # Removing first keeps a later add out, and a concurrent add loses.
    u = crdt.TwoPSet[str]()
    u.remove("z", replica="a")
    assert u.add("z", replica="a").is_bottom() and "z" not in u
    v = crdt.TwoPSet[str]()
    v.add("z", replica="b")
    assert (u | v).value == frozenset()


def test_mvregister_keeps_concurrent_values_until_overwritten() -> None:
    r = crdt.MVRegister[str]()
    r.set("start", replica="a")
    left, right = _fork(r)
    assert isinstance(left, crdt.MVRegister) and isinstance(right, crdt.MVRegister)
    left.set("L", replica="a")
    right.set("R", replica="b")
    both = left | right
    assert both.value == ["L", "R"] and (right | left).value == ["L", "R"]
    both.set("merged", replica="b")
    assert both.value == ["merged"]
    left.merge(both)
    assert left.value == ["merged"]


@TYPES
@given(
    ts=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    ids=st.permutations(["n1", "n2"]),
    merge_left_first=st.booleans(),
)
def test_lww_register_breaks_ties_the_same_way_everywhere(
    ts: tuple[int, int], ids: list[str], merge_left_first: bool
) -> None:
    left, right = crdt.LWWRegister[str](), crdt.LWWRegister[str]()
    left.set(ids[0], replica=ids[0], timestamp=ts[0])
    right.set(ids[1], replica=ids[1], timestamp=ts[1])
    joined = left | right if merge_left_first else right | left
    expected = max([(ts[0], ids[0]), (ts[1], ids[1])])
    assert joined.value == expected[1]
    assert joined.timestamp == expected[0]


def test_lww_register_causal_write_wins_over_a_higher_timestamp_it_saw() -> None:
    r = crdt.LWWRegister[str]()
    assert r.value is None and r.timestamp is None
    r.set("early", replica="a", timestamp=100)
    delta = r.set("late", replica="b", timestamp=5)  # a skewed clock, but it saw "early"
    other = crdt.LWWRegister[str]()
    other.set("early", replica="a", timestamp=100)
    other.merge(delta)
    assert r.value == other.value == "late"
    with pytest.raises(TypeError, match="timestamp"):
        r.set("x", replica="a", timestamp=1.5)
    assert isinstance(crdt.LWWRegister[int]().set(1, replica="a").timestamp, int)


def test_lwwmap_set_remove_and_concurrent_set_wins() -> None:
    m = crdt.LWWMap[str, int]()
    m.set("x", 1, replica="a", timestamp=1)
    m.set("y", 2, replica="a", timestamp=1)
    left, right = _fork(m)
    assert isinstance(left, crdt.LWWMap) and isinstance(right, crdt.LWWMap)
    left.remove("x")
    right.set("x", 10, replica="b", timestamp=0)
    right.set("y", 20, replica="b", timestamp=0)
    left.merge(right)
    assert left.value == {"x": 10, "y": 20}
    assert left.get("x") == 10 and left.get("nope", -1) == -1 and "y" in left
    assert sorted(left) == ["x", "y"] and len(left) == 2
    assert left.remove("nope").is_bottom()


def test_ormap_nested_values_and_update_wins_over_remove() -> None:
    m = crdt.ORMap[str]()
    m.update("cart", crdt.ORSet, lambda s: s.add("apple", replica="a"))
    m.update("n", crdt.PNCounter, lambda c: c.increment(5, replica="a"))
    left, right = _fork(m)
    assert isinstance(left, crdt.ORMap) and isinstance(right, crdt.ORMap)
    left.remove("cart")
    left.remove("n")
    right.update("cart", crdt.ORSet, lambda s: s.add("pear", replica="b"))
    left.merge(right)
    # The concurrent add survives the key's removal; the apple the remover saw does not.
    assert left.value == {"cart": {"pear"}}
    assert "cart" in left and "n" not in left and len(left) == 1 and list(left) == ["cart"]
    # A removed counter starts again from zero; the replica that still had 5 agrees.
    left.update("n", crdt.PNCounter, lambda c: c.decrement(1, replica="a"))
    right.merge(left)
    assert right.value == {"cart": {"pear"}, "n": -1}


def test_ormap_concurrent_different_types_under_one_key_are_both_kept() -> None:
    left, right = crdt.ORMap[str](), crdt.ORMap[str]()
    left.update("k", crdt.GCounter, lambda c: c.increment(2, replica="a"))
    right.update("k", crdt.ORSet, lambda s: s.add("v", replica="b"))
    merged = left | right
    assert merged == right | left
    assert merged.kinds("k") == [crdt.GCounter, crdt.ORSet]
    counter = merged.get("k", crdt.GCounter)
    members = merged.get("k", crdt.ORSet)
    assert counter is not None and counter.value == 2
    assert members is not None and members.value == {"v"}
    assert merged.value == {"k": 2}  # the tag that sorts first: "gcounter" < "orset"
    assert merged.get("absent") is None and merged.get("k", crdt.MVRegister) is None


def test_ormap_update_errors_leave_the_map_unchanged() -> None:
    m = crdt.ORMap[str]()
    with pytest.raises(TypeError, match="CRDT type"):
        m.update("k", int, lambda v: v)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="must return"):
        m.update("k", crdt.GCounter, lambda c: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(RuntimeError):
        m.update("k", crdt.GCounter, _boom)
    assert m == crdt.ORMap[str]()


def _boom(c: crdt.GCounter) -> crdt.GCounter:
    raise RuntimeError("fn failed")


def test_ormap_nested_maps_and_several_changes_in_one_update() -> None:
    m = crdt.ORMap[str]()
    delta = m.update("user", crdt.ORMap, lambda u: (
        u.update("tags", crdt.ORSet, lambda s: s.add("a", replica="n") | s.add("b", replica="n"))
        | u.update("age", crdt.LWWRegister, lambda r: r.set(30, replica="n", timestamp=1))
    ))
    assert m.value == {"user": {"tags": {"a", "b"}, "age": 30}}
    replica = crdt.ORMap[str]()
    replica.merge(delta)
    assert replica == m
    # Nested values never keep a context of their own: the map's context covers them.
    assert all(not v.context for kinds in m.entries.values() for v in kinds.values())


def test_merge_rejects_another_type() -> None:
    with pytest.raises(TypeError, match="cannot merge ORSet into GSet"):
        crdt.GSet[str]().merge(crdt.ORSet[str]())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot compare"):
        crdt.GSet[str]().leq(crdt.ORSet[str]())  # type: ignore[arg-type]


def test_public_namespace() -> None:
    import phoenix_cluster as phx

    assert phx.crdt is crdt
    assert crdt.__all__ == sorted(crdt.__all__)
    for name in crdt.__all__:
        assert hasattr(crdt, name), name
    assert issubclass(crdt.ORMap, crdt.Crdt) and issubclass(crdt.GCounter, crdt.Crdt)
