"""Watched lists (``_agents/watched.py``): a tracked state's lists journal their changes,
so a message that changes one item of a big list is rolled back exactly, and committed,
without encoding the list. (No ``heapq`` in this module: a kind whose module uses it
keeps its lists opaque, ``state.py: lists_trackable``.)"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tracking_checks import end_message, full

import phoenix_cluster as phx
from phoenix_cluster._agents.state import lists_trackable
from phoenix_cluster._agents.tracking import StateTracker
from phoenix_cluster._agents.watched import WatchedDict, WatchedList
from phoenix_cluster._replication.types import Record
from phoenix_cluster.errors import CallTimeout, NoQuorum, PhoenixError

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode

BIG = 2_000  # items: encoded, well past SMALL_STATE


class Bag(phx.Agent, kind="tests.lists.bag"):
    """Any state: the tests set its attributes directly."""


def _bag(**attrs: Any) -> Bag:
    agent = Bag.__new__(Bag)
    agent.__dict__.update(attrs)
    return agent


def _tracked(**attrs: Any) -> tuple[Bag, StateTracker]:
    agent = _bag(**attrs)
    attrs.clear()  # (only the state may hold a value it adopts)
    return agent, StateTracker(agent.__dict__, {}, _encode, _decode, lists=True)


# ----------------------------------------------------------------------------- unit

_CHANGES: list[Any] = [
    lambda lst: lst.append(9),
    lambda lst: lst.append({"new": [1]}),
    lambda lst: lst.extend([7, [8], {"x": 1}]),
    lambda lst: lst.__iadd__([5, 6]),
    lambda lst: lst.insert(0, "first"),
    lambda lst: lst.insert(-1, [1, 2]),
    lambda lst: lst.insert(99, 3),
    lambda lst: lst.__setitem__(1, "one"),
    lambda lst: lst.__setitem__(-1, {"k": 2}),
    lambda lst: lst.__setitem__(slice(1, 3), ["a", "b", "c", "d"]),
    lambda lst: lst.__setitem__(slice(2, 1), ["wedged"]),
    lambda lst: lst.__setitem__(slice(0, None, 2), list(range(len(lst[::2])))),
    lambda lst: lst.__delitem__(0),
    lambda lst: lst.__delitem__(-1),
    lambda lst: lst.__delitem__(slice(1, 4)),
    lambda lst: lst.__delitem__(slice(None, None, 3)),
    lambda lst: lst.pop(),
    lambda lst: lst.pop(0),
    lambda lst: lst.pop(-2),
    lambda lst: lst.remove(3),
    lambda lst: lst.clear(),
    lambda lst: lst.sort(key=str, reverse=True),
    lambda lst: lst.reverse(),
    lambda lst: lst.__imul__(3),
    lambda lst: lst.__imul__(0),
    lambda lst: lst[2]["inner"].append(4),  # a list in a dict in the list
    lambda lst: lst[2].__setitem__("inner", []),
    lambda lst: lst[3].__setitem__(0, {"deep": True}),  # a dict into a nested list
]


@pytest.mark.parametrize("change", _CHANGES)
def test_every_list_change_is_undone_by_its_journal(change: Any) -> None:
    agent, tracker = _tracked(
        lst=[0, 1, {"inner": [1, 2]}, [3, 4], 3, "s"],
        d={"lists": [[1], [2, {"k": []}]]},
        big=list(range(BIG)))
    committed, big = full(agent), agent.__dict__["big"]
    lst = agent.__dict__["lst"]
    assert not tracker.opaque
    assert type(lst) is WatchedList and type(lst[2]["inner"]) is WatchedList
    assert type(agent.__dict__["d"]["lists"][1][1]) is WatchedDict
    change(lst)
    agent.__dict__["d"]["lists"][1].append(5)  # a list in a list in a dict
    tracker.rollback(agent.__dict__)
    assert full(agent) == committed
    assert agent.__dict__["lst"] is lst and agent.__dict__["big"] is big  # nothing decoded
    assert tracker.collect(agent.__dict__) is None


@pytest.mark.parametrize("change", _CHANGES)
def test_every_list_change_commits_the_plain_encoding(change: Any) -> None:
    agent, tracker = _tracked(lst=[0, 1, {"inner": [1, 2]}, [3, 4], 3, "s"],
                              big=list(range(BIG)))
    change(agent.__dict__["lst"])
    after = full(agent)
    change_ = tracker.collect(agent.__dict__)
    assert change_ is not None and change_.state() == after
    tracker.accept(change_)
    assert tracker.state() == after and not tracker.opaque
    for value in agent.__dict__["lst"]:  # what the change put in is watched
        if isinstance(value, (dict, list)):
            assert type(value) in (WatchedDict, WatchedList)
    agent.__dict__["lst"].append([{"later": 1}])
    tracker.rollback(agent.__dict__)
    assert full(agent) == after


def test_a_copy_of_a_watched_list_is_a_plain_list() -> None:
    agent, _ = _tracked(lst=[[1], {"a": [2]}], big=list(range(BIG)))
    lst = agent.__dict__["lst"]
    assert isinstance(lst, list) and lst == [[1], {"a": [2]}] and repr(lst) == "[[1], {'a': [2]}]"
    for copied in (lst.copy(), lst[:], lst * 1, copy.copy(lst), copy.deepcopy(lst)):
        assert type(copied) is list
    assert type(copy.deepcopy(lst)[0]) is list


def test_items_moved_after_they_were_put_in_are_still_adopted() -> None:
    agent, tracker = _tracked(lst=[1, 2], big=list(range(BIG)))
    lst = agent.__dict__["lst"]
    lst.append({"a": 1})
    lst.insert(0, 0)  # moves the dict to another index
    lst.sort(key=str)
    change = tracker.collect(agent.__dict__)
    assert change is not None
    tracker.accept(change)
    assert all(type(v) is WatchedDict for v in lst if isinstance(v, dict))
    committed = full(agent)
    next(v for v in lst if isinstance(v, dict))["a"] = 2
    tracker.rollback(agent.__dict__)
    assert full(agent) == committed


def test_a_list_held_elsewhere_is_not_replaced_and_its_attribute_is_reencoded() -> None:
    shared = [1, 2]
    agent, tracker = _tracked(a=shared, _alias=shared)
    assert agent.__dict__["a"] is shared and tracker.opaque == {"a"}
    shared.append(3)
    change = tracker.collect(agent.__dict__)
    assert change is not None and change.state() == full(agent)


def test_the_committed_bytes_read_mid_message_are_the_committed_state() -> None:
    agent, tracker = _tracked(lst=list(range(BIG)), d={"a": [1], "b": 2})
    agent.__dict__["lst"].append(1)
    change = tracker.collect(agent.__dict__)
    assert change is not None
    tracker.accept(change)  # the list's bytes are stale from here
    committed = full(agent)
    agent.__dict__["lst"][5] = "changed"  # a message in progress
    del agent.__dict__["d"]["a"]
    assert tracker.state() == committed
    assert agent.__dict__["lst"][5] == "changed" and "a" not in agent.__dict__["d"]
    tracker.rollback(agent.__dict__)
    assert full(agent) == committed


class Heap(phx.Agent, kind="tests.lists.heap"):
    def __init__(self) -> None:
        self.queue: list[int] = []

    def push(self, v: int) -> None:
        import heapq  # (in the method: this module must not refer to heapq)

        heapq.heappush(self.queue, v)


def test_lists_are_opaque_for_a_kind_whose_code_uses_heapq() -> None:
    assert lists_trackable(Bag._phx_spec)
    assert not lists_trackable(Heap._phx_spec)
    agent = _bag(lst=[1, 2], big=list(range(BIG)))
    tracker = StateTracker(agent.__dict__, {}, _encode, _decode, lists=False)
    assert type(agent.__dict__["lst"]) is list and tracker.opaque == {"lst", "big"}


# ----------------------------------------------------------------------------- property

_leaf = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=2)
_values = st.recursive(
    _leaf,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.sampled_from("pqrs"), inner, max_size=3)),
    max_leaves=10,
)


def _containers(agent: Bag) -> list[Any]:
    """Every dict and list the state reaches (the targets of mutations)."""
    out: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, (dict, list)) and all(v is not o for o in out):
            out.append(v)
            for c in list(v.values() if isinstance(v, dict) else v):
                walk(c)

    for name, v in list(agent.__dict__.items()):
        if not name.startswith("_"):
            walk(v)
    return out


def _mutate_list(data: st.DataObject, t: list[Any]) -> None:
    n = len(t)
    index = st.integers(-n, n - 1) if n else st.just(0)
    how = data.draw(st.sampled_from(
        ["append", "extend", "iadd", "insert", "set", "setslice", "setext", "del", "delslice",
         "pop", "remove", "clear", "sort", "reverse", "imul"]))
    if how == "append":
        t.append(data.draw(_values))
    elif how == "extend":
        t.extend(data.draw(st.lists(_values, max_size=3)))
    elif how == "iadd":
        t += data.draw(st.lists(_values, max_size=3))
    elif how == "insert":
        t.insert(data.draw(st.integers(-n - 2, n + 2)), data.draw(_values))
    elif how == "set" and n:
        t[data.draw(index)] = data.draw(_values)
    elif how == "setslice":
        a, b = data.draw(st.integers(-n - 1, n + 1)), data.draw(st.integers(-n - 1, n + 1))
        t[a:b] = data.draw(st.lists(_values, max_size=3))
    elif how == "setext" and n:
        step = data.draw(st.sampled_from([2, -1, -2]))
        t[::step] = data.draw(st.lists(_values, min_size=len(t[::step]),
                                       max_size=len(t[::step])))
    elif how == "del" and n:
        del t[data.draw(index)]
    elif how == "delslice":
        a, b = data.draw(st.integers(-n - 1, n + 1)), data.draw(st.integers(-n - 1, n + 1))
        del t[a:b:data.draw(st.sampled_from([1, 2, -1]))]
    elif how == "pop" and n:
        t.pop(data.draw(index))
    elif how == "remove" and n:
        t.remove(t[data.draw(index)])
    elif how == "clear":
        t.clear()
    elif how == "sort":
        t.sort(key=repr, reverse=data.draw(st.booleans()))
    elif how == "reverse":
        t.reverse()
    elif how == "imul" and n < 4:
        t *= data.draw(st.integers(-1, 2))


def _mutate(data: st.DataObject, agent: Bag) -> None:
    targets = _containers(agent)
    if not targets or data.draw(st.integers(0, 9)) == 0:
        setattr(agent, data.draw(st.sampled_from("abc")), data.draw(_values))
        return
    t = data.draw(st.sampled_from(targets))
    if isinstance(t, list):
        _mutate_list(data, t)
        return
    key = data.draw(st.sampled_from(list(t) or ["p"]) | st.sampled_from("pqrs"))
    how = data.draw(st.sampled_from(["set", "del", "pop", "popitem", "clear", "update"]))
    if how == "set":
        t[key] = data.draw(_values)
    elif how == "del" and key in t:
        del t[key]
    elif how == "pop":
        t.pop(key, None)
    elif how == "popitem" and t:
        t.popitem()
    elif how == "clear":
        t.clear()
    elif how == "update":
        t.update({key: data.draw(_values)})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_list_changes_roll_back_and_commit_exactly(data: st.DataObject) -> None:
    """Random nested lists and dicts, random sequences of changes through their
    methods: a rollback returns exactly to the last commit, the bytes read in the
    middle of a message are the committed ones, and a commit's bytes are the state's
    encoding."""
    agent, tracker = _tracked(
        a=data.draw(st.lists(_values, max_size=5)),
        b=data.draw(st.dictionaries(st.sampled_from("pqrs"), _values, max_size=4)),
        c=[data.draw(st.lists(_values, max_size=3))])
    committed = full(agent)
    for _ in range(data.draw(st.integers(1, 5))):
        for _ in range(data.draw(st.integers(1, 6))):
            _mutate(data, agent)
        if data.draw(st.booleans()):
            assert tracker.state() == committed  # mid-message
        now = full(agent)
        committed = end_message(tracker, agent, committed, now, data.draw(st.booleans()))


# ----------------------------------------------------------------------------- node


class Log(phx.Agent, kind="tests.lists.log"):
    def __init__(self) -> None:
        self.items: list[Any] = list(range(BIG))
        self.rows: dict[str, list[Any]] = {"r": [{"n": 1}]}

    def change(self, item: Any) -> int:
        self.items.append(item)
        self.items[0] = item
        self.rows["r"].append({"n": len(self.items)})
        self.rows["r"][0]["n"] += 1
        return len(self.items)

    def change_then_fail(self, item: Any) -> None:
        self.change(item)
        self.items.sort(key=repr)
        del self.rows["r"][0]
        raise ValueError("refused")

    async def change_then_wait(self, item: Any) -> None:
        self.change(item)
        _changed.set()
        await asyncio.sleep(30)

    def raw(self) -> bytes:
        return _encode(self.snapshot())


_changed = asyncio.Event()  # (set by change_then_wait mid-message)


class _Replicas:
    """An in-memory replicator for one embedded node: it keeps the committed records,
    and fails the next commit when told to (``fail``: the error to raise)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Record] = {}
        self.fail: PhoenixError | None = None

    async def load(self, kind: str, key: str, replicas: int = 3) -> Record | None:
        return self.records.get((kind, key))

    async def commit(self, kind: str, key: str, record: Record, durability: str,
                     replicas: int = 3) -> None:
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        self.records[(kind, key)] = record

    def lease_runs(self, kind: str, key: str, replicas: int = 3) -> bool:
        return True  # the only replica: nobody else can lead

    async def confirm_lease(self, kind: str, key: str, replicas: int = 3) -> None:
        return None


