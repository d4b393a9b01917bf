"""The laws of leases, semaphores and barriers, on their pure state machines.

Random runs of acquire / renew / release / time passing / failover (the table activated
on another node, its clocks restarted) against :class:`PermitTable`: a token is granted
to one holder only, tokens strictly increase, never more than ``limit`` live holders,
and a release or renewal by a caller without the live token changes nothing.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster._coordination.barrier_state import BarrierState
from phoenix_cluster._coordination.permits import PermitTable

HOLDERS = ["a", "b", "c", "d"]

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.sampled_from(HOLDERS), st.floats(0.5, 5.0)),
        st.tuples(st.just("renew"), st.sampled_from(HOLDERS), st.integers(0, 12)),
        st.tuples(st.just("release"), st.sampled_from(HOLDERS), st.integers(0, 12)),
        st.tuples(st.just("sleep"), st.just(""), st.floats(0.0, 3.0)),
        st.tuples(st.just("failover"), st.just(""), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, limit=st.integers(1, 3))
def test_a_token_goes_to_one_holder_and_tokens_strictly_increase(
    ops: list[tuple[str, str, float]], limit: int,
) -> None:
    table, now = PermitTable(), 0.0
    owner_of: dict[int, str] = {}   # every token ever granted, and to whom
    for op, holder, arg in ops:
        before = msgspec.msgpack.encode(table)
        if op == "acquire":
            out = table.acquire(holder, limit, arg, now)
            if out.status == "granted":
                if out.token not in owner_of:  # a new grant: larger than every token before
                    assert out.token > max(owner_of, default=0)
                assert owner_of.setdefault(out.token, holder) == holder  # one holder per token
        elif op == "renew":
            held = any(p.holder == holder and p.token == arg and p.expires_at > now
                       for p in table.permits)
            out = table.renew(holder, int(arg), 1.0, now)
            assert (out.status == "granted") == held
        elif op == "release":
            out = table.release(holder, int(arg), now)
            if out.status == "not_holder":
                # refused: nothing but expiry changed
                live = [p for p in msgspec.msgpack.decode(before, type=PermitTable).permits
                        if p.expires_at > now]
                assert [p.holder for p in live] == [p.holder for p in table.permits]
        elif op == "sleep":
            now += arg
        else:  # the agent moved: a new node's clock, and a restored copy of the state
            table = msgspec.msgpack.decode(msgspec.msgpack.encode(table), type=PermitTable)
            now += 100.0
            table.restart_clocks(now)
        live = [p for p in table.permits if p.expires_at > now]
        assert len(live) <= limit
        assert len({p.holder for p in live}) == len(live)
        assert all(owner_of[p.token] == p.holder for p in table.permits)
        assert table.last_token == max(owner_of, default=0)


@settings(max_examples=200, deadline=None)
@given(ops=_ops)
def test_a_lease_never_ends_before_its_ttl_even_across_failovers(
    ops: list[tuple[str, str, float]],
) -> None:
    """The holder-side bound: a lease granted or renewed at t with ttl T is not given to
    anyone else before t + T on the agent's clock, whatever moves in between."""
    table, now = PermitTable(), 0.0
    promised: dict[int, float] = {}  # token -> earliest moment it may be taken away
    for op, holder, arg in ops:
        if op == "acquire":
            out = table.acquire(holder, 1, arg, now)
            if out.status == "granted":
                promised[out.token] = now + arg
            else:
                assert all(p.expires_at > now for p in table.permits)
        elif op == "renew" and table.renew(holder, int(arg), 1.0, now).status == "granted":
            promised[int(arg)] = now + 1.0
        elif op == "release":
            table.release(holder, int(arg), now)
            promised.pop(int(arg), None)  # a holder that released gave it up itself
        elif op == "sleep":
            now += arg
        elif op == "failover":
            now += 100.0  # another clock: its readings are unrelated to this one's
            promised = {t: until + 100.0 for t, until in promised.items()}
            table.restart_clocks(now)
        if table.permits:
            current = table.permits[0].token
            for token, until in promised.items():
                if token != current and until > now:
                    raise AssertionError(f"token {current} granted while {token} runs")


