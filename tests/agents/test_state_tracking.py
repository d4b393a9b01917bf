"""State tracking (``_agents/tracking.py``): a big state is rolled back and committed
attribute by attribute, and the result is exactly what the plain path (encode the whole
state after each message, decode it on a rollback) gives."""

from __future__ import annotations

import asyncio
import copy
import heapq
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tracking_checks import end_message, full

import phoenix_cluster as phx
from phoenix_cluster._agents.state import trackable
from phoenix_cluster._agents.tracking import SMALL_STATE, StateTracker
from phoenix_cluster._agents.watched import WatchedDict
from phoenix_cluster.testing.memory import MemoryCluster, run_virtual

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode

BIG = 2_000  # entries: encoded, well past SMALL_STATE


class Point(msgspec.Struct):
    x: int
    y: int


class Frozen(msgspec.Struct, frozen=True):
    x: int
    tags: tuple[str, ...] = ()


class Bag(phx.Agent, kind="tests.tracking.bag"):
    """Any state: the property test sets its attributes directly."""


class Store(phx.Agent, kind="tests.tracking.store"):
    where: Point

    def __init__(self) -> None:
        self.items: dict[str, int] = {str(i): i for i in range(BIG)}
        self.groups: dict[str, list[int]] = {"a": [1]}
        self.nested: dict[str, dict[str, int]] = {"x": {"y": 1}}
        self.log: list[int] = []
        self.where = Point(0, 0)
        self.count = 0

    def bump(self) -> int:
        self.count += 1
        return self.count

    def change_all_then_fail(self, k: str) -> None:
        self.count += 1
        self.items[k] = -1
        del self.items["0"]
        self.groups["a"].append(2)
        self.groups.setdefault("b", []).append(3)
        self.nested["x"]["y"] += 1
        self.nested["z"] = {"new": 1}
        self.log.append(1)
        heapq.heappush(self.log, 0)  # below list methods: lists are never trusted
        self.where.x = 5
        self.added = "new attribute"
        del self.count
        raise ValueError("refused")

    def add_group(self, k: str, values: list[int]) -> None:
        self.groups[k] = values

    def append_to_group(self, k: str, v: int) -> None:
        self.groups[k].append(v)

    def nest(self, k: str, v: dict[str, int]) -> None:
        self.nested[k] = v

    def nested_then_fail(self, k: str) -> None:
        self.nested[k]["n"] = 99
        raise ValueError("refused")

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.snapshot()
        return state


class Own(phx.Agent, kind="tests.tracking.own"):
    """A kind with its own snapshot/restore keeps the plain path."""

    def __init__(self) -> None:
        self.items = {str(i): i for i in range(BIG)}

    def snapshot(self) -> Any:
        return {"items": self.items}

    def restore(self, state: Any) -> None:
        self.items = state["items"]

    def put_then_fail(self, k: str) -> None:
        self.items[k] = 1
        raise ValueError("refused")

    def size(self) -> int:
        return len(self.items)


# ----------------------------------------------------------------------------- unit


def _bag(**attrs: Any) -> Bag:
    agent = Bag.__new__(Bag)
    agent.__dict__.update(attrs)
    return agent


def test_the_tracked_bytes_are_the_plain_encoding_and_a_copy_is_a_plain_dict() -> None:
    agent = _bag(a={"k": {"j": 1}}, b=[1, 2], c=Point(1, 2), n=None, _private=object())
    tracker = StateTracker(agent.__dict__, {}, _encode, _decode, lists=False)
    assert tracker.state() == full(agent)
    watched = agent.__dict__["a"]
    assert type(watched) is WatchedDict and type(watched["k"]) is WatchedDict
    assert isinstance(watched, dict) and watched == {"k": {"j": 1}}
    assert type(watched.copy()) is dict and type(copy.copy(watched)) is dict
    assert type(copy.deepcopy(watched)["k"]) is dict
    assert tracker.opaque == {"b", "c"}  # a list and a mutable Struct are re-encoded


def test_an_unchanged_state_costs_no_encoding_and_commits_nothing() -> None:
    agent = _bag(items={str(i): i for i in range(BIG)}, t=(1, "a"), f=Frozen(1, ("x",)))
    tracker = StateTracker(agent.__dict__, {}, _encode, _decode, lists=False)
    assert not tracker.opaque
    assert tracker.collect(agent.__dict__) is None
    agent.__dict__["t"] = (1, "a")  # a new object, equal: nothing to commit
    assert tracker.collect(agent.__dict__) is None


