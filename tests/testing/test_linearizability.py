"""The linearizability checker on hand-built histories: what must pass passes, and each
kind of anomaly (stale read, lost write, new-old inversion, compare-and-set that should
not have swapped or should have) is reported; info operations may apply late or never;
a history generated from a sequential run is always linearizable (hypothesis)."""

from __future__ import annotations

import dataclasses
import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_cluster.testing.linearizability import (
    Op,
    OpKind,
    Outcome,
    check_history,
    check_key,
)


def w(value: int, start: float, end: float | None, outcome: Outcome = "ok",
      client: int = 0) -> Op:
    return Op("k", "write", start, end, outcome, value=value, client=client)


def r(output: int | None, start: float, end: float | None, outcome: Outcome = "ok") -> Op:
    return Op("k", "read", start, end, outcome, output=output)


def cas(expected: int | None, new: int, swapped: bool | None, start: float,
        end: float | None, outcome: Outcome = "ok") -> Op:
    return Op("k", "cas", start, end, outcome, value=new, expected=expected,
              output=swapped)


def linearizable(*ops: Op) -> bool | None:
    return check_key(ops).linearizable


def test_a_sequential_history_is_linearizable() -> None:
    assert linearizable(w(1, 0, 1), r(1, 2, 3), cas(1, 2, True, 4, 5), r(2, 6, 7),
                        cas(1, 3, False, 8, 9), r(2, 10, 11))


def test_the_empty_history_and_reads_of_the_initial_value_are_linearizable() -> None:
    assert linearizable()
    assert linearizable(r(None, 0, 1), r(None, 0.5, 2))


def test_concurrent_operations_may_take_effect_in_either_order() -> None:
    # The read overlaps both writes: it may see either.
    assert linearizable(w(1, 0, 4), w(2, 1, 5), r(1, 2, 6), r(2, 7, 8))
    assert linearizable(w(1, 0, 4), w(2, 1, 5), r(2, 2, 3), r(1, 3.5, 3.8), r(1, 7, 8))


def test_a_stale_read_is_reported() -> None:
    result = check_key([w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)])
    assert result.linearizable is False
    assert "could not place read -> 1" in result.explanation


def test_a_lost_write_is_reported() -> None:
    assert linearizable(w(1, 0, 1), r(None, 2, 3)) is False


def test_a_new_old_inversion_is_reported() -> None:
    # The write is still running, but once one read saw it a later read must too.
    assert linearizable(w(1, 0, 10), r(1, 1, 2), r(None, 3, 4)) is False
    assert linearizable(w(1, 0, 10), r(None, 1, 2), r(1, 3, 4))


def test_compare_and_set_anomalies_are_reported() -> None:
    # Two swaps from the same value: the second must have seen 2.
    assert linearizable(w(1, 0, 1), cas(1, 2, True, 2, 3), cas(1, 3, True, 4, 5)) is False
    # Refused although the value matched.
    assert linearizable(w(1, 0, 1), cas(1, 2, False, 2, 3)) is False
    # Swapped although it did not.
    assert linearizable(w(1, 0, 1), cas(5, 2, True, 2, 3)) is False
    # A swap nobody saw: the read after it returns the old value.
    assert linearizable(w(1, 0, 1), cas(1, 2, True, 2, 3), r(1, 4, 5)) is False
    # Concurrent swaps from the same value: exactly one may win.
    assert linearizable(w(1, 0, 1), cas(1, 2, True, 2, 5), cas(1, 3, False, 3, 6),
                        r(2, 7, 8))


def test_an_info_write_may_take_effect_late() -> None:
    assert linearizable(w(1, 0, None, "info"), r(None, 5, 6), r(1, 7, 8))
    assert linearizable(w(1, 0, None, "info"), r(1, 5, 6))


def test_an_info_write_may_never_take_effect() -> None:
    assert linearizable(w(1, 0, None, "info"), r(None, 5, 6), r(None, 7, 8))
    assert linearizable(w(1, 0, 1), w(2, 2, None, "info"), r(1, 5, 6))


def test_an_info_write_cannot_take_effect_before_it_was_invoked_or_be_undone() -> None:
    assert linearizable(r(1, 0, 1), w(1, 2, None, "info")) is False
    assert linearizable(w(1, 0, None, "info"), r(1, 5, 6), r(None, 7, 8)) is False


