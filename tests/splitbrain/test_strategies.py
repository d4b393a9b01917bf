"""Pure split-brain strategies: the issue's cases as tables, and properties over any split."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster._splitbrain.settings import SplitBrainSettings, make_strategy
from phoenix_cluster._splitbrain.strategies import (
    STRATEGY_NAMES,
    DownAll,
    KeepMajority,
    KeepOldest,
    Lease,
    LeaseMajority,
    StaticQuorum,
    Strategy,
)
from phoenix_cluster._splitbrain.view import (
    Decision,
    PartitionView,
    ViewMember,
    address_key,
    seniority_key,
)
from phoenix_cluster.errors import ConfigError


def mem(name: str, ip: int, *, up: float | None = None, client: bool = False,
        port: int = 7100) -> ViewMember:
    """A member at 10.0.0.<ip>:<port>; older members have smaller ``up``."""
    return ViewMember(name, f"10.0.0.{ip}:{port}", "client" if client else "member",
                      float(ip) if up is None else up)


# Five members a..e, a the oldest and the lowest address.
A, B, C, D, E = (mem(n, i) for i, n in enumerate("abcde", start=1))
FIVE = (A, B, C, D, E)


def view_of(self_name: str, members: tuple[ViewMember, ...], here: set[str],
            *, links: tuple[tuple[str, str], ...] = (), lease_holder: str | None = None,
            ) -> PartitionView:
    return PartitionView(
        self_name, members, frozenset(here), frozenset(m.name for m in members) - here,
        frozenset(links), lease_holder,
    )


def split(members: tuple[ViewMember, ...], side: set[str]) -> tuple[PartitionView, PartitionView]:
    """The two symmetric views of a split: from the first member of each side."""
    other = {m.name for m in members} - side
    return (view_of(min(side), members, side), view_of(min(other), members, other))


# ------------------------------------------------------------------------- the view

def test_view_rejects_inconsistent_sets() -> None:
    with pytest.raises(ValueError, match="must be in reachable"):
        PartitionView("a", FIVE, frozenset("bcde"), frozenset("a"))
    with pytest.raises(ValueError, match="must equal members"):
        PartitionView("a", FIVE, frozenset("ab"), frozenset("cd"))
    with pytest.raises(ValueError, match="both reachable and not"):
        PartitionView("a", FIVE, frozenset("abc"), frozenset("cde"))
    with pytest.raises(ValueError, match="repeat"):
        PartitionView("a", (A, A), frozenset("a"), frozenset())
    with pytest.raises(ValueError, match="broken link"):
        PartitionView("a", FIVE, frozenset("abcde"), frozenset(), frozenset({("a", "z")}))


def test_addresses_compare_as_ip_and_port_not_as_text() -> None:
    assert address_key("10.0.0.9:7100") < address_key("10.0.0.10:7100")
    assert address_key("127.0.0.1:7100") < address_key("127.0.0.1:10000")
    assert address_key("10.0.0.1:7100") < address_key("[::1]:7100") < address_key("a.host:1")
    assert address_key("a.host:1") < address_key("no-port")


def test_seniority_puts_members_before_clients_then_age_then_address() -> None:
    old_client = mem("x", 1, up=0, client=True)
    ordered = sorted([old_client, mem("y", 3, up=5), mem("z", 2, up=5), mem("w", 9, up=1)],
                     key=seniority_key)
    assert [m.name for m in ordered] == ["w", "z", "y", "x"]


# ------------------------------------------------------------------- the issue's cases

# (case, strategy, members, this side, expected action for this side, for the other side)
CASES: list[tuple[str, Strategy, tuple[ViewMember, ...], set[str], str, str]] = [
    ("isolated node", KeepMajority(), FIVE, {"c"}, "down_self", "keep"),
    ("isolated node", StaticQuorum(3), FIVE, {"c"}, "down_self", "keep"),
    ("isolated node", KeepOldest(), FIVE, {"c"}, "down_self", "keep"),
    ("isolated oldest, down_if_alone", KeepOldest(), FIVE, {"a"}, "down_self", "keep"),
    ("isolated oldest, stays", KeepOldest(down_if_alone=False), FIVE, {"a"}, "keep",
     "down_self"),
    ("isolated node", DownAll(), FIVE, {"c"}, "down_self", "down_self"),
    ("2|3 split", KeepMajority(), FIVE, {"a", "b"}, "down_self", "keep"),
    ("2|3 split", StaticQuorum(3), FIVE, {"a", "b"}, "down_self", "keep"),
    ("2|3 split, oldest in the 2", KeepOldest(), FIVE, {"a", "b"}, "keep", "down_self"),
    ("2|3 split, quorum 4: nobody", StaticQuorum(4), FIVE, {"a", "b"}, "down_self",
     "down_self"),
    ("6 members, quorum 3: too many", StaticQuorum(3), (*FIVE, mem("f", 6)), {"a", "b", "c"},
     "down_self", "down_self"),
    ("2|3 split", DownAll(), FIVE, {"a", "b"}, "down_self", "down_self"),
]


@pytest.mark.parametrize(
    ("case", "strategy", "members", "side", "here", "there"),
    CASES,
    ids=[f"{c[1].name}: {c[0]}" for c in CASES],
)
def test_issue_cases(case: str, strategy: Strategy, members: tuple[ViewMember, ...],
                     side: set[str], here: str, there: str) -> None:
    this, other = split(members, side)
    got_here, got_there = strategy.decide(this), strategy.decide(other)
    assert (got_here.action, got_there.action) == (here, there), (got_here, got_there)
    for decision, view in ((got_here, this), (got_there, other)):
        assert decision.reason.startswith(strategy.name)
        if decision.survives:
            assert decision.down == view.unreachable


def test_keep_majority_reason_lists_the_inputs() -> None:
    decision = KeepMajority().decide(split(FIVE, {"c", "d", "e"})[0])
    assert decision == Decision.keep(
        "keep-majority: 3 reachable [c, d, e] vs 2 unreachable [a, b]; this side is the "
        "majority",
        down={"a", "b"},
    )


def test_tie_goes_to_the_lowest_address_not_the_lowest_name() -> None:
    # "z" holds 10.0.0.9, "a" holds 10.0.0.10: as text "10.0.0.10" < "10.0.0.9"; as IPs not.
    members = (mem("a", 10), mem("b", 11), mem("y", 12), mem("z", 9))
    mine, theirs = split(members, {"y", "z"})
    won, lost = KeepMajority().decide(mine), KeepMajority().decide(theirs)
    assert won.survives and not lost.survives
    assert won.tie_break == "lowest address 10.0.0.9:7100 (z) is on this side"
    assert lost.tie_break == "lowest address 10.0.0.9:7100 (z) is on the other side"
    assert "equal sides" in won.reason


def test_tie_compares_ports_as_numbers() -> None:
    members = (mem("a", 1, port=10000), mem("b", 1, port=7100))
    mine, theirs = split(members, {"b"})
    assert KeepMajority().decide(mine).survives
    assert not KeepMajority().decide(theirs).survives


def test_clients_never_count() -> None:
    clients = tuple(mem(f"client{i}", 20 + i, client=True) for i in range(3))
    members = (*FIVE[:2], *clients, *FIVE[2:])
    side = {"a", "b", "client0", "client1", "client2"}  # 2 members + 3 clients vs 3 members
    for strategy in (KeepMajority(), StaticQuorum(3)):
        this, other = split(members, side)
        assert not strategy.decide(this).survives
        kept = strategy.decide(other)
        assert kept.survives
        assert "clients not counted: [client0, client1, client2]" in kept.reason
    # The oldest by up_since is a client; keep-oldest ignores it.
    old_client = mem("old", 30, up=-1, client=True)
    this, other = split((old_client, *FIVE), {"old", "d", "e"})
    assert not KeepOldest().decide(this).survives
    assert KeepOldest().decide(other).survives


def test_an_isolated_client_downs_itself_and_the_members_carry_on() -> None:
    client = mem("cl", 50, client=True)
    this, other = split((client, *FIVE), {"cl"})
    for strategy in (KeepMajority(), KeepOldest(), StaticQuorum(3)):
        assert not strategy.decide(this).survives
        assert strategy.decide(other).down == {"cl"}


def test_paused_node_waking_sees_everyone_unreachable_and_downs_itself() -> None:
    # A SIGSTOPped node wakes with a view where nobody answered: it is a side of one.
    woke = view_of("c", FIVE, {"c"})
    assert not KeepMajority().decide(woke).survives
    assert not StaticQuorum(3).decide(woke).survives
    assert not KeepOldest().decide(woke).survives
    # Even the oldest downs itself when alone (down_if_alone), so it cannot split the cluster.
    assert not KeepOldest().decide(view_of("a", FIVE, {"a"})).survives


# ------------------------------------------------------------------------- broken pair

PAIR = (mem("a", 1), mem("b", 2), mem("c", 3))


def test_broken_pair_without_link_information_downs_nobody() -> None:
    # a and b cannot see each other; both see c. Each endpoint sees a 2|1 split and
    # keeps, treating the other endpoint as gone; c sees nothing unreachable and is never
    # asked. Nobody downs itself (docs/design/splitbrain.md: "broken pair").
    from_a = view_of("a", PAIR, {"a", "c"})
    from_b = view_of("b", PAIR, {"b", "c"})
    for strategy in (KeepMajority(), KeepOldest(), StaticQuorum(2)):
        assert strategy.decide(from_a).down == {"b"}
        assert strategy.decide(from_b).down == {"a"}


@pytest.mark.parametrize(
    "strategy",
    [KeepMajority(), KeepOldest(), KeepOldest(down_if_alone=False), StaticQuorum(2)],
    ids=lambda s: repr(s),
)
def test_broken_pair_with_link_information_downs_only_the_junior_endpoint(
    strategy: Strategy,
) -> None:
    # Membership knows the link a<->b is broken (direct probes fail, indirect ones through
    # c succeed), so everyone stays reachable. b, younger than a, downs itself; a and c stay.
    link = (("a", "b"),)
    decisions = {n: strategy.decide(view_of(n, PAIR, {"a", "b", "c"}, links=link))
                 for n in "abc"}
    assert not decisions["b"].survives
    assert "b is the junior endpoint" in decisions["b"].reason
    assert decisions["a"].survives and decisions["a"].down == {"b"}
    assert decisions["c"].survives and decisions["c"].down == {"b"}


def test_broken_links_never_down_everybody() -> None:
    # A triangle of broken links among a, b, c (d sees all): the most senior endpoint,
    # a, is junior in no link, so it survives with d.
    links = (("a", "b"), ("b", "c"), ("c", "a"))
    members = (*PAIR, mem("d", 4))
    everyone = {"a", "b", "c", "d"}
    survivors = {n for n in everyone
                 if KeepMajority().decide(view_of(n, members, everyone, links=links)).survives}
    assert survivors == {"a", "d"}


# ------------------------------------------------------------------------------- lease

def test_lease_side_survives_iff_it_holds_the_lease() -> None:
    strategy = LeaseMajority()
    assert Lease is LeaseMajority
    mine, theirs = split(FIVE, {"a", "b"})
    assert strategy.lease_owner(mine) == "a"
    assert strategy.lease_owner(theirs) == "c"
    # The minority waits before it tries; the majority does not.
    assert strategy.acquire_delay_s(mine) == 2.0
    assert strategy.acquire_delay_s(theirs) == 0.0
    assert strategy.decide(mine.with_lease_holder("a")).survives
    assert not strategy.decide(theirs.with_lease_holder(None)).survives
    assert "did not get the lease" in strategy.decide(theirs.with_lease_holder("a")).reason


def test_lease_side_without_members_never_tries() -> None:
    client = mem("cl", 50, client=True)
    alone, _ = split((client, *FIVE), {"cl"})
    assert LeaseMajority().lease_owner(alone) is None
    assert not LeaseMajority().decide(alone.with_lease_holder("cl")).survives


# --------------------------------------------------------------------------- properties

@st.composite
def symmetric_splits(draw: st.DrawFn) -> tuple[tuple[ViewMember, ...], set[str], set[str]]:
    """Any member set (clients included, ages may tie) split into two non-empty sides."""
    n = draw(st.integers(min_value=2, max_value=9))
    ips = draw(st.lists(st.integers(1, 40), min_size=n, max_size=n, unique=True))
    ports = draw(st.lists(st.sampled_from([7100, 7101, 10000]), min_size=n, max_size=n))
    clients = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    ups = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    members = tuple(
        ViewMember(f"n{i}", f"10.0.0.{ip}:{port}", "client" if cl else "member", float(up))
        for i, (ip, port, cl, up) in enumerate(zip(ips, ports, clients, ups, strict=True))
    )
    on_left = draw(st.lists(st.booleans(), min_size=n, max_size=n)
                   .filter(lambda xs: any(xs) and not all(xs)))
    left = {m.name for m, x in zip(members, on_left, strict=True) if x}
    return members, left, {m.name for m in members} - left


def _side_decisions(strategy: Strategy, members: tuple[ViewMember, ...],
                    side: set[str]) -> set[bool]:
    """What every node of ``side`` decides (members shuffled: order must not matter)."""
    shuffled = list(members)
    random.Random(len(side)).shuffle(shuffled)
    return {strategy.decide(view_of(n, tuple(shuffled), side)).survives for n in side}


@settings(max_examples=400, deadline=None)
@given(symmetric_splits(), st.booleans())
def test_exactly_one_side_survives_keep_majority_and_keep_oldest(
    split_: tuple[tuple[ViewMember, ...], set[str], set[str]], down_if_alone: bool,
) -> None:
    members, left, right = split_
    for strategy in (KeepMajority(), KeepOldest(down_if_alone=down_if_alone)):
        l_dec, r_dec = _side_decisions(strategy, members, left), \
            _side_decisions(strategy, members, right)
        assert len(l_dec) == 1 and len(r_dec) == 1, "a side must decide as one"
        assert l_dec != r_dec, f"{strategy}: exactly one side survives"


@settings(max_examples=400, deadline=None)
@given(symmetric_splits(), st.integers(1, 9))
def test_static_quorum_never_lets_both_sides_survive(
    split_: tuple[tuple[ViewMember, ...], set[str], set[str]], quorum: int,
) -> None:
    members, left, right = split_
    strategy = StaticQuorum(quorum)
    l_dec = _side_decisions(strategy, members, left)
    r_dec = _side_decisions(strategy, members, right)
    assert len(l_dec) == 1 and len(r_dec) == 1
    assert not (True in l_dec and True in r_dec)


@settings(max_examples=300, deadline=None)
@given(symmetric_splits(), st.sampled_from(["left", "right", "none"]))
def test_lease_never_lets_both_sides_survive(
    split_: tuple[tuple[ViewMember, ...], set[str], set[str]], winner: str,
) -> None:
    members, left, right = split_
    strategy = LeaseMajority()
    views = {s: view_of(min(side), members, side) for s, side in (("left", left),
                                                                   ("right", right))}
    holder = strategy.lease_owner(views[winner]) if winner in views else None
    survivors = [s for s, v in views.items()
                 if strategy.decide(v.with_lease_holder(holder)).survives]
    assert len(survivors) <= 1
    if holder is not None:
        assert survivors == [winner]


@settings(max_examples=200, deadline=None)
@given(symmetric_splits())
def test_decisions_are_deterministic(
    split_: tuple[tuple[ViewMember, ...], set[str], set[str]],
) -> None:
    members, left, _ = split_
    view = view_of(min(left), members, left)
    for strategy in (KeepMajority(), KeepOldest(), StaticQuorum(2), LeaseMajority(),
                     DownAll()):
        assert strategy.decide(view) == strategy.decide(view)


def test_strategies_are_named_and_printable() -> None:
    assert [s.name for s in (KeepMajority(), StaticQuorum(2), KeepOldest(), LeaseMajority(),
                             DownAll())] == ["keep-majority", "static-quorum", "keep-oldest",
                                             "lease", "down-all"]
    assert repr(StaticQuorum(3)) == "StaticQuorum(quorum_size=3)"
    with pytest.raises(ValueError, match="quorum_size"):
        StaticQuorum(0)


# ----------------------------------------------------------------- settings and factory

def test_make_strategy_builds_each_configured_strategy() -> None:
    assert make_strategy(SplitBrainSettings()) == KeepMajority()
    assert make_strategy(SplitBrainSettings(strategy="static-quorum", quorum_size=3)) == \
        StaticQuorum(3)
    assert make_strategy(SplitBrainSettings(strategy="keep-oldest", down_if_alone=False)) == \
        KeepOldest(down_if_alone=False)
    assert make_strategy(SplitBrainSettings(
        strategy="lease", lease_acquire_delay_for_minority_s=0.5)) == LeaseMajority(0.5)
    assert make_strategy(SplitBrainSettings(strategy="down-all")) == DownAll()
    assert list(STRATEGY_NAMES) == [
        "keep-majority", "static-quorum", "keep-oldest", "lease", "down-all"]


@pytest.mark.parametrize(
    ("kwargs", "key", "text"),
    [
        ({"strategy": "majority"}, "strategy", "got 'majority'"),
        ({"strategy": "static-quorum"}, "quorum_size", "needs quorum_size"),
        ({"quorum_size": 0}, "quorum_size", "positive integer; got 0"),
        ({"quorum_size": True}, "quorum_size", "positive integer; got True"),
        ({"stable_after_s": 0}, "stable_after_s", "> 0; got 0"),
        ({"stable_after_s": float("nan")}, "stable_after_s", "got nan"),
        ({"stable_after_s": "7"}, "stable_after_s", "got '7'"),
        ({"lease_ttl_s": -1.0}, "lease_ttl_s", "got -1.0"),
        ({"lease_acquire_timeout_s": 0.0}, "lease_acquire_timeout_s", "got 0.0"),
        ({"lease_acquire_delay_for_minority_s": -0.1}, "lease_acquire_delay_for_minority_s",
         ">= 0; got -0.1"),
        ({"down_action": "restart"}, "down_action", "got 'restart'"),
        ({"down_if_alone": "yes"}, "down_if_alone", "got 'yes'"),
    ],
)
def test_bad_settings_name_the_key(kwargs: dict[str, object], key: str, text: str) -> None:
    with pytest.raises(ConfigError, match="split-brain") as info:
        SplitBrainSettings(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key
    assert text in str(info.value)


def test_settings_defaults() -> None:
    s = SplitBrainSettings()
    assert (s.strategy, s.stable_after_s, s.quorum_size, s.down_action) == (
        "keep-majority", 7.0, None, "exit")
    assert SplitBrainSettings(lease_acquire_delay_for_minority_s=0).down_if_alone
