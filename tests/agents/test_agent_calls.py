"""Agents on one node: the public contract, call by call."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import phoenix_cluster as phx


class Counter(phx.Agent):
    def __init__(self) -> None:
        self.count = 0

    async def increment(self, by: int = 1) -> int:
        self.count += by
        return self.count


class Point(msgspec.Struct):
    x: int
    y: int


class Recorder(phx.Agent, kind="tests.recorder"):
    seen: list[int]

    def __init__(self) -> None:
        self.seen = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def record(self, n: int) -> int:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0)  # let other callers try to interleave
        self.seen.append(n)
        self.in_flight -= 1
        return len(self.seen)

    def seen_list(self) -> list[int]:  # a plain (sync) handler works too
        return self.seen

    async def peak(self) -> int:
        return self.max_in_flight

    async def whoami(self) -> list[str]:
        return [self.key, self.node.name]

    async def shift(self, p: Point, d: tuple[int, int]) -> Point:
        return Point(p.x + d[0], p.y + d[1])

    async def mutate_arg(self, items: list[int]) -> list[int]:
        items.append(99)
        return items

    async def echo(self, value: Any) -> Any:
        return value


class Fragile(phx.Agent, kind="tests.fragile"):
    def __init__(self) -> None:
        self.items: list[int] = [1]
        self.total = 1

    async def add_then_fail(self, n: int) -> None:
        self.items.append(n)
        self.total += n
        self.extra = "should vanish"
        raise ValueError(f"refusing {n}")

    async def add(self, n: int) -> list[int]:
        self.items.append(n)
        self.total += n
        return self.items

    async def unserializable_result(self) -> object:
        self.total = -1
        return object()

    async def unserializable_state(self) -> None:
        self.handle = object()

    async def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.snapshot()
        return state


async def test_design_contract_example() -> None:
    async with phx.Node() as node:
        c = node.ref(Counter, "alice")
        assert await c.increment(5) == 5
        await c.increment.cast(2)
        assert await c.increment(0) == 7


async def test_kind_names_default_and_override() -> None:
    assert Counter._phx_spec.name == f"{__name__}.Counter"
    assert Recorder._phx_spec.name == "tests.recorder"
    async with phx.Node() as node:
        by_name = node.ref("tests.recorder", "k")
        assert await by_name.record(1) == 1
        assert await node.ref(Recorder, "k").record(2) == 2  # same agent
        with pytest.raises(phx.AgentNotFound, match=r"unknown agent kind 'no\.such'"):
            node.ref("no.such", "k")


async def test_unknown_and_reserved_methods_are_not_found() -> None:
    async with phx.Node() as node:
        ref = node.ref(Counter, "a")
        with pytest.raises(phx.AgentNotFound, match="no method 'decrement'") as info:
            await ref.decrement()
        assert info.value.definite
        for reserved in ("snapshot", "restore", "on_activate", "set_timer"):
            with pytest.raises(phx.AgentNotFound):
                await getattr(ref, reserved)()
        with pytest.raises(phx.AgentNotFound):
            await ref.decrement.cast()
        with pytest.raises(AttributeError):
            ref._private  # noqa: B018


async def test_messages_run_one_at_a_time_in_arrival_order() -> None:
    async with phx.Node() as node:
        ref = node.ref(Recorder, "order")
        calls = [ref.record(i) for i in range(0, 200, 2)]
        for i in range(1, 200, 2):
            await ref.record.cast(i)  # accepted in order, interleaved with the calls
        results = await asyncio.gather(*calls)
        seen = await ref.seen_list()
        assert sorted(seen) == list(range(200))
        assert [n for n in seen if n % 2 == 0] == list(range(0, 200, 2))
        assert [n for n in seen if n % 2 == 1] == list(range(1, 200, 2))
        assert sorted(results) == results
        assert await ref.peak() == 1


async def test_self_key_and_node_are_not_state() -> None:
    async with phx.Node(name="n1") as node:
        ref = node.ref(Recorder, "who")
        assert await ref.whoami() == ["who", "n1"]
        act = node._runtime.activation(Recorder._phx_spec, "who")
        assert act is not None and act.agent is not None
        assert set(act.agent.snapshot()) == {"seen", "in_flight", "max_in_flight"}


async def test_arguments_and_results_pass_through_the_codec() -> None:
    async with phx.Node() as node:
        ref = node.ref(Recorder, "codec")
        moved = await ref.shift(Point(1, 2), (10, 20))
        assert moved == Point(11, 22)
        mine = [1, 2]
        assert await ref.mutate_arg(mine) == [1, 2, 99]
        assert mine == [1, 2]  # the agent got a copy, as it would on another node
        with pytest.raises(phx.SerializationError, match="argument 'value'") as info:
            await ref.echo(object())  # not msgpack-serializable: refused at the caller
        assert (info.value.kind, info.value.method, info.value.argument) == (
            "tests.recorder", "echo", "value")


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text()
        | st.binary() | st.floats(allow_nan=False),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_codec_round_trip_through_an_agent(value: Any) -> None:
    async def run() -> Any:
        async with phx.Node() as node:
            return await node.ref(Recorder, "echo").echo(value)

    assert asyncio.run(run()) == value


async def test_failing_handler_rolls_state_back() -> None:
    async with phx.Node() as node:
        ref = node.ref(Fragile, "f")
        assert await ref.add(2) == [1, 2]
        with pytest.raises(phx.AgentError) as info:
            await ref.add_then_fail(40)
        err = info.value
        assert err.definite
        assert err.remote_type == "ValueError"
        assert err.remote_message == "refusing 40"
        assert "add_then_fail" in err.remote_traceback
        assert err.request_id is not None
        assert await ref.state() == {"items": [1, 2], "total": 3}
        assert await ref.add(3) == [1, 2, 3]


async def test_unserializable_result_or_state_fails_the_call_with_rollback() -> None:
    async with phx.Node() as node:
        ref = node.ref(Fragile, "u")
        with pytest.raises(phx.SerializationError, match="return value") as info:
            await ref.unserializable_result()
        assert info.value.definite and info.value.argument == "return value"
        with pytest.raises(phx.AgentError):
            await ref.unserializable_state()
        assert await ref.state() == {"items": [1], "total": 1}


async def test_failing_cast_is_logged_and_rolled_back(caplog: pytest.LogCaptureFixture) -> None:
    async with phx.Node() as node:
        ref = node.ref(Fragile, "c")
        await ref.add_then_fail.cast(5)
        assert await ref.state() == {"items": [1], "total": 1}
        assert "refusing 5" in caplog.text or "add_then_fail" in caplog.text


async def test_bad_arguments_fail_the_call_not_the_agent() -> None:
    async with phx.Node() as node:
        ref = node.ref(Counter, "args")
        with pytest.raises(phx.AgentError, match="TypeError"):
            await ref.increment(1, 2, 3)
        with pytest.raises(phx.SerializationError, match="argument 'p'"):
            await node.ref(Recorder, "s").shift({"x": "no"}, (1, 2))
        assert await ref.increment(1) == 1


async def test_idle_agent_is_a_passive_record() -> None:
    async with phx.Node() as node:
        ref = node.ref(Counter, "idle")
        await ref.increment()
        act = node._runtime.activation(Counter._phx_spec, "idle")
        assert act is not None
        assert act.task is None and act.queue is None and act.timers is None
        assert "idle" in repr(act)
