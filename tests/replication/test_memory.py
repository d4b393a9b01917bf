"""The in-process network: latency, loss, cuts, kills and late deliveries."""

from __future__ import annotations

import pytest

from phoenix_cluster._replication.memory import MemoryNetwork
from phoenix_cluster._replication.simulation import SimClock
from phoenix_cluster.errors import CallTimeout, NodeUnavailable


async def test_calls_cuts_kills_and_late_deliveries() -> None:
    clock = SimClock()
    net = MemoryNetwork(clock, latency_s=0.01)
    seen: list[bytes] = []

    async def echo(method: str, payload: bytes) -> bytes:
        seen.append(payload)
        return method.encode() + payload

    net.attach("b", echo)
    rpc = net.rpc_for("a")
    started = clock.monotonic()
    assert await rpc("b", "m", b"1", 1.0) == b"m1"
    assert clock.monotonic() - started == pytest.approx(0.02)  # there and back
    net.cut(["a"], ["b"], both=False)
    with pytest.raises(CallTimeout):
        await rpc("b", "m", b"2", 1.0)
    assert seen == [b"1"]
    net.heal()
    net.cut(["b"], ["a"], both=False)  # the request arrives, the reply is lost
    with pytest.raises(CallTimeout):
        await rpc("b", "m", b"3", 1.0)
    assert seen == [b"1", b"3"]
    net.heal()
    net.pause("b")
    with pytest.raises(CallTimeout):
        await rpc("b", "m", b"4", 0.5)  # the caller gives up...
    net.resume("b")
    await clock.sleep(0.1)
    assert seen[-1] == b"4"  # ...and the message is handled late anyway
    net.detach("b")
    with pytest.raises(NodeUnavailable) as info:
        await rpc("b", "m", b"5", 1.0)
    assert info.value.definite
    assert net.calls == 5 and "0 nodes" in repr(net)
    await net.aclose()


async def test_loss_is_seeded() -> None:
    async def run() -> list[bool]:
        net = MemoryNetwork(SimClock(), seed=7, loss=0.5)

        async def ok(method: str, payload: bytes) -> bytes:
            return b""

        net.attach("b", ok)
        results = []
        for _ in range(20):
            try:
                await net.call("a", "b", "m", b"", 0.1)
                results.append(True)
            except CallTimeout:
                results.append(False)
        await net.aclose()
        return results

    first, second = await run(), await run()
    assert first == second and True in first and False in first
