"""The conflict rule and the owner's store: laws (hypothesis) and edge cases."""

from __future__ import annotations

import itertools
import random
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster._registry.entries import (
    Entry,
    check_name,
    majority,
    name_hash,
    replica_set,
    resolve,
)
from phoenix_cluster._registry.store import NameStore
from phoenix_cluster._ring.ring import HashRing

HOLDERS = ["node-0", "node-1", "node-2", "client-a"]

# Registrations of one name (the rule only ever compares those).
entries = st.builds(
    Entry,
    name=st.just("svc"),
    holder=st.sampled_from(HOLDERS),
    boot=st.just(1),
    ts=st.integers(0, 50),
    rid=st.integers(1, 2**63 - 1),
    kind=st.sampled_from(["", "k"]),
    key=st.text(max_size=3),
)


@given(entries, entries)
def test_resolve_is_commutative(a: Entry, b: Entry) -> None:
    assert resolve(a, b) == resolve(b, a)


@given(entries, entries, entries)
def test_resolve_is_associative(a: Entry, b: Entry, c: Entry) -> None:
    assert resolve(resolve(a, b), c) == resolve(a, resolve(b, c))


@given(entries)
def test_resolve_is_idempotent(a: Entry) -> None:
    assert resolve(a, a) == a


@given(entries, entries)
def test_the_earliest_registration_wins(a: Entry, b: Entry) -> None:
    if a.ts != b.ts:
        assert resolve(a, b).ts == min(a.ts, b.ts)
    elif a.holder != b.holder:
        assert resolve(a, b).holder == min(a.holder, b.holder)


@settings(max_examples=200)
@given(st.lists(entries, min_size=1, max_size=6, unique_by=lambda e: e.rid),
       st.randoms(use_true_random=False))
def test_any_merge_order_leaves_every_store_with_the_same_winner(
    es: list[Entry], rnd: random.Random
) -> None:
    expected = reduce(resolve, es)
    orders = [es, list(reversed(es))]
    shuffled = list(es)
    rnd.shuffle(shuffled)
    orders.append(shuffled)
    for order in orders:
        store = NameStore()
        for e in order:
            store.merge(e, now=0.0)
        assert store.get("svc") == expected


@settings(max_examples=100)
@given(st.lists(entries, min_size=2, max_size=5, unique_by=lambda e: e.rid))
def test_two_owners_that_exchange_entries_converge(es: list[Entry]) -> None:
    # Both sides of a partition hold some registrations; after heal each pushes all it
    # has to the other (hand-off / re-assertion); they must agree.
    left, right = NameStore(), NameStore()
    for i, e in enumerate(es):
        (left if i % 2 else right).merge(e, now=0.0)
    for e in list(left.entries()):
        right.merge(e, now=0.0)
    for e in list(right.entries()):
        left.merge(e, now=0.0)
    assert left.get("svc") == right.get("svc") == reduce(resolve, es)


def exchange(stores: list[NameStore]) -> None:
    """One anti-entropy round: every store sends all its entries and tombstones to every
    other (as a hand-off does: entries merged first, then tombstones buried)."""
    snapshots = [(list(s.entries()), list(s.tombstones())) for s in stores]
    for i, store in enumerate(stores):
        for j, (sent, tombs) in enumerate(snapshots):
            if i != j:
                for e in sent:
                    store.merge(e, now=0.0)
                for name, rid in tombs:
                    store.bury(name, rid, now=0.0)


@settings(max_examples=300)
@given(st.lists(entries, min_size=1, max_size=5, unique_by=lambda e: e.rid),
       st.data())
def test_owners_converge_whatever_they_heard_and_in_which_order(
    es: list[Entry], data: st.DataObject
) -> None:
    # Some registrations get unregistered; three owners each hear some of the entries
    # and tombstones, in their own order; then they exchange what they have.
    buried = data.draw(st.sets(st.sampled_from([e.rid for e in es])))
    ops: list[Entry | int] = [*es, *sorted(buried)]
    stores = [NameStore() for _ in range(3)]
    told: set[int] = set()  # unregistrations some owner heard of
    for store in stores:
        heard = data.draw(st.permutations(ops))
        for op in heard[: data.draw(st.integers(0, len(heard)))]:
            if isinstance(op, Entry):
                store.merge(op, now=0.0)
            else:
                store.bury("svc", op, now=0.0)
                told.add(op)
    exchange(stores)
    exchange(stores)
    live = [s.get("svc") for s in stores]
    assert live[0] == live[1] == live[2]
    # Whatever survives was not unregistered anywhere.
    if live[0] is not None:
        assert live[0].rid not in told


