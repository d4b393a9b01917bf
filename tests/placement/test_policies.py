"""Placement policies choose hosts deterministically and as documented."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import phoenix_cluster as phx
from phoenix_cluster._placement.policies import NodeLoad, Scored, check_policy, choose_host

LOADS = [NodeLoad("a", 10, 5.0), NodeLoad("b", 3, 50.0), NodeLoad("c", 3, 1.0)]


def test_local_prefers_the_caller_and_falls_back_to_least_loaded() -> None:
    assert choose_host("local", LOADS, key="k", caller="a", tie=0) == "a"
    assert choose_host("local", LOADS, key="k", caller="client-x", tie=0) == "c"


def test_least_loaded_counts_agents_then_message_rate() -> None:
    assert choose_host("least_loaded", LOADS, key="k", caller=None, tie=7) == "c"
    even = [NodeLoad("a", 1), NodeLoad("b", 1)]
    assert {choose_host("least_loaded", even, key="k", caller=None, tie=t) for t in (0, 1)} \
        == {"a", "b"}


def test_scored_weighs_the_factors() -> None:
    slow = [NodeLoad("a", 0, loop_lag_s=0.09), NodeLoad("b", 0, loop_lag_s=0.0)]
    assert choose_host(Scored(), slow, key="k", caller=None, tie=0) == "b"
    assert choose_host(Scored(resources=0.1, affinity=1.0), slow, key="k", caller="a",
                       tie=0) == "a"
    near = [NodeLoad("a", 0, rtt_s=0.005), NodeLoad("b", 0, rtt_s=0.0001)]
    assert choose_host(Scored(latency=1.0, resources=0, affinity=0, load=0), near, key="k",
                       caller=None, tie=0) == "b"
    prefer = Scored(affinity=1.0, affinity_fn=lambda key, node: float(key.endswith(node)))
    assert choose_host(prefer, LOADS, key="x-b", caller=None, tie=0) == "b"


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 100)), min_size=1, max_size=8),
       st.integers(0, 1000))
def test_choices_are_members_and_deterministic(loads: list[tuple[int, float]], tie: int) -> None:
    nodes = [NodeLoad(f"n{i}", a, r) for i, (a, r) in enumerate(loads)]
    for policy in ("local", "least_loaded", Scored()):
        first = choose_host(policy, nodes, key="k", caller="n0", tie=tie)
        assert first in {n.name for n in nodes}
        assert choose_host(policy, list(reversed(nodes)), key="k", caller="n0", tie=tie) == first


def test_bad_policies_are_config_errors() -> None:
    with pytest.raises(phx.ConfigError, match="placement must be one of"):
        check_policy("nearest", "kind x")
    with pytest.raises(phx.ConfigError, match="weight load"):
        Scored(load=-1)
    with pytest.raises(phx.ConfigError, match="at least one weight"):
        Scored(resources=0, affinity=0, latency=0, load=0)
    with pytest.raises(phx.ConfigError):
        class Bad(phx.Agent, placement="anywhere"):
            pass
    with pytest.raises(ValueError, match="hash agents"):
        choose_host("hash", LOADS, key="k", caller=None, tie=0)
