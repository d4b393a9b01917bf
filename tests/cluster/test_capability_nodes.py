"""Capability-aware placement on real node processes: a kind whose module only some
members import runs only on them, from any caller, and keeps its committed state."""

from __future__ import annotations

import asyncio
import time

import pytest
from capability_agents import Render

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster

pytestmark = pytest.mark.slow

KEYS = [f"frame-{i}" for i in range(24)]


class Unhosted(phx.Agent, kind="capability.unhosted"):
    """Defined here, in the caller, and imported by no member."""

    async def ping(self) -> str:
        return "pong"


async def test_a_kind_runs_only_on_the_members_that_import_it() -> None:
    async with LocalCluster(nodes=3, imports=["cluster_agents"]) as cluster:
        index = await cluster.add_node("--import", "capability_agents")
        await cluster.wait_converged()
        client = await cluster.client()
        hosting = cluster.nodes[index].name
        # Homes of these keys are spread over all four members; only one has the code.
        for i, key in enumerate(KEYS):
            render = client.ref(Render, key).options(timeout=15.0)
            assert await render.render(i) == i
            assert await render.where() == hosting

        # A kind no member hosts fails at once, definite, naming the kind.
        started = time.monotonic()
        with pytest.raises(phx.AgentNotFound, match=r"no member of the cluster hosts agent "
                           r"kind 'capability\.unhosted'") as info:
            await client.ref(Unhosted, "x").options(timeout=10.0).ping()
        assert info.value.definite
        assert time.monotonic() - started < 2.0  # not at the timeout

        # A member restarted with the module imported takes its share of the keys,
        # with their committed state.
        assert await cluster.stop(0) == 0  # a graceful leave hands its replicas over
        cluster.nodes[0].extra_args = ["--import", "capability_agents"]
        await cluster.start_node(0)
        await cluster.wait_converged()
        for i, key in enumerate(KEYS):
            render = client.ref(Render, key).options(timeout=15.0)
            assert await render.render(1) == i + 1
        # Its share moves to it in the background: in the rebalancers' pass after the
        # table change, or in their next periodic pass (every 5 s) when its report of
        # its kinds came too late for that one.
        capable = {cluster.nodes[0].name, hosting}
        deadline = time.monotonic() + 15.0
        while (hosts := {await client.ref(Render, key).where() for key in KEYS}) != capable:
            assert hosts <= capable
            assert time.monotonic() < deadline, f"keys on {hosts} after 15 s, not {capable}"
            await asyncio.sleep(0.1)

        # The first member with the code dies: its keys go to the other one, state intact.
        cluster.kill(index)
        await cluster.wait(index)
        for i, key in enumerate(KEYS):
            render = client.ref(Render, key).options(timeout=30.0)
            assert await render.render(1) == i + 2
            assert await render.where() == cluster.nodes[0].name