def test_merge_reports_what_happened() -> None:
    store = NameStore()
    early = Entry("svc", "node-1", 1, 100, 7)
    late = Entry("svc", "node-2", 1, 200, 8)
    assert store.merge(late, 0.0).outcome == "stored"
    assert store.merge(late, 0.0).outcome == "same"
    result = store.merge(early, 0.0)
    assert (result.outcome, result.winner, result.loser) == ("replaced", early, late)
    # The loser is buried: a late copy of it is refused from now on.
    assert store.merge(late, 0.0).outcome == "buried"
    other = Entry("svc", "node-3", 1, 300, 9)
    result = store.merge(other, 0.0)
    assert (result.outcome, result.winner, result.loser) == ("kept", early, other)
    assert store.held_by("node-2") == []
    assert store.held_by("node-1") == [early]


def test_a_tombstone_refuses_late_copies_until_it_expires() -> None:
    store = NameStore(ttl_s=10.0)
    e = Entry("svc", "node-1", 1, 100, 7)
    store.merge(e, 0.0)
    assert store.bury("svc", 7, now=0.0) == e
    assert store.get("svc") is None
    assert store.merge(e, 1.0).outcome == "buried"
    # A new registration of the same name is a different rid: allowed.
    fresh = Entry("svc", "node-2", 1, 300, 9)
    assert store.merge(fresh, 1.0).outcome == "stored"
    assert store.expire(5.0) == 0
    assert store.expire(10.0) == 1
    assert list(store.tombstones()) == []


def test_releasing_a_holder_keeps_cluster_lifetime_names() -> None:
    store = NameStore()
    store.merge(Entry("a", "node-1", 1, 1, 1), 0.0)
    store.merge(Entry("b", "node-1", 1, 1, 2, linked=False), 0.0)
    store.merge(Entry("c", "node-2", 1, 1, 3), 0.0)
    released = store.release_holder("node-1")
    assert [e.name for e in released] == ["a"]
    assert store.names() == ["b", "c"]


def test_a_newer_boot_of_a_holder_releases_its_previous_life() -> None:
    store = NameStore()
    store.merge(Entry("old", "node-1", 1, 1, 1), 0.0)
    assert store.merge(Entry("new", "node-1", 2, 5, 2), 0.0).outcome == "stored"
    assert store.names() == ["new"]
    # A late copy from the old life is refused.
    assert store.merge(Entry("old", "node-1", 1, 1, 1), 0.0).outcome == "stale"


def test_names_by_prefix_and_drop() -> None:
    store = NameStore()
    for i, name in enumerate(["svc/a", "svc/b", "db/a"]):
        store.merge(Entry(name, "n", 1, 1, i + 1), 0.0)
    store.bury("db/a", 99, 0.0)  # a tombstone for another rid keeps the live entry
    assert store.names("svc/") == ["svc/a", "svc/b"]
    assert store.drop("db/a") is not None
    assert "db/a" not in store
    assert list(store.tombstones()) == []


def test_replica_sets_are_stable_and_bounded_by_the_ring() -> None:
    ring = HashRing(["a", "b", "c", "d"])
    sets = {name: replica_set(ring, name) for name in (f"n{i}" for i in range(200))}
    assert all(len(s) == 3 and len(set(s)) == 3 for s in sets.values())
    assert sets == {name: replica_set(HashRing(["d", "c", "b", "a"]), name) for name in sets}
    assert {s[0] for s in sets.values()} == {"a", "b", "c", "d"}
    assert replica_set(HashRing(["a"]), "x") == ["a"]
    assert replica_set(HashRing([]), "x") == []
    assert name_hash("x") == name_hash("x") != name_hash("y")


def test_majorities() -> None:
    assert [majority(n) for n in range(1, 6)] == [1, 2, 2, 3, 3]


@pytest.mark.parametrize(("name", "error"), [
    (3, TypeError), ("", ValueError), ("x" * 1025, ValueError),
])
def test_bad_names(name: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_name(name)


def test_every_pair_of_holders_orders_the_same_way_everywhere() -> None:
    a = Entry("svc", "node-1", 1, 100, 5)
    b = Entry("svc", "node-0", 1, 100, 6)
    assert all(resolve(x, y) == b for x, y in itertools.permutations([a, b]))
