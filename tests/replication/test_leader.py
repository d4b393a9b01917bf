"""The leader's decisions: quorums, election rounds, discovery, adoption plans (pure core)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from phoenix_cluster._replication.leader import Election, Quorum
from phoenix_cluster._replication.messages import Promise
from phoenix_cluster._replication.types import ZERO_EPOCH, Entry, Epoch, Record, make_config

ABC = ("a", "b", "c")
BCD = ("b", "c", "d")
E5 = Epoch(5, "a#1")


def promise(prior: Epoch = ZERO_EPOCH, config: tuple[tuple[str, ...], ...] = (),
            synced: bool = False, marked: Epoch | None = None,
            pending: tuple[tuple[str, ...], ...] = (), **records: Entry) -> Promise:
    """A promise from a replica last marked at ``marked`` (default: ``prior`` when it
    has a config) under ``config``."""
    entries = tuple(("k", key, en) for key, en in records.items())
    if marked is None:
        marked = prior if config else ZERO_EPOCH
    return Promise(0, True, prior, marked, config, pending, synced, entries)


def en(counter: int, seq: int, state: bytes = b"", leader: str = "x#1") -> Entry:
    return Entry(counter, leader, seq, state)


def status(q: Quorum) -> str:
    """``q.status`` read afresh: mypy keeps the attribute narrowed by an earlier assert."""
    return q.status


def test_quorum_needs_a_majority_of_every_set() -> None:
    q = Quorum(make_config(ABC, BCD))
    q.ack("a")
    q.ack("b")
    assert q.status == "pending"  # a majority of ABC only
    q.ack("c")
    assert status(q) == "done"
    q2 = Quorum((ABC,))
    q2.fail("a")
    assert q2.status == "pending"
    q2.fail("b")
    assert status(q2) == "impossible"
    q3 = Quorum((ABC,))
    q3.ack("a")
    q3.ack("b")
    q3.fence("c", Epoch(9, "z"))
    assert q3.status == "fenced" and q3.fenced_by == Epoch(9, "z")
    assert "fenced" in repr(q3)


def test_election_counts_promisers_of_the_target_and_stops_on_a_refusal() -> None:
    el = Election(0, E5, ABC, (ABC,))
    assert el.members() == frozenset(ABC)
    el.reply("a", promise())
    assert el.status() == "pending"
    el.reply("b", promise())
    assert el.status() == "quorum" and el.blank()
    el.reply("c", Promise(0, False, Epoch(7, "c#1")))
    assert el.status() == "refused" and el.refused_by == Epoch(7, "c#1")


def test_data_sets_need_synced_promisers() -> None:
    el = Election(0, E5, ABC, (ABC,))
    el.reply("a", promise(Epoch(3, "b#1"), (ABC,), synced=True))
    el.reply("b", promise())  # restarted without its data: unsynced
    assert el.status() == "pending"
    el.fail("c")
    assert el.status() == "impossible"
    el2 = Election(0, E5, ABC, (ABC,))
    el2.reply("a", promise(Epoch(3, "b#1"), (ABC,), synced=True))
    el2.reply("c", promise(Epoch(3, "b#1"), (ABC,), synced=True))
    assert el2.status() == "quorum" and not el2.blank()


def test_a_set_that_lost_its_memory_counts_once_every_member_answered() -> None:
    el = Election(0, E5, ABC, (ABC,))
    for m in ABC:
        el.reply(m, promise(Epoch(2, "b#1"), (ABC,)))  # every member restarted
    assert el.status() == "quorum"
    plan = el.plan("a")
    assert plan.final == {} and plan.holding == frozenset(ABC)


def test_discovery_asks_for_the_sets_the_replicas_report() -> None:
    el = Election(0, E5, BCD, (BCD,))
    el.reply("b", promise(Epoch(3, "a#1"), (ABC,), synced=True))
    assert el.status() == "discover" and el.discovered() == (ABC,)
    el2 = Election(0, E5, BCD, make_config(ABC, BCD), family=(ABC,))
    el2.reply("b", promise(Epoch(3, "a#1"), (ABC,), synced=True))
    el2.reply("d", promise())
    assert el2.status() == "pending"  # ABC needs a second synced member
    el2.reply("c", promise(Epoch(3, "a#1"), (ABC,), synced=True))
    assert el2.status() == "quorum"


def test_the_newest_mark_and_later_candidates_decide_the_family() -> None:
    el = Election(0, E5, BCD, make_config(ABC, BCD))
    el.reply("b", promise(Epoch(2, "a#1"), (("a", "b", "e"),), synced=True))
    el.reply("c", promise(Epoch(3, "a#1"), (ABC,), synced=True))
    assert el.discovered() == (ABC,)  # b's mark is older: superseded
    # d never held the partition but promised a candidate after the newest mark; that
    # candidate may have moved the data to its set, so the set joins the family.
    el.reply("d", promise(Epoch(4, "e#1"), pending=(("c", "d", "e"),)))
    assert el.discovered() == make_config(ABC, ("c", "d", "e"))
    assert not el.blank()


def test_a_released_replica_points_to_where_the_data_went() -> None:
    el = Election(0, E5, ("c", "d", "e"), (("c", "d", "e"),))
    el.reply("c", promise(Epoch(3, "a#1"), (("a", "b", "e"),)))  # released, unsynced
    el.reply("d", promise())
    assert el.discovered() == (("a", "b", "e"),) and el.status() == "discover"


def test_plan_adopts_the_newest_and_restamps_what_lacks_a_majority() -> None:
    el = Election(0, E5, ABC, (ABC,))
    el.reply("a", promise(Epoch(3, "x#1"), (ABC,), True,
                          one=en(3, 1, b"a1"), two=en(2, 4, b"two")))
    el.reply("b", promise(Epoch(3, "x#1"), (ABC,), True,
                          one=en(3, 2, b"b1"), two=en(2, 4, b"two")))
    assert el.status() == "quorum"
    plan = el.plan("a")
    one, two = plan.final[("k", "one")], plan.final[("k", "two")]
    # "one": the newest version is on b only, so it is re-proposed under epoch 5.
    assert (one.counter, one.leader, one.seq, one.state) == (5, "a#1", 1, b"b1")
    # "two": the same version on a majority stays as it is.
    assert two == en(2, 4, b"two")
    assert plan.restamped == 1 and plan.next_seq == 2
    assert plan.stale  # a's own copy of "one" was older
    assert [k for _, k, _ in plan.entries_for("a")] == ["one"]
    assert [k for _, k, _ in plan.entries_for("b")] == ["one"]
    assert {k for _, k, _ in plan.entries_for("c")} == {"one", "two"}  # silent: all
    assert plan.holding == frozenset()
    assert Record(b"b1") == one.record


@given(st.lists(st.tuples(st.sampled_from(ABC), st.integers(1, 4), st.integers(1, 4)),
                min_size=1, max_size=12))
def test_plan_final_versions_dominate_every_promised_version(
        writes: list[tuple[str, int, int]]) -> None:
    """Whatever the promisers hold, the final entry of a key is at least as new as each
    copy, and any restamped one is newer than all of them."""
    held: dict[str, dict[str, Entry]] = {m: {} for m in ABC}
    for node, counter, seq in writes:
        key = f"{(counter + seq) % 3}"
        held[node][key] = en(counter, seq, f"{node}{counter}{seq}".encode())
    el = Election(0, E5, ABC, (ABC,))
    for m in ABC:
        # marked and pending named, so that no key of held[m] could stand for them
        el.reply(m, promise(Epoch(4, "x#1"), (ABC,), True, marked=None, pending=(), **held[m]))
    plan = el.plan("a")
    for m in ABC:
        for key, copy in held[m].items():
            final = plan.final[("k", key)]
            assert final.version >= copy.version
            if final.counter == 5:
                assert final.version > copy.version


def test_remembered_old_sets_are_hints_not_requirements() -> None:
    el = Election(0, E5, BCD, make_config(ABC, BCD))
    el.fail("a")
    for m in BCD:
        el.reply(m, promise())
    assert el.status() == "quorum"  # ABC's majority is not needed: nobody names it
    el2 = Election(0, E5, BCD, make_config(ABC, BCD))
    el2.fail("a")
    el2.reply("b", promise(Epoch(3, "a#1"), (ABC,), synced=True))
    el2.reply("d", promise())
    assert el2.status() == "pending"  # ABC holds data: a second synced member is needed
    el2.fail("c")
    assert el2.status() == "impossible"


def test_a_pending_set_is_ruled_out_only_by_members_that_cannot_have_forgotten() -> None:
    def round_with(amnesiac: bool) -> Election:
        el = Election(0, E5, ABC, make_config(ABC, BCD))
        for m in ("a", "b"):  # the data set, marked at 3
            el.reply(m, Promise(0, True, Epoch(4, "z#1"), Epoch(3, "x#1"), (ABC,), (BCD,),
                                True, ()))
        el.fail("d")
        el.reply("c", Promise(0, True, Epoch(4, "z#1"), Epoch(3, "x#1"), (ABC,), (BCD,),
                              not amnesiac, (), amnesiac))
        return el

    # BCD is pending (candidate z may have moved the data there): b and c answered.
    assert round_with(False).status() == "quorum"
    # c restarted without its data: it cannot vouch that z never marked BCD, and d is
    # gone, so BCD can be neither confirmed nor ruled out.
    assert round_with(True).status() == "impossible"