async def test_a_failing_handler_leaves_a_tracked_list_exactly_as_it_was() -> None:
    async with phx.Node() as node:
        ref = node.ref(Log, "h")
        assert await ref.change("x") == BIG + 1
        act = node._runtime.activation(Log._phx_spec, "h")
        assert act is not None and act.tracker is not None and not act.tracker.opaque
        before = await ref.raw()
        with pytest.raises(phx.AgentError, match="refused"):
            await ref.change_then_fail("y")
        assert await ref.raw() == before == act.committed
        assert await ref.change("z") == BIG + 2
        assert act.committed == await ref.raw()


@pytest.mark.parametrize("error", [NoQuorum("no quorum: test"), CallTimeout("commit: test")])
async def test_a_failed_commit_rolls_a_tracked_list_back(error: PhoenixError) -> None:
    """The agent is rolled back and stops here; a definite failure (``NoQuorum``) is
    routed again and runs on a new activation from the replicas, an indefinite one
    reaches the caller."""
    async with phx.Node() as node:
        replicas = _Replicas()
        stack: Any = node._runtime.state.cluster  # (an embedded node has no replicator)
        stack.replicator = replicas
        try:
            await _commit_fails(node, replicas, error)
        finally:
            stack.replicator = None


async def _commit_fails(node: phx.Node, replicas: _Replicas, error: PhoenixError) -> None:
    ref = node.ref(Log, "c")
    await ref.change("x")
    await ref.change("y")  # tracked from the first commit on
    act = node._runtime.activation(Log._phx_spec, "c")
    assert act is not None and act.tracker is not None and act.agent is not None
    agent, before = act.agent, await ref.raw()
    replicas.fail = error
    if error.definite:
        assert await ref.change("again") == BIG + 3  # on the state of before
    else:
        with pytest.raises(type(error)):
            await ref.change("lost")
    assert _encode(agent.snapshot()) == before  # rolled back, then stopped here
    assert node._runtime.activation(Log._phx_spec, "c") is not act
    await ref.change("kept")
    assert replicas.records[(Log._phx_spec.name, "c")].state == await ref.raw()


async def test_a_cancelled_handler_rolls_a_tracked_list_back() -> None:
    """A handler cancelled mid-message (what a node stopping does to a busy agent)."""
    async with phx.Node() as node:
        ref = node.ref(Log, "t")
        await ref.change("x")
        act = node._runtime.activation(Log._phx_spec, "t")
        assert act is not None and act.tracker is not None and act.agent is not None
        agent, before = act.agent, await ref.raw()
        call = asyncio.ensure_future(ref.change_then_wait("y"))
        async with asyncio.timeout(10):
            await _changed.wait()
        assert act.tracker.cells["items"].dirty
        assert act.committed == before  # read mid-message: the committed bytes
        assert act.task is not None
        act.task.cancel()
        with pytest.raises(PhoenixError):
            await call
        assert _encode(agent.snapshot()) == before
