"""Reads of a quorum kind are never answered from a deposed leader's memory.

A call that changes nothing commits nothing, so no replica fences it: the leader answers
it only under its read lease (docs/design/replication.md, "Read leases").
"""

from __future__ import annotations

from shared_cluster import key_hosted_by

import phoenix_cluster as phx
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual, wait_for


class Balance(phx.Agent, kind="tests.memory.balance"):
    def __init__(self) -> None:
        self.amount = 0

    async def deposit(self, n: int) -> int:
        self.amount += n
        return self.amount

    async def read(self) -> int:
        return self.amount


def test_a_leader_cut_off_and_replaced_does_not_answer_reads_from_memory() -> None:
    # n3 leads the key's partition and has the agent active. Cut off, it is replaced:
    # n1 and n2 declare it dead, elect a new leader and commit a deposit there. A read
    # on n3 itself (its own callers still reach it) used to be answered from its memory:
    # the amount before that deposit, a stale read no linearizable register allows.
    async def main() -> None:
        async with MemoryCluster(3, seed=0) as cluster:
            client = await cluster.add("c", role="client")
            await cluster.wait_settled()
            n3 = cluster.node("n3")
            key = await key_hosted_by(client, "n3", Balance, prefix="acct-")
            assert await client.ref(Balance, key).deposit(10) == 10
            assert await n3.ref(Balance, key).read() == 10  # active on n3, lease held
            everyone = {n.name for n in cluster.nodes}
            cluster.network.cut({"n3"}, everyone - {"n3"})
            others = [cluster.node("n1"), cluster.node("n2")]
            await wait_for(lambda: all(n.ring is not None and "n3" not in n.ring.members
                                       for n in others), 30.0, what="n3 declared dead")
            assert await client.ref(Balance, key).options(timeout=5.0).deposit(5) == 15
            outcome: object
            try:
                outcome = await n3.ref(Balance, key).options(timeout=1.0).read()
            except phx.PhoenixError as exc:
                outcome = exc
            assert outcome != 10, "a deposed leader answered a read from stale memory"
            assert isinstance(outcome, phx.PhoenixError), outcome
            cluster.network.heal()
            await wait_for(lambda: all(n.ring is not None and "n3" in n.ring.members
                                       for n in cluster.nodes), 30.0, what="n3 back")
            reader = n3.ref(Balance, key).options(timeout=5.0)
            assert await reader.read() == 15  # after the heal, n3 asks the quorum

    run_virtual(main())