def test_an_info_compare_and_set_may_swap_or_not() -> None:
    assert linearizable(w(1, 0, 1), cas(1, 2, None, 2, None, "info"), r(2, 3, 4))
    assert linearizable(w(1, 0, 1), cas(1, 2, None, 2, None, "info"), r(1, 3, 4))
    # It cannot swap from a value the register never had.
    assert linearizable(w(1, 0, 1), cas(7, 2, None, 2, None, "info"), r(2, 3, 4)) is False


def test_failed_operations_did_not_happen() -> None:
    assert linearizable(w(1, 0, 1, "fail"), r(1, 2, 3)) is False
    assert linearizable(w(1, 0, 1, "fail"), r(None, 2, 3))
    # An info read said nothing; a failed read neither.
    assert linearizable(w(1, 0, 1), r(5, 2, None, "info"), r(6, 3, 4, "fail"))


def test_counts_and_keys_are_checked_apart() -> None:
    ops = [w(1, 0, 1), Op("other", "write", 0, 1, "ok", value=7),
           Op("other", "read", 2, 3, "ok", output=8), r(1, 2, None, "info"),
           w(2, 3, 4, "fail")]
    results = check_history(ops)
    assert list(results) == ["k", "other"]
    assert results["k"].linearizable is True
    assert results["k"].counts == {"ok": 1, "fail": 1, "info": 1}
    assert results["other"].linearizable is False


def test_a_search_that_runs_out_of_steps_is_undecided_not_linearizable() -> None:
    ops = [w(i, 0, 10, client=i) for i in range(12)] + [r(99, 11, 12)]
    result = check_key(ops, max_steps=50)
    assert result.linearizable is None
    assert "undecided" in result.explanation


KINDS: list[OpKind] = ["read", "write", "cas"]
OUTCOMES: list[Outcome] = ["ok", "fail", "info"]


def sequential_history(seed: int, n: int, clients: int, info_share: float = 0.05,
                       fail_share: float = 0.05) -> list[Op]:
    """``clients`` clients each running operations one after another on one real
    register: each takes effect at a random instant inside its interval; some fail
    (never applied), some end unknown (applied or not, never completed)."""
    rng = random.Random(seed)
    free = [(rng.random(), c) for c in range(clients)]
    heapq.heapify(free)
    planned: list[tuple[float, int, int, float, float]] = []
    for i in range(n):
        start, client = heapq.heappop(free)
        latency = rng.expovariate(1.0)
        planned.append((start + rng.uniform(0, latency), i, client, start, start + latency))
        heapq.heappush(free, (start + latency + rng.random() * 0.1, client))
    planned.sort()
    state: int | None = None
    ops: list[Op] = []
    shares = [1 - info_share - fail_share, fail_share, info_share]
    for _, i, client, start, end in planned:
        kind = rng.choice(KINDS)
        outcome = rng.choices(OUTCOMES, shares)[0]
        applied = outcome == "ok" or (outcome == "info" and rng.random() < 0.5)
        until = end if outcome != "info" else None
        if kind == "read":
            ops.append(Op("k", "read", start, until, outcome,
                          output=state if outcome == "ok" else 12345, client=client))
        elif kind == "write":
            if applied:
                state = i
            ops.append(Op("k", "write", start, until, outcome,
                          value=i, client=client))
        else:
            expected = state if rng.random() < 0.6 else rng.choice([None, i - 1, i - 5])
            swapped = state == expected
            if applied and swapped:
                state = i
            ops.append(Op("k", "cas", start, until, outcome,
                          value=i, expected=expected,
                          output=swapped if outcome == "ok" else None, client=client))
    return ops


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 80), clients=st.integers(1, 8),
       info_share=st.sampled_from([0.0, 0.05, 0.2]))
def test_histories_of_a_sequential_run_are_linearizable(seed: int, n: int, clients: int,
                                                        info_share: float) -> None:
    result = check_key(sequential_history(seed, n, clients, info_share))
    assert result.linearizable is True, result.explanation


