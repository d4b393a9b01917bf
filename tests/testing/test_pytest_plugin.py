"""The ``phoenix_cluster`` pytest plugin, as a user's test suite sees it.

Each test writes a small project (an agents module, an ini file, a test file) and runs
pytest on it in a fresh interpreter (``pytester.runpytest_subprocess``), so the plugin is
loaded the way users get it: through the ``pytest11`` entry point of the installed
distribution, next to pytest-asyncio.
"""

from __future__ import annotations

import importlib.metadata
import os
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

AGENTS = '''
import phoenix_cluster as phx


# The fixtures are under test here, not replication: keep state on the host only.
class Counter(phx.Agent, kind="plugin_test.counter", durability="none"):
    def __init__(self) -> None:
        self.count = 0

    async def increment(self, by: int = 1) -> int:
        self.count += by
        return self.count

    async def where(self) -> str:
        return str(self.node.name)
'''

INI = """
[pytest]
asyncio_mode = {mode}
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
phx_cluster_nodes = 3
phx_cluster_imports = myagents
filterwarnings = error
"""


def _project(pytester: pytest.Pytester, test_source: str, *, mode: str = "auto") -> None:
    pytester.makefile(".ini", pytest=INI.format(mode=mode))
    pytester.makepyfile(myagents=AGENTS, test_user=textwrap.dedent(test_source))


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", *args, timeout=120)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie of a process we did not start would still answer; ours are reaped.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" in status.read_text()


def test_entry_point_is_installed() -> None:
    (entry,) = [e for e in importlib.metadata.entry_points(group="pytest11")
                if e.name == "phoenix_cluster"]
    assert entry.value == "phoenix_cluster.testing.pytest_plugin"
    assert entry.dist is not None and entry.dist.name == "phoenix-cluster"


@pytest.mark.slow
def test_user_suite_uses_every_fixture_against_a_two_node_cluster(
        pytester: pytest.Pytester) -> None:
    pids = pytester.path / "pids.txt"
    _project(pytester, f'''
        import pytest

        import phoenix_cluster as phx
        from phoenix_cluster.testing import LocalCluster
        from myagents import Counter

        PIDS = {str(pids)!r}


        def remember(cluster: LocalCluster) -> None:
            with open(PIDS, "a") as f:
                for node in cluster.nodes:
                    f.write(f"{{node.process.pid}}\\n")


        async def test_embedded_node(phx_node: phx.Node) -> None:
            counter = phx_node.ref(Counter, "alice")
            assert await counter.increment(5) == 5
            assert await counter.increment(2) == 7
            assert [m.name for m in phx_node.members()] == [phx_node.name]


        @pytest.mark.phx_node(name="named-in-marker")
        async def test_embedded_node_options(phx_node: phx.Node) -> None:
            assert phx_node.name == "named-in-marker"


        @pytest.mark.phx_cluster_nodes(2)  # beats the ini option (3)
        async def test_cluster_from_markers_and_ini(phx_cluster: LocalCluster) -> None:
            remember(phx_cluster)
            assert len(phx_cluster.nodes) == 2
            assert phx_cluster.imports == ["myagents"]  # from the ini option
            client = await phx_cluster.client()
            hosts = set()
            for i in range(40):
                ref = client.ref(Counter, f"k{{i}}")
                assert await ref.increment(i) == i
                hosts.add(await ref.where())
            assert hosts == {{"node-0", "node-1"}}
            # Fault injection: a crash is detected and its keys answer again.
            phx_cluster.kill(1)
            await phx_cluster.wait(1)
            await phx_cluster.wait_converged(timeout_s=30)
            for i in range(40):
                ref = client.ref(Counter, f"k{{i}}").options(timeout=10)
                assert await ref.where() == "node-0"


        async def test_factory(phx_cluster_factory) -> None:
            cluster = await phx_cluster_factory(nodes=1, imports=["myagents"])
            remember(cluster)
            client = await cluster.client()
            assert await client.ref(Counter, "solo").increment(3) == 3
            assert {{m.name for m in client.members() if m.role == "member"}} == {{"node-0"}}
    ''')
    result = _run(pytester)
    result.assert_outcomes(passed=4)
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 3
    # Every node process of every cluster is gone after the session: teardown closed them.
    assert all(_gone(pid) for pid in recorded), recorded


def test_strict_mode_and_option_errors(pytester: pytest.Pytester) -> None:
    _project(pytester, '''
        import pytest

        from myagents import Counter


        @pytest.mark.asyncio
        async def test_embedded_node_in_strict_mode(phx_node) -> None:
            assert await phx_node.ref(Counter, "x").increment() == 1


        @pytest.mark.asyncio
        @pytest.mark.phx_cluster_nodes(0)
        async def test_zero_nodes(phx_cluster) -> None:
            raise AssertionError("never runs")


        @pytest.mark.asyncio
        @pytest.mark.phx_cluster_imports(42)
        async def test_bad_imports(phx_cluster) -> None:
            raise AssertionError("never runs")
    ''', mode="strict")
    result = _run(pytester)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines([
        "*phx_cluster_nodes must be a whole number >= 1, got 0*",
        "*phx_cluster_imports takes module names*got 42*",
    ])


def test_markers_and_ini_options_are_registered(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest="[pytest]\naddopts = --strict-markers --strict-config\n"
                                     "phx_cluster_nodes = 2\n")
    result = pytester.runpytest_subprocess("--markers", timeout=120)
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "@pytest.mark.phx_cluster_nodes(n):*",
        "@pytest.mark.phx_cluster_imports(*modules):*",
        "@pytest.mark.phx_node(**options):*",
    ])
