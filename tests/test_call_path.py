"""How many source files one remote call and one quorum commit pass through
(``benchmarks/call_path.py``, ``docs/design/architecture.md``). The ceilings only go
down, except for correctness: the read lease put two files on the remote call's walk
(18 -> 20); the in-flight requests (`_transport/pending.py`) and the kind registry
(`_agents/kinds.py`) each moved into a file of their own (20 -> 22).
Issue 14 aims at 8 files or fewer for a remote call."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "call_path.py"

REMOTE_CALL_CEILING = 22
QUORUM_COMMIT_CEILING = 27


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("call_path", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_a_remote_call_and_a_quorum_commit_stay_within_their_file_counts() -> None:
    found = await _load().walks(runs=5)
    read, add = found["read"], found["add"]
    # The walks really are a remote call and a commit: both cross the transport, only
    # the write reaches replication; the read only checks the leader's read lease.
    assert {"_agents/dispatch.py", "_transport/connection.py", "_wire/codec.py"} <= read
    assert {f for f in read if f.startswith("_replication/")} == {
        "_replication/leases.py", "_replication/groups.py"}
    assert {"_replication/commits.py", "_replication/replica.py"} <= add
    # The node is the composition root: it is not on the path of a message.
    assert not any(f.startswith("_node/") for f in add)
    assert len(read) <= REMOTE_CALL_CEILING, sorted(read)
    assert len(add) <= QUORUM_COMMIT_CEILING, sorted(add)
