"""Active-active kinds in the agent runtime (``_agents/active_active.py``), in process.

An embedded node runs the kinds; where a test needs the merge service, a
:class:`CrdtSync` whose peers are all unreachable is attached to the runtime, and peers'
pushes are fed to its ``handle`` directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

import phoenix_cluster as phx
from phoenix_cluster import crdt
from phoenix_cluster._replication.crdt_sync import CrdtSync
from phoenix_cluster._replication.merging import Push, PushBatch, encode_fields
from phoenix_cluster.errors import NodeUnavailable


class Tags(phx.Agent, kind="test.merging.tags", consistency="crdt"):
    tags: crdt.ORSet[str]

    def __init__(self) -> None:
        self.tags = crdt.ORSet()
        self.hits = crdt.GCounter()  # not annotated: typed from the instance

    async def tag(self, name: str) -> list[str]:
        self.tags.add(name, replica=self.replica)
        self.hits.increment(replica=self.replica)
        return sorted(self.tags)

    async def tag_then_fail(self, name: str) -> None:
        self.tags.add(name, replica=self.replica)
        self.hits.increment(replica=self.replica)
        raise ValueError("no")

    async def break_it(self) -> None:
        self.hits = 7  # type: ignore[assignment]

    async def read(self) -> tuple[list[str], int]:
        return sorted(self.tags), self.hits.value

    async def whoami(self) -> str:
        return self.replica


@pytest.fixture
async def node() -> AsyncIterator[phx.Node]:
    async with phx.Node() as node:
        yield node


async def attach_sync(node: phx.Node) -> CrdtSync:
    async def unreachable(dst: str, method: str, payload: bytes, timeout_s: float) -> bytes:
        raise NodeUnavailable(f"{dst} is unreachable", definite=True)

    active = node._runtime.active_active
    sync = CrdtSync(node.name, unreachable, node.env, schema_of=active.schema,
                    on_merged=active.merged)
    node._stack.crdt_sync = sync
    return sync


def pushed(key: str, tag: str, replica: str) -> bytes:
    tags = crdt.ORSet[str]()
    tags.add(tag, replica=replica)
    return msgspec.msgpack.encode(PushBatch((Push(Tags._phx_spec.name, key,
                                                  encode_fields({"tags": tags})),)))


def test_consistency_is_fenced_or_crdt_and_crdt_needs_hash_placement() -> None:
    with pytest.raises(phx.ConfigError, match="consistency must be one of") as bad:
        class Eventual(phx.Agent, kind="test.merging.eventual",
                       consistency="eventual"):  # type: ignore[arg-type]
            pass
    assert bad.value.key == "consistency"
    with pytest.raises(phx.ConfigError, match="needs placement='hash'") as bad:
        class Local(phx.Agent, kind="test.merging.local", consistency="crdt",
                    placement="local"):
            pass
    assert bad.value.key == "placement"
    assert Tags._phx_spec.consistency == "crdt"


async def test_the_replica_id_is_the_node_name_and_incarnation(node: phx.Node) -> None:
    assert await node.ref(Tags, "a").whoami() == f"{node.name}@{node.incarnation}"


async def test_a_push_joins_a_live_activation_between_messages(node: phx.Node) -> None:
    sync = await attach_sync(node)
    tags = node.ref(Tags, "live")
    assert await tags.tag("mine") == ["mine"]
    await sync.handle("push", pushed("live", "theirs", "elsewhere@1"))
    assert await tags.read() == (["mine", "theirs"], 1)
    assert await tags.tag("more") == ["mine", "more", "theirs"]
    stored = sync.stored(Tags._phx_spec.name, "live")
    assert stored is not None and stored["tags"].value == {"mine", "more", "theirs"}


async def test_a_push_to_an_agent_not_active_here_is_loaded_at_activation(
    node: phx.Node,
) -> None:
    sync = await attach_sync(node)
    await sync.handle("push", pushed("cold", "early", "elsewhere@1"))
    assert await node.ref(Tags, "cold").read() == (["early"], 0)


async def test_a_failed_handler_rolls_back_to_typed_crdt_fields(node: phx.Node) -> None:
    await attach_sync(node)
    tags = node.ref(Tags, "rb")
    await tags.tag("kept")
    with pytest.raises(phx.AgentError):
        await tags.tag_then_fail("dropped")
    assert await tags.read() == (["kept"], 1)
    assert await tags.tag("again") == ["again", "kept"]


async def test_a_handler_that_leaves_a_plain_field_fails_typed_and_changes_nothing(
    node: phx.Node, caplog: pytest.LogCaptureFixture,
) -> None:
    tags = node.ref(Tags, "bad")
    await tags.tag("x")
    with pytest.raises(phx.AgentError, match="state field 'hits' is a int") as failed:
        await tags.break_it()
    assert failed.value.remote_type == "phoenix_cluster.errors.ConfigError"
    assert "state field 'hits' is a int" in caplog.text
    assert await tags.read() == (["x"], 1)
