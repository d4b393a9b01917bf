"""Activation's one cleanup (``_agents/activation.py``): whichever step fails, the state
read so far is kept, the activation is gone, and the queued callers get the error."""

from __future__ import annotations

from typing import ClassVar

import pytest

import phoenix_cluster as phx


class Moody(phx.Agent, kind="tests.activation.moody"):
    refuse: ClassVar[bool] = False

    def __init__(self) -> None:
        self.count = 0

    async def on_activate(self) -> None:
        if Moody.refuse:
            raise RuntimeError("not today")

    async def bump(self) -> int:
        self.count += 1
        return self.count


async def test_a_failed_activation_keeps_the_passivated_state_for_the_next_one() -> None:
    Moody.refuse = False
    async with phx.Node() as node:
        ref = node.ref(Moody, "m")
        assert await ref.bump() == 1
        assert await ref.bump() == 2
        act = node._runtime.activation(Moody._phx_spec, "m")
        assert act is not None
        node._runtime.passivate(act, reason="test")
        assert node._runtime.activation(Moody._phx_spec, "m") is None
        Moody.refuse = True
        try:
            with pytest.raises(phx.AgentError, match="not today"):
                await ref.bump()
            # Nothing half made is left, and the failure counts no activation.
            assert node._runtime.activation(Moody._phx_spec, "m") is None
            assert node.statistics().agents.passive_agents == 1
        finally:
            Moody.refuse = False
        # The next activation restores the state the failed one read.
        assert await ref.bump() == 3
        assert node.statistics().agents.activations == 2
