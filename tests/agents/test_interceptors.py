"""Interceptors (``phx.Interceptor``): their order, what they see, and what a caller gets
when one raises, on one node and across nodes (incoming ones run on the owner).

In one process, in virtual time (``phoenix_cluster.testing.memory``)."""

from __future__ import annotations

from typing import Any

import pytest

import phoenix_cluster as phx
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual


class Account(phx.Agent, kind="tests.interceptors.account"):
    def __init__(self) -> None:
        self.balance = 0

    async def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    async def read(self) -> int:
        return self.balance

    async def fail(self) -> None:
        raise ValueError("the handler's own failure")


class Recorder(phx.Interceptor):
    """Records what it sees, as ``name:direction:node:method``."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def on_outgoing(self, call: phx.CallInfo, proceed: phx.Proceed) -> Any:
        self.log.append(f"{self.name}:out:{call.node}:{call.method}")
        return await proceed()

    async def on_incoming(self, call: phx.CallInfo, proceed: phx.Proceed) -> Any:
        self.log.append(f"{self.name}:in:{call.node}:{call.method}")
        result = await proceed()
        self.log.append(f"{self.name}:done:{call.node}:{call.method}")
        return result


class NoNegative(phx.Interceptor):
    """Validation on the owner: refuses negative deposits before the handler runs."""

    async def on_incoming(self, call: phx.CallInfo, proceed: phx.Proceed) -> Any:
        if call.method == "deposit" and call.args[0] < 0:
            raise PermissionError(f"negative deposit {call.args[0]} to {call.key}")
        return await proceed()


class FailAfter(phx.Interceptor):
    """Raises after the handler ran: the state is rolled back, the outcome unknown."""

    async def on_incoming(self, call: phx.CallInfo, proceed: phx.Proceed) -> Any:
        result = await proceed()
        if call.method == "deposit" and call.args[0] == 13:
            raise RuntimeError("unlucky")
        return result


class Doubler(phx.Interceptor):
    """Outgoing: changes the result the caller sees."""

    async def on_outgoing(self, call: phx.CallInfo, proceed: phx.Proceed) -> Any:
        result = await proceed()
        return result * 2 if call.method == "read" else result


class DenyOutgoing(phx.Interceptor):
    async def on_outgoing(self, call: phx.CallInfo, proceed: phx.Proceed) -> Any:
        if call.key.startswith("secret"):
            raise PermissionError(f"{call.key} is off limits")
        return await proceed()


def test_order_and_what_they_see_on_one_node() -> None:
    async def scenario() -> None:
        log: list[str] = []
        async with phx.Node("solo", interceptors=[Recorder("a", log)]) as node:
            node.add_interceptor(Recorder("b", log))
            assert await node.ref(Account, "x").deposit(5) == 5
            assert log == ["a:out:solo:deposit", "b:out:solo:deposit",
                           "a:in:solo:deposit", "b:in:solo:deposit",
                           "b:done:solo:deposit", "a:done:solo:deposit"]
            log.clear()
            await node.ref(Account, "x").deposit.cast(1)
            assert await node.ref(Account, "x").read() == 6
            assert log[:2] == ["a:out:solo:deposit", "b:out:solo:deposit"]
            assert "a:in:solo:deposit" in log
            with pytest.raises(TypeError, match=r"must subclass phx\.Interceptor"):
                node.add_interceptor(object())  # type: ignore[arg-type]

    run_virtual(scenario())


def test_raising_interceptors_give_typed_errors_on_one_node() -> None:
    async def scenario() -> None:
        async with phx.Node(interceptors=[NoNegative(), FailAfter(), Doubler(),
                                          DenyOutgoing()]) as node:
            acc = node.ref(Account, "x")
            assert await acc.deposit(10) == 10
            with pytest.raises(phx.CallRejected) as refused:
                await acc.deposit(-3)
            assert refused.value.definite
            assert "PermissionError: negative deposit -3 to x" in str(refused.value)
            with pytest.raises(phx.CallRejected) as after:
                await acc.deposit(13)
            assert not after.value.definite  # the handler ran; rolled back
            assert await acc.read() == 20  # 10, doubled by the outgoing Doubler
            with pytest.raises(phx.CallRejected) as denied:
                await node.ref(Account, "secret-1").deposit(1)
            assert denied.value.definite and "outgoing interceptor" in str(denied.value)
            assert "secret-1" not in node.kinds()["tests.interceptors.account"].activations
            # The handler's own failure stays an AgentError.
            with pytest.raises(phx.AgentError, match="the handler's own failure"):
                await acc.fail()

    run_virtual(scenario())


def test_incoming_interceptors_run_on_the_owner() -> None:
    async def scenario() -> None:
        async with MemoryCluster(3) as cluster:
            log: list[str] = []
            for node in cluster.nodes:
                node.add_interceptor(Recorder(node.name, log))
                node.add_interceptor(NoNegative())
            caller = cluster.nodes[0]
            placement = caller._stack.placement
            assert placement is not None
            key = next(k for k in (f"k{i}" for i in range(100))
                       if placement.home("tests.interceptors.account", k) != caller.name)
            acc = caller.ref(Account, key)
            owner = placement.home("tests.interceptors.account", key)
            assert await acc.deposit(4) == 4
            assert log == [f"{caller.name}:out:{caller.name}:deposit",
                           f"{owner}:in:{owner}:deposit", f"{owner}:done:{owner}:deposit"]
            with pytest.raises(phx.CallRejected) as refused:
                await acc.deposit(-1)
            assert refused.value.definite
            assert f"incoming interceptor on {owner}" in str(refused.value)
            assert await acc.read() == 4

    run_virtual(scenario())