def test_a_dict_held_elsewhere_is_not_replaced_and_its_attribute_is_reencoded() -> None:
    shared: dict[str, int] = {"x": 1}
    agent = _bag(a=shared, _alias=shared)
    tracker = StateTracker(agent.__dict__, {}, _encode, _decode, lists=False)
    assert agent.__dict__["a"] is shared and tracker.opaque == {"a"}
    agent.__dict__["_alias"]["x"] = 2  # through the private alias: still seen
    change = tracker.collect(agent.__dict__)
    assert change is not None and change.state() == full(agent)


@pytest.mark.parametrize("change", [
    lambda d: d.clear(),
    lambda d: d.popitem(),
    lambda d: d.pop("c"),  # the last key: put back at the end, in order
    lambda d: d.update(a=9, z={"new": 1}),
    lambda d: d["b"].__setitem__("x", 2),
    lambda d: d.__delitem__("a"),  # a key before the last: a journaled copy keeps the order
])
def test_a_dict_change_is_undone_by_its_journal_in_order(change: Any) -> None:
    agent = _bag(d={"a": 1, "b": {"x": 1}, "c": (1, 2)}, big={str(i): i for i in range(BIG)})
    tracker = StateTracker(agent.__dict__, {}, _encode, _decode, lists=False)
    committed, big = full(agent), agent.__dict__["big"]
    assert not tracker.opaque
    before = agent.__dict__["d"]
    change(before)
    tracker.rollback(agent.__dict__)
    assert full(agent) == committed
    assert agent.__dict__["d"] is before  # the journal keeps the objects: nothing decoded
    assert agent.__dict__["big"] is big
    assert tracker.collect(agent.__dict__) is None


# ----------------------------------------------------------------------------- property

_scalars = (st.none() | st.booleans() | st.integers(-(2**40), 2**40)
            | st.floats(allow_nan=False) | st.text(max_size=4) | st.binary(max_size=4))
_mixed = st.recursive(
    _scalars | st.builds(Point, st.integers(0, 9), st.integers(0, 9))
    | st.builds(Frozen, st.integers(0, 9)),
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=3), inner, max_size=4)
                   | st.tuples(inner, inner)),
    max_leaves=12,
)
_dicts = st.recursive(  # what the journal alone rolls back
    _scalars | st.tuples(_scalars, _scalars),
    lambda inner: st.dictionaries(st.sampled_from("pqrstu"), inner, max_size=5),
    max_leaves=16,
)
_values = _dicts | _mixed
_names = st.sampled_from(["a", "b", "c", "d"])


def _reachable(agent: Bag, graveyard: list[Any]) -> list[Any]:
    """Every mutable object the state (private attributes too) reaches, and detached
    ones the test kept: the targets of mutations."""
    out: list[Any] = []
    seen: set[int] = set()

    def walk(v: Any) -> None:
        if isinstance(v, (dict, list, Point)) and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
            children = (v.values() if isinstance(v, dict) else v if isinstance(v, list)
                        else ())
            for c in list(children):
                walk(c)
        elif isinstance(v, tuple):
            for c in v:
                walk(c)

    for v in list(agent.__dict__.values()) + graveyard:
        walk(v)
    return out