def test_release_by_a_non_holder_changes_nothing_and_a_retried_release_succeeds() -> None:
    table = PermitTable()
    assert table.acquire("a", 1, 10.0, 0.0).token == 1
    assert table.release("b", 1, 1.0).status == "not_holder"
    assert table.release("a", 7, 1.0).status == "not_holder"
    assert [p.holder for p in table.permits] == ["a"]
    assert table.release("a", 1, 1.0).status == "released"
    assert table.release("a", 1, 1.0).status == "released"   # the retry
    assert table.release("b", 1, 1.0).status == "not_holder"  # never held it
    assert table.acquire("b", 1, 10.0, 2.0).token == 2
    assert table.release("a", 1, 3.0).status == "not_holder"  # a later token exists


def test_an_expired_lease_goes_to_the_next_caller_with_a_larger_token() -> None:
    table = PermitTable()
    assert table.acquire("a", 1, 1.0, 0.0).token == 1
    assert table.acquire("b", 1, 1.0, 0.5).status == "full"
    assert table.acquire("a", 1, 1.0, 0.5).token == 1   # the holder asking again: same token
    out = table.acquire("b", 1, 1.0, 1.6)
    assert (out.status, out.token) == ("granted", 2)
    assert table.renew("a", 1, 1.0, 1.7).status == "not_holder"


def test_a_semaphore_refuses_another_limit_while_held() -> None:
    table = PermitTable()
    assert table.acquire("a", 2, 10.0, 0.0).status == "granted"
    assert table.acquire("b", 3, 10.0, 0.0).status == "mismatch"
    assert table.acquire("b", 2, 10.0, 0.0).token == 2
    assert table.acquire("c", 2, 10.0, 0.0).status == "full"
    table.release("a", 1, 0.0)
    table.release("b", 2, 0.0)
    assert table.acquire("c", 5, 10.0, 0.0).status == "granted"  # empty: a new limit


@settings(max_examples=200, deadline=None)
@given(arrivals=st.lists(st.sampled_from(HOLDERS), max_size=40), parties=st.integers(1, 4))
def test_a_barrier_round_passes_exactly_when_its_parties_are_in(
    arrivals: list[str], parties: int,
) -> None:
    barrier, rounds = BarrierState(), 0
    members: set[str] = set()
    for party in arrivals:
        out = barrier.arrive(party, parties)
        members.add(party)
        if len(members) == parties:
            assert (out.status, out.generation) == ("passed", rounds)
            rounds, members = rounds + 1, set()
        else:
            assert (out.status, out.generation, out.arrived) == ("waiting", rounds, len(members))
        assert barrier.poll(rounds).status == "waiting"
        if rounds:
            assert barrier.poll(rounds - 1).status == "passed"
    if members:
        assert barrier.arrive("zz", parties + 1).status == "mismatch"
        assert set(barrier.arrived) == members


def test_a_party_that_leaves_is_not_counted() -> None:
    barrier = BarrierState()
    assert barrier.arrive("a", 2).status == "waiting"
    assert barrier.leave("a", 0).status == "waiting"
    assert barrier.arrive("b", 2).status == "waiting"
    assert barrier.arrive("a", 2).status == "passed"
    assert barrier.leave("b", 0).status == "passed"  # too late to leave: it passed


@settings(max_examples=200, deadline=None)
@given(ops=_ops)
def test_at_most_one_leader_per_term_and_terms_never_overlap(
    ops: list[tuple[str, str, float]],
) -> None:
    """An election is a lease of one holder, its term the token: each term has one
    leader, and the agent never sees two terms live at once."""
    table, now = PermitTable(), 0.0
    leader_of: dict[int, str] = {}
    for op, candidate, arg in ops:
        if op == "acquire":
            out = table.acquire(candidate, 1, arg, now)
            if out.status == "granted":
                assert leader_of.setdefault(out.token, candidate) == candidate
        elif op == "renew":
            table.renew(candidate, int(arg), 1.0, now)
        elif op == "release":
            table.release(candidate, int(arg), now)
        elif op == "sleep":
            now += arg
        else:
            now += 100.0
            table.restart_clocks(now)
        live_terms = {p.token for p in table.permits if p.expires_at > now}
        assert len(live_terms) <= 1
