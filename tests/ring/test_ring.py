"""The hash ring: stable hashing, balance, minimal movement, determinism, bounded load."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import phoenix_cluster._ring.circle as circle_module
from phoenix_cluster._membership.snapshot import Member, MembershipSnapshot, MemberStatus
from phoenix_cluster._ring.hashing import HASH_SPACE, key_hash, stable_hash64
from phoenix_cluster._ring.ring import EmptyRing, HashRing

# 100,000 random keys, hashed once: the sample for measured shares and movement.
_rng = random.Random(20240601)
KEYS = [f"user-{_rng.getrandbits(64):016x}" for _ in range(100_000)]
KEY_HASHES = [key_hash("counter", k) for k in KEYS]
FEW_HASHES = KEY_HASHES[:10_000]

# What 160 vnodes can promise (docs/design/ring.md). One member's share relative to the
# mean is about Gamma(160, 1/160): sd 7.9%. Measured over random member sets, the largest
# member is above 1.3x the mean in 0.07% of 10-member sets (30,000 tried, worst 1.38) and
# 1.9% of 100-member sets (1,000 tried, worst 1.44); "node-0".."node-99" gives 1.31. So
# 1.3x is the typical case, not a guarantee; the tests assert bounds that a random member
# set exceeds with probability below 1e-7 (exact arcs) and 1e-6 (100,000 sampled keys).
EXACT_BOUND = 1.55
SAMPLED_BOUND = 1.6

names = st.text(min_size=1, max_size=12)


def _seeded_names(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [f"node-{rng.getrandbits(48):012x}" for _ in range(n)]


def _counts(ring: HashRing, hashes: list[int]) -> Counter[str]:
    return Counter(map(ring.owner, hashes))


def _same_layout(a: HashRing, b: HashRing) -> bool:
    return a == b and a._points == b._points and a._owners == b._owners


# -- hashing -------------------------------------------------------------------------------


def test_stable_hash64_is_blake2b_64_big_endian() -> None:
    # Golden values: any platform or Python version must compute exactly these.
    assert stable_hash64(b"") == 0xE4A6A0577479B2B4
    assert stable_hash64("node-1#0") == stable_hash64(b"node-1#0") == 0x340ECC44EFB8946F
    assert stable_hash64("é") == 0xCB1ABF8BEFF3192F
    assert key_hash("counter", "alice") == 0xE8DBA0C2A6CA03A9


def test_lone_surrogates_hash_instead_of_raising() -> None:
    assert 0 <= stable_hash64("\ud800") < HASH_SPACE


@given(st.text(), st.text(), st.text(), st.text())
def test_key_hash_encodes_the_pair_unambiguously(k1: str, key1: str, k2: str, key2: str) -> None:
    if (k1, key1) != (k2, key2):
        assert key_hash(k1, key1) != key_hash(k2, key2)
    assert 0 <= key_hash(k1, key1) < HASH_SPACE


def test_key_hash_separates_concatenations() -> None:
    assert key_hash("ab", "c") != key_hash("a", "bc")
    assert key_hash("", "abc") != key_hash("abc", "")


# -- lookups -------------------------------------------------------------------------------


def test_empty_ring_raises_lookup_error() -> None:
    ring = HashRing([])
    assert issubclass(EmptyRing, LookupError)
    with pytest.raises(EmptyRing, match="no members"):
        ring.owner(0)
    with pytest.raises(EmptyRing):
        ring.replicas(0, 3)
    with pytest.raises(EmptyRing):
        ring.owner_bounded(0, {})
    assert ring.statistics().max_over_mean == 0.0
    assert len(ring) == 0
    assert ring.shares() == {}


def test_bad_inputs_get_clear_errors() -> None:
    ring = HashRing(["a", "b"])
    with pytest.raises(ValueError, match=r"outside \[0, 2\*\*64\)"):
        ring.owner(HASH_SPACE)
    with pytest.raises(ValueError, match="outside"):
        ring.owner(-1)
    with pytest.raises(ValueError, match="replica count"):
        ring.replicas(0, 0)
    with pytest.raises(ValueError, match="vnodes"):
        HashRing(["a"], vnodes=0)
    with pytest.raises(ValueError, match="non-empty str"):
        HashRing([""])
    with pytest.raises(TypeError, match="single str"):
        HashRing("abc")
    with pytest.raises(ValueError, match="finite number >= 1"):
        ring.owner_bounded(0, {}, c=0.9)
    with pytest.raises(ValueError, match="finite number >= 1"):
        ring.owner_bounded(0, {}, c=math.nan)


def test_vnode_points_are_the_documented_hashes() -> None:
    ring = HashRing(["a", "b"], vnodes=4)
    expected = sorted((stable_hash64(f"{m}#{i}"), m) for m in ("a", "b") for i in range(4))
    assert list(zip(ring._points, ring._owners, strict=True)) == expected


def test_owner_is_first_point_clockwise_and_wraps() -> None:
    ring = HashRing(["a", "b", "c"], vnodes=2)
    points, owners = ring._points, ring._owners
    for i, p in enumerate(points):
        assert ring.owner(p) == owners[i]  # a point owns itself
        assert ring.owner((p + 1) % HASH_SPACE) == owners[(i + 1) % len(points)]
    if points[-1] < HASH_SPACE - 1:
        assert ring.owner(HASH_SPACE - 1) == owners[0]  # past the last point: wrap to 0


@settings(max_examples=30, deadline=None)
@given(st.lists(names, min_size=1, max_size=12, unique=True), st.integers(1, 6))
def test_replicas_distinct_and_start_with_owner(members: list[str], n: int) -> None:
    ring = HashRing(members, vnodes=20)
    for h in FEW_HASHES[:300]:
        reps = ring.replicas(h, n)
        assert len(reps) == min(n, len(members))
        assert len(set(reps)) == len(reps)
        assert reps[0] == ring.owner(h)
        assert set(reps) <= set(members)


def test_value_api() -> None:
    ring = HashRing(["b", "a", "a"], version=7)
    assert ring.members == ("a", "b")
    assert len(ring) == 2
    assert "a" in ring
    assert "z" not in ring
    assert ring.version == 7
    assert ring.vnodes == 160
    assert ring == HashRing(["a", "b"], version=1)  # version is not compared
    assert hash(ring) == hash(HashRing(["a", "b"]))
    assert ring != HashRing(["a", "b"], vnodes=10)
    assert repr(ring) == "<HashRing v7 [2 members x 160 vnodes: a, b]>"
    big = HashRing([f"n{i}" for i in range(7)])
    assert repr(big) == "<HashRing v0 [7 members x 160 vnodes: n0, n1, n2, n3, n4, ... (+2)]>"
    assert repr(HashRing()) == "<HashRing v0 [0 members x 160 vnodes]>"
    assert math.isclose(sum(ring.shares().values()), 1.0)
    assert ring.share("z") == 0.0
    assert HashRing(["solo"]).share("solo") == 1.0
    stats = ring.statistics()
    assert (stats.version, stats.members, stats.vnodes, stats.points) == (7, 2, 160, 320)
    assert stats.min_share <= 0.5 <= stats.max_share
    assert math.isclose(stats.max_over_mean, stats.max_share * 2)


def test_from_snapshot_places_alive_and_suspect_members_only() -> None:
    snapshot = MembershipSnapshot(
        version=42,
        members=(
            Member("a", "127.0.0.1:1", "alive", 1),
            Member("b", "127.0.0.1:2", "suspect", 1),
            Member("c", "127.0.0.1:3", "dead", 1),
            Member("d", "127.0.0.1:4", "left", 1),
            Member("e", "127.0.0.1:5", "alive", 1, role="client"),
        ),
    )
    ring = HashRing.from_snapshot(snapshot)
    assert ring.members == ("a", "b")
    assert ring.version == 42
    alive_only: tuple[MemberStatus, ...] = ("alive",)
    assert HashRing.from_snapshot(snapshot, statuses=alive_only).members == ("a",)


# -- balance -------------------------------------------------------------------------------


def _check_balance(ring: HashRing, n: int) -> None:
    shares = ring.shares()
    exact = max(shares.values()) * n
    assert exact == pytest.approx(ring.statistics().max_over_mean)
    assert exact <= EXACT_BOUND, f"exact max/mean {exact:.3f} for {ring!r}"
    counts = _counts(ring, KEY_HASHES)
    sampled = max(counts.values()) * n / len(KEY_HASHES)
    assert sampled <= SAMPLED_BOUND, f"sampled max/mean {sampled:.3f} for {ring!r}"
    # The sampled shares agree with the exact arcs (binomial noise, 6 sd).
    for member, share in shares.items():
        sd = math.sqrt(share * (1 - share) / len(KEY_HASHES))
        assert abs(counts[member] / len(KEY_HASHES) - share) <= 6 * sd + 1e-9


@settings(max_examples=12, deadline=None)
@given(st.lists(names, min_size=10, max_size=10, unique=True))
def test_balance_at_10_members(members: list[str]) -> None:
    _check_balance(HashRing(members), 10)


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**32))
def test_balance_at_100_members(seed: int) -> None:
    _check_balance(HashRing(_seeded_names(seed, 100)), 100)


def test_typical_balance_meets_the_1_3_target() -> None:
    # The target holds for typical sets; see EXACT_BOUND for why it is not a guarantee.
    assert HashRing(f"node-{i}" for i in range(10)).statistics().max_over_mean <= 1.3
    ratios = sorted(
        HashRing(_seeded_names(seed, 100)).statistics().max_over_mean for seed in range(15)
    )
    assert ratios[len(ratios) // 2] <= 1.3


# -- movement ------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(st.lists(names, min_size=1, max_size=40, unique=True), names)
def test_join_moves_only_to_the_new_member(members: list[str], joiner: str) -> None:
    if joiner in members:
        members.remove(joiner)
    if not members:
        return
    before = HashRing(members)
    after = before.with_member(joiner)
    moved = 0
    for h in FEW_HASHES:
        old, new = before.owner(h), after.owner(h)
        if old != new:
            assert new == joiner
            moved += 1
        old_reps, new_reps = before.replicas(h, 3), after.replicas(h, 3)
        # The joiner slots in; everyone else keeps their order (at most the last drops).
        rest = [m for m in new_reps if m != joiner]
        assert rest == old_reps[: len(rest)]
    # About 1/(n+1) of keys move: the joiner's share, measured to binomial precision.
    share = after.share(joiner)
    expected = 1 / (len(members) + 1)
    assert 0.5 * expected < share < 1.6 * expected
    sd = math.sqrt(share * (1 - share) / len(FEW_HASHES))
    assert abs(moved / len(FEW_HASHES) - share) <= 6 * sd + 1e-9


@settings(max_examples=10, deadline=None)
@given(st.lists(names, min_size=2, max_size=40, unique=True), st.data())
def test_leave_moves_only_the_leavers_keys(members: list[str], data: st.DataObject) -> None:
    leaver = data.draw(st.sampled_from(members))
    before = HashRing(members)
    after = before.without_member(leaver)
    for h in FEW_HASHES:
        old = before.owner(h)
        if old != leaver:
            assert after.owner(h) == old
        else:
            assert after.owner(h) != leaver


def test_join_at_100_members_moves_about_1_in_101() -> None:
    ring = HashRing(_seeded_names(1, 100))
    after = ring.with_member("newcomer")
    moved = sum(ring.owner(h) != after.owner(h) for h in KEY_HASHES)
    assert 0.5 / 101 < moved / len(KEY_HASHES) < 1.6 / 101


# -- incremental changes -------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    st.lists(names, max_size=8, unique=True),
    st.lists(st.tuples(st.booleans(), names), max_size=10),
)
def test_incremental_changes_equal_a_fresh_build(
    start: list[str], ops: list[tuple[bool, str]]
) -> None:
    ring = HashRing(start, vnodes=40, version=3)
    current = set(start)
    for add, name in ops:
        new = ring.with_member(name) if add else ring.without_member(name)
        changed = (name not in current) if add else (name in current)
        assert new.version == ring.version + changed
        assert (new is ring) == (not changed)
        ring = new
        current = current | {name} if add else current - {name}
        assert _same_layout(ring, HashRing(current, vnodes=40))


def test_explicit_version_on_change() -> None:
    ring = HashRing(["a"])
    assert ring.with_member("b", version=10).version == 10
    assert ring.without_member("a", version=11).version == 11
    assert ring.with_member("a") is ring
    assert ring.without_member("zz") is ring
    with pytest.raises(ValueError, match="non-empty str"):
        ring.with_member("")


def test_collisions_resolve_by_member_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Squeeze the circle to 50 points so vnodes collide all the time.
    monkeypatch.setattr(circle_module, "stable_hash64", lambda s: stable_hash64(s) % 50)
    members = [f"m{i}" for i in range(8)]
    full = HashRing(members, vnodes=20)
    assert len(full._points) == 160 and len(set(full._points)) < 50
    for p in set(full._points):
        assert full.owner(p) == min(
            m for q, m in zip(full._points, full._owners, strict=True) if q == p
        )
    rng = random.Random(5)
    order = members[:]
    rng.shuffle(order)
    ring = HashRing([], vnodes=20)
    for m in order:
        ring = ring.with_member(m)
    assert _same_layout(ring, full)
    for i, m in enumerate(order[:-1]):
        ring = ring.without_member(m)
        assert _same_layout(ring, HashRing(order[i + 1 :], vnodes=20))
    assert math.isclose(sum(ring.shares().values()), 1.0)


# -- determinism ---------------------------------------------------------------------------

_CHILD = """
import json, sys
from phoenix_cluster._ring.hashing import key_hash
from phoenix_cluster._ring.ring import HashRing
ring = HashRing([f"node-{i}" for i in range(20)])
print(json.dumps([ring.owner(key_hash("counter", f"key-{i}")) for i in range(2000)]))
"""


@pytest.mark.parametrize("seed", ["0", "4242"])
def test_owners_identical_across_processes(seed: str) -> None:
    ring = HashRing([f"node-{i}" for i in range(20)])
    here = [ring.owner(key_hash("counter", f"key-{i}")) for i in range(2000)]
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == here
    # Golden values, so another platform or Python version is checked too.
    assert here[:6] == ["node-0", "node-2", "node-8", "node-16", "node-11", "node-9"]


# -- bounded load --------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    st.lists(names, min_size=1, max_size=15, unique=True),
    st.floats(1.0, 3.0),
    st.integers(1, 600),
)
def test_bounded_load_never_exceeds_the_bound(members: list[str], c: float, items: int) -> None:
    ring = HashRing(members, vnodes=40)
    loads: Counter[str] = Counter({"not-a-member": 10_000})  # ignored
    n = len(members)
    for placed, h in enumerate(FEW_HASHES[:items]):
        chosen = ring.owner_bounded(h, loads, c)
        assert chosen in ring
        loads[chosen] += 1
        assert loads[chosen] <= math.ceil(c * (placed + 1) / n)
    assert max(loads[m] for m in members) <= math.ceil(c * items / n)


def test_bounded_load_with_no_load_is_the_plain_owner() -> None:
    ring = HashRing(_seeded_names(3, 10))
    for h in FEW_HASHES[:500]:
        assert ring.owner_bounded(h, {}) == ring.owner(h)


def test_bounded_load_evens_out_a_skewed_ring() -> None:
    ring = HashRing(_seeded_names(7, 10), vnodes=4)  # few vnodes: badly skewed
    plain = _counts(ring, FEW_HASHES)
    loads: Counter[str] = Counter()
    for h in FEW_HASHES:
        loads[ring.owner_bounded(h, loads, 1.1)] += 1
    assert max(plain.values()) > 1.5 * len(FEW_HASHES) / 10
    assert max(loads.values()) <= math.ceil(1.1 * len(FEW_HASHES) / 10)