def _mutate(data: st.DataObject, agent: Bag, graveyard: list[Any]) -> None:
    attrs = agent.__dict__
    targets = _reachable(agent, graveyard)
    existing = [*targets, *attrs.values()]

    def value() -> Any:
        alias: bool = bool(existing) and data.draw(st.booleans())
        if alias:
            return data.draw(st.sampled_from(existing))  # an alias of something there
        return data.draw(_values)

    op = data.draw(st.sampled_from(["set", "del", "stash", "inner", "inner", "inner"]))
    if op == "set":
        setattr(agent, data.draw(_names), value())
    elif op == "del":
        name = data.draw(_names)
        if name in attrs:
            graveyard.append(attrs[name])
            delattr(agent, name)
    elif op == "stash" and targets:
        agent._stash = data.draw(st.sampled_from(targets))  # type: ignore[attr-defined]
    elif targets:
        t = data.draw(st.sampled_from(targets))
        keys: st.SearchStrategy[Any] = st.text(max_size=3)
        if isinstance(t, dict) and t and data.draw(st.booleans()):
            keys = st.sampled_from(list(t))
        key = data.draw(keys)
        if isinstance(t, dict):
            how = data.draw(st.sampled_from(
                ["set", "del", "pop", "popitem", "setdefault", "update", "ior", "clear"]))
            if how == "set":
                t[key] = value()
            elif how == "del" and key in t:
                graveyard.append(t[key])
                del t[key]
            elif how == "pop":
                graveyard.append(t.pop(key, None))
            elif how == "popitem" and t:
                graveyard.append(t.popitem())
            elif how == "setdefault":
                graveyard.append(t.setdefault(key, value()))
            elif how == "update":
                t.update({key: value()}, z=value())
            elif how == "ior":
                t |= {key: value()}
            elif how == "clear":
                graveyard.extend(t.values())
                t.clear()
        elif isinstance(t, list):
            how = data.draw(st.sampled_from(["append", "heap", "base", "pop", "set"]))
            if how == "append":
                t.append(value())
            elif how == "heap" and all(type(v) is int for v in t):
                heapq.heappush(t, data.draw(st.integers(0, 9)))
            elif how == "base":
                list.append(t, value())
            elif how == "pop" and t:
                graveyard.append(t.pop())
            elif how == "set" and t:
                t[0] = value()
        else:
            t.x = data.draw(st.integers(0, 99))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_rollback_and_commit_match_the_plain_path(data: st.DataObject) -> None:
    """Random states and mutations (aliases, private references, detached objects,
    changes below the containers' methods): after each message, a commit's bytes are
    the whole state's encoding, and a rollback returns exactly to the last commit."""
    agent = _bag(**data.draw(st.dictionaries(_names, _values, max_size=4)))
    tracker = StateTracker(agent.__dict__, {}, _encode, _decode, lists=False)
    committed = full(agent)
    assert tracker.state() == committed
    graveyard: list[Any] = []
    for _ in range(data.draw(st.integers(1, 6))):
        for _ in range(data.draw(st.integers(0, 4))):
            _mutate(data, agent, graveyard)
        try:
            now = full(agent)
        except (RecursionError, msgspec.EncodeError, TypeError):
            now = None  # a cycle, or a float key: the handler fails as it does today
        commit = now is not None and data.draw(st.booleans())
        committed = end_message(tracker, agent, committed, now, commit)


# ----------------------------------------------------------------------------- node


class Scripted(phx.Agent, kind="tests.tracking.scripted"):
    """Runs a script of state changes sent as an argument (the property test below)."""

    def __init__(self) -> None:
        self.big = {str(i): i for i in range(BIG)}

    def run(self, script: list[Any]) -> None:
        for step in script:
            _step(self, step)

    def run_then_fail(self, script: list[Any]) -> None:
        self.run(script)
        raise ValueError("refused")

    def raw(self) -> bytes:
        return _encode(self.snapshot())