def test_a_long_concurrent_history_is_decided_quickly() -> None:
    # 800 operations of 15 clients, 5 % of them unknown: the cache, the greedy reads,
    # the symmetry of unseen info writes and info operations applied only where needed
    # keep this to a few hundred thousand steps.
    result = check_key(sequential_history(1, 800, 15))
    assert result.linearizable is True
    assert result.steps < 600_000, result.steps


def test_a_stale_read_injected_into_a_long_history_is_reported() -> None:
    ops = sequential_history(2, 400, 15, info_share=0.0, fail_share=0.0)
    writes = [op for op in ops if op.kind == "write"]
    first, second = writes[10], next(op for op in writes[11:]
                                    if op.invoke > (writes[10].complete or 0))
    assert second.complete is not None
    ops.append(Op("k", "read", second.complete + 100, second.complete + 101, "ok",
                  output=first.value))
    assert check_key(ops).linearizable is False


def brute_force(ops: list[Op]) -> bool:
    """Every order of the operations, straight from the definition (small histories)."""
    live = [op for op in ops
            if op.outcome == "ok" or (op.outcome == "info" and op.kind != "read")]
    must = sum(1 << i for i, op in enumerate(live) if op.outcome == "ok")
    tried: set[tuple[int, int | None]] = set()

    def step(state: int | None, op: Op) -> tuple[bool, int | None]:
        if op.kind == "write":
            return True, op.value
        if op.kind == "read":
            return op.output == state, state
        swapped = state == op.expected
        if op.outcome == "info" or op.output:
            return swapped, op.value
        return not swapped, state

    def search(done: int, state: int | None) -> bool:
        if done & must == must:
            return True
        if (done, state) in tried:
            return False
        tried.add((done, state))
        # An operation may go next if it began before every pending one ended.
        bound = min(op.complete or 0.0 for i, op in enumerate(live)
                    if not done >> i & 1 and op.outcome == "ok")
        for i, op in enumerate(live):
            if not done >> i & 1 and op.invoke <= bound:
                legal, after = step(state, op)
                if legal and search(done | 1 << i, after):
                    return True
        return False

    return search(0, None)


def garbled(seed: int, n: int, clients: int, info_share: float) -> list[Op]:
    """A history of a sequential run with one output changed at random (often, but
    not always, making it non-linearizable)."""
    rng = random.Random(seed)
    ops = sequential_history(seed, n, clients, info_share=info_share)
    reads = [i for i, op in enumerate(ops) if op.kind in ("read", "cas")
             and op.outcome == "ok"]
    if reads:
        i = rng.choice(reads)
        op = ops[i]
        if op.kind == "read":
            values = [o.value for o in ops if o.kind != "read"] + [None]
            ops[i] = dataclasses.replace(op, output=rng.choice(values))
        else:
            ops[i] = dataclasses.replace(op, output=not op.output)
    return ops


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 14), clients=st.integers(1, 5),
       info_share=st.sampled_from([0.15, 0.4]))
def test_the_checker_agrees_with_a_brute_force_search(seed: int, n: int, clients: int,
                                                      info_share: float) -> None:
    ops = garbled(seed, n, clients, info_share)
    assert check_key(ops).linearizable is brute_force(ops)


def test_many_timed_out_writes_read_much_later_are_decided_quickly() -> None:
    # 30 writes time out at once (a node was killed); five of them are read one by one
    # over the next 1,800 operations. A search that tried the pending info writes at
    # every point ran out of 2,000,000 steps here; applying them only where a read
    # needs them takes a few hundred thousand.
    ops = [w(i + 1, 0.01 * i, None, "info", client=i) for i in range(30)]
    t = 1.0
    seen = [3, 7, 12, 20, 25]
    for j in range(300):
        if j % 60 == 0:
            ops.append(r(seen.pop(0), t, t + 0.01))
            t += 0.02
        for c in range(5):
            ops.append(w(1000 + j * 5 + c, t + 0.001 * c, t + 0.01 + 0.001 * c, client=c))
        ops.append(r(1000 + j * 5 + 4, t + 0.02, t + 0.03))
        t += 0.04
    result = check_key(ops)
    assert result.linearizable is True, result.explanation
    assert result.steps < 400_000, result.steps
