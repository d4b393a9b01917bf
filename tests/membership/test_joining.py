"""Who forms a cluster and who only joins (Akka's first-seed rule), and join failures."""

from __future__ import annotations

import pytest

from phoenix_cluster._membership.joining import JoinPlan, describe_failure
from phoenix_cluster.errors import AuthenticationError, NodeUnavailable, ProtocolError

ME = "10.0.0.1:7100"


@pytest.mark.parametrize(
    ("seeds", "discovery", "at_once", "first"),
    [
        ([], False, True, False),                         # no seeds: a cluster of one
        ([ME], False, True, False),                       # only itself
        ([ME, ME], False, True, False),
        ([ME, "10.0.0.2:7100"], False, False, True),      # the first seed
        (["10.0.0.2:7100", ME], False, False, False),     # a later seed only joins
        (["10.0.0.2:7100"], False, False, False),         # not a seed at all
        ([], True, False, True),                          # discovery only
        (["10.0.0.2:7100"], True, False, False),
    ],
)
def test_who_forms_a_cluster(seeds: list[str], discovery: bool, at_once: bool,
                             first: bool) -> None:
    plan = JoinPlan(seeds, (ME, ""), role="member", discovery=discovery)
    assert (plan.forms_at_once, plan.first_seed) == (at_once, first)
    assert ME not in plan.others


def test_the_listen_setting_also_names_this_node() -> None:
    plan = JoinPlan(["0.0.0.0:7100"], ("127.0.0.1:7100", "0.0.0.0:7100"), role="member",
                    discovery=False)
    assert plan.forms_at_once


def test_a_client_never_forms_a_cluster() -> None:
    for seeds in ([], [ME], [ME, "10.0.0.2:7100"]):
        plan = JoinPlan(seeds, (ME,), role="client", discovery=False)
        assert not plan.forms_at_once and not plan.first_seed


def test_failures_are_news_once_per_kind_and_named_in_the_report() -> None:
    seed = "10.0.0.2:7100"
    plan = JoinPlan([seed], (ME,), role="member", discovery=False)
    assert plan.describe() == f"no answer from seeds {seed}"
    refused = NodeUnavailable(f"cannot reach {seed}: connection refused")
    line = plan.failed(seed, refused)
    assert line == f"cannot join through seed {seed}: unreachable: connection refused"
    assert plan.failed(seed, refused) is None  # the same failure again: no new line
    cookie = AuthenticationError("node 'b' failed the cluster-secret challenge")
    line = plan.failed(seed, cookie)
    assert line is not None and "wrong cluster secret (cookie)" in line
    assert plan.describe() == (f"seed {seed}: wrong cluster secret (cookie): node 'b' "
                               "failed the cluster-secret challenge")
    plan.answered(seed)
    assert plan.failures() == {}


def test_describe_failure_by_type() -> None:
    assert describe_failure(TimeoutError()) == "unreachable: TimeoutError"
    assert describe_failure(OSError("no route")) == "unreachable: no route"
    assert describe_failure(ProtocolError("bad frame")) == "ProtocolError: bad frame"
    assert describe_failure(ValueError("odd")) == "ValueError: odd"


def test_a_static_first_seed_forms_whatever_discovery_found() -> None:
    plan = JoinPlan([ME, "10.0.0.2:7100"], (ME,), role="member", discovery=True)
    assert plan.may_form_alone(ME, ["10.0.0.0:7100"])


def test_by_discovery_only_the_lowest_address_forms_the_cluster() -> None:
    plan = JoinPlan([], (ME,), role="member", discovery=True)
    assert plan.may_form_alone(ME, [])                      # found nobody: forms
    assert plan.may_form_alone(ME, ["10.0.0.2:7100", ME])   # the lowest: forms
    assert not plan.may_form_alone(ME, ["10.0.0.0:7100"])   # waits for the lower one
    joiner = JoinPlan(["10.0.0.2:7100"], (ME,), role="member", discovery=True)
    assert not joiner.may_form_alone(ME, [])                # not a first seed at all