def _step(agent: phx.Agent, step: list[Any]) -> None:
    op, name, keys, value = step
    attrs = agent.__dict__
    if op == "set":
        setattr(agent, name, value)
        return
    if op == "del":
        if name in attrs:
            delattr(agent, name)
        return
    target = attrs.get(name)
    for k in keys[:-1]:  # down through dicts while the path exists
        if not isinstance(target, dict) or k not in target:
            return
        target = target[k]
    key = keys[-1] if keys else ""
    if isinstance(target, dict):
        if op == "put":
            target[key] = value
        elif op == "pop":
            target.pop(key, None)
        elif op == "grow" and isinstance(target.get(key), list):
            target[key].append(value)
    elif isinstance(target, list) and op == "grow":
        target.append(value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=2),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("xyz"),
                                                                 inner, max_size=3),
    max_leaves=8,
)
_script = st.lists(st.tuples(st.sampled_from(["set", "del", "put", "pop", "grow"]),
                             st.sampled_from(["big", "a", "b"]),
                             st.lists(st.sampled_from(["x", "y", "z", "1"]), max_size=3),
                             _json).map(list), max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(committed=st.lists(_script, max_size=3), failing=_script)
def test_a_failing_handler_leaves_the_state_as_it_was_through_the_runtime(
        committed: list[list[Any]], failing: list[Any]) -> None:
    """Scripts of changes run by handlers of a tracked agent: after one that raises,
    the state is byte for byte the one before it, and the committed bytes are the
    state's encoding."""
    async def scenario() -> None:
        async with phx.Node() as node:
            ref = node.ref(Scripted, "s")
            for script in committed:
                await ref.run(script)
            before = await ref.raw()
            with pytest.raises(phx.AgentError, match="refused"):
                await ref.run_then_fail(failing)
            assert await ref.raw() == before
            act = node._runtime.activation(Scripted._phx_spec, "s")
            assert act is not None and act.committed == before
            assert act.tracker is not None or len(before) < SMALL_STATE  # (raw() settled)

    asyncio.run(scenario())


def test_which_kinds_are_tracked() -> None:
    assert trackable(Store._phx_spec)
    assert not trackable(Own._phx_spec)


async def test_a_failing_handler_leaves_a_tracked_state_exactly_as_it_was() -> None:
    async with phx.Node() as node:
        ref = node.ref(Store, "s")
        assert await ref.bump() == 1
        act = node._runtime.activation(Store._phx_spec, "s")
        assert act is not None and act.tracker is not None  # past SMALL_STATE
        before = await ref.state()
        with pytest.raises(phx.AgentError, match="refused"):
            await ref.change_all_then_fail("k")
        assert await ref.state() == before
        assert act.agent is not None and act.committed == _encode(act.agent.snapshot())
        assert await ref.bump() == 2


async def test_values_put_into_a_tracked_dict_are_watched_from_then_on() -> None:
    async with phx.Node() as node:
        ref = node.ref(Store, "w")
        await ref.bump()
        await ref.add_group("g", [1])  # an argument stored in the state
        await ref.append_to_group("g", 2)
        await ref.nest("n", {"a": 1})
        act = node._runtime.activation(Store._phx_spec, "w")
        assert act is not None and act.tracker is not None
        assert "nested" not in act.tracker.opaque  # the argument's dict was adopted
        with pytest.raises(phx.AgentError):
            await ref.nested_then_fail("n")
        state = await ref.state()
        assert state["groups"]["g"] == [1, 2] and state["nested"]["n"] == {"a": 1}
        assert act.agent is not None and act.committed == _encode(act.agent.snapshot())


async def test_a_tracked_state_survives_passivation_and_is_tracked_again() -> None:
    async with phx.Node() as node:
        ref = node.ref(Store, "p")
        await ref.bump()
        await ref.nest("n", {"a": 1})
        before = await ref.state()
        act = node._runtime.activation(Store._phx_spec, "p")
        assert act is not None and act.tracker is not None
        node._runtime.passivate(act, reason="test")
        assert node._runtime.activation(Store._phx_spec, "p") is None
        assert await ref.state() == before
        assert await ref.bump() == 2
        again = node._runtime.activation(Store._phx_spec, "p")
        assert again is not None and again.tracker is not None


async def test_a_kind_with_its_own_snapshot_keeps_the_plain_path() -> None:
    async with phx.Node() as node:
        ref = node.ref(Own, "o")
        with pytest.raises(phx.AgentError):
            await ref.put_then_fail("new")
        assert await ref.size() == BIG
        act = node._runtime.activation(Own._phx_spec, "o")
        assert act is not None and act.tracker is None and len(act.committed) > SMALL_STATE


def test_a_replicated_tracked_state_fails_over_with_what_was_committed() -> None:
    """A quorum kind's replicas get the whole state's bytes joined from the tracker:
    after the owner dies, the agent resumes elsewhere with the committed changes and
    without the rolled-back ones."""
    async def main() -> None:
        async with MemoryCluster(3) as cluster:
            n1 = cluster.nodes[0]
            ref = n1.ref(Store, "replicated")
            assert await ref.bump() == 1
            assert await ref.bump() == 2  # tracked from the first commit on
            await ref.add_group("g", [7])
            with pytest.raises(phx.AgentError):
                await ref.change_all_then_fail("k")
            before = await ref.state()
            owner = await n1.where(ref)
            to = next(n.name for n in cluster.nodes if n.name != owner)
            await n1.migrate(ref, to=to)  # a handoff carries the joined bytes
            assert await n1.where(ref) == to and await ref.state() == before
            assert await ref.bump() == 3
            before = await ref.state()
            owner = to
            survivor = next(n for n in cluster.nodes if n.name != owner)
            cluster.kill(owner)
            await cluster.wait_settled()
            after = await survivor.ref(Store, "replicated").state()
            assert after == before and after["count"] == 3 and after["groups"]["g"] == [7]

    run_virtual(main())
