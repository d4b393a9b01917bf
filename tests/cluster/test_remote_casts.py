"""Casts from a client process's node to a real node process: acknowledged, never lost.

A remote cast returns once the message is in the owner's mailbox; a full mailbox paces
the sender (or, past the cast's timeout, refuses with ``Overloaded`` at the sender).
Nothing is dropped on the way: the owner's log has no dropped-message line.
"""

from __future__ import annotations

import asyncio

import pytest
from cluster_agents import Sink

import phoenix_cluster as phx
from phoenix_cluster.testing import LocalCluster

pytestmark = pytest.mark.slow

SENDERS = 40
CASTS_EACH = 250


async def test_casts_from_a_client_are_paced_by_a_full_mailbox_and_all_arrive() -> None:
    async with LocalCluster(nodes=1, imports=["cluster_agents"]) as cluster:
        client = await cluster.client()
        ref = client.ref(Sink, "paced")

        async def sender() -> None:
            for _ in range(CASTS_EACH):
                await ref.put.cast()

        # 40 senders at once against a mailbox of 20: the owner must make them wait.
        await asyncio.gather(*(sender() for _ in range(SENDERS)))
        assert await ref.total() == SENDERS * CASTS_EACH

        # A mailbox that stays full past the cast's timeout: the sender is told.
        blocked = client.ref(Sink, "blocked")
        await blocked.put.cast(3.0)  # busy for 3 s
        for _ in range(20):
            await blocked.put.cast()  # fills the mailbox (20)
        with pytest.raises(phx.Overloaded, match="stayed full") as info:
            await blocked.options(timeout=0.5).put.cast()
        assert info.value.definite

        # Typed errors cross the process boundary too, checked before anything is sent.
        with pytest.raises(phx.SerializationError, match="argument 'hold_s'"):
            await ref.put.cast("long")
        assert cluster.nodes[0].dropped_messages() == []
