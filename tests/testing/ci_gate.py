"""Under ``CI``, a skipped test fails: the suite never hides what is missing.

A test skips when something it needs is missing here: a system command (etcd, iptables,
prometheus, chromium), a privilege (root for iptables) or an optional package. On a
developer's machine that is a skip with the reason. When the environment variable ``CI``
is set (CI services set it; ``make test`` sets it too), the same skip is a failure with
one line naming what is missing: a suite that quietly skips its partition tests proves
nothing about partitions. Expected failures (``xfail``) are left alone.

A pytest plugin: ``tests/conftest.py`` re-exports its hook.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("CI"):
        report.outcome = "failed"
        report.longrepr = (f"missing in CI (CI={os.environ['CI']!r}, so this is not a skip):"
                           f" {_skip_reason(report)}")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module skipped while it is collected (``pytest.importorskip`` at module level:
    an optional package missing) never reaches :func:`pytest_runtest_makereport`; under
    ``CI`` it is a collection error with the same one line."""
    report = yield
    if report.skipped and os.environ.get("CI"):
        report.outcome = "failed"
        report.longrepr = (f"missing in CI (CI={os.environ['CI']!r}, so this is not a skip):"
                           f" {_skip_reason(report)}")
    return report
