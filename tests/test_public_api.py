"""The public surface: what users import is complete, sorted and named publicly."""

from __future__ import annotations

import phoenix_cluster as phx
from phoenix_cluster import coordination, errors, telemetry

# What users call, and nothing else: internals (placement loads, the time seam, method
# handles) stay in their modules; Env is public as phoenix_cluster.testing.Env.
PUBLIC = [
    "Agent", "AgentError", "AgentNotFound", "AgentRef", "AgentTimer", "AuthenticationError",
    "BarrierMismatch", "CallCycle", "CallInfo", "CallRejected", "CallTimeout", "ChildSpec",
    "ConfigError", "DefiniteError", "EventSourcedAgent", "IndefiniteError", "Interceptor",
    "LeaseHeld", "Member", "NameConflict", "NameTaken", "NoBids", "NoQuorum", "Node",
    "NodeClosed", "NodeUnavailable", "NotHolder", "NotIdempotent", "NotLeader",
    "Overloaded", "PhoenixError", "PhoenixInternalError", "PostgresStore", "Proceed",
    "ProtocolError", "Registration", "SagaAborted", "Scored", "SemaphoreMismatch",
    "SerializationError", "Settings", "SqliteStore", "StaleToken", "StateStore",
    "StateVersionError", "StorageError", "StoreUnavailable", "StoredEvents", "StoredState",
    "Supervisor", "SupervisorEscalation", "WriteConflict", "__version__", "coordination",
    "crdt", "reentrant", "telemetry",
]

# phoenix_cluster.coordination: leases, locks, elections, semaphores, barriers, sagas,
# task allocation.
COORDINATION = [
    "Award", "AwardAgent", "BarrierAgent", "FencedResource", "LeaderElection", "Lease",
    "LeaseAgent", "Refs", "SagaAgent", "SagaReport", "SagaStep", "SemaphoreAgent", "StepLog",
    "acquire", "acquire_permit", "allocate", "barrier", "check_token", "elect", "lock",
    "run_saga", "saga_status",
]


def test_all_is_exactly_the_public_surface() -> None:
    assert phx.__all__ == PUBLIC
    for internal in ("NodeLoad", "Env", "MethodRef"):
        assert not hasattr(phx, internal), internal


def test_all_is_sorted_and_complete() -> None:
    assert phx.__all__ == sorted(phx.__all__)
    # (isidentifier: pytest's assertion rewriting adds names like "@py_builtins" to
    # packages that ship a pytest plugin.)
    public = {n for n in dir(phx) if not n.startswith("_") and n.isidentifier()}
    public -= {"errors", "testing"}
    assert public <= set(phx.__all__) | {"telemetry"}
    for name in phx.__all__:
        assert hasattr(phx, name), name


def test_public_classes_name_their_public_module() -> None:
    for name in ("Agent", "Node", "AgentRef", "Supervisor", "ChildSpec"):
        assert getattr(phx, name).__module__ == "phoenix_cluster", name
    assert phx.AgentError.__module__ == "phoenix_cluster.errors"


def test_error_tree_splits_by_outcome() -> None:
    definite = [phx.AgentNotFound, phx.AgentError, phx.CallCycle, phx.NoQuorum, phx.Overloaded,
                phx.AuthenticationError, phx.ProtocolError, phx.NodeClosed, phx.ConfigError]
    for cls in definite:
        assert issubclass(cls, phx.DefiniteError)
        assert cls("x").definite is True
    for cls in (phx.CallTimeout, phx.NodeUnavailable):
        assert issubclass(cls, phx.IndefiniteError)
        assert cls("x").definite is False
    assert issubclass(phx.CallTimeout, TimeoutError)
    assert issubclass(phx.ConfigError, ValueError)
    assert phx.NodeUnavailable("not sent", definite=True).definite is True
    assert errors.__all__ == sorted(errors.__all__)


def test_errors_round_trip_through_their_wire_code() -> None:
    for cls in (phx.AgentNotFound, phx.Overloaded, phx.CallTimeout, phx.NodeUnavailable):
        err = errors.error_from_code(cls.code, "msg", request_id=7)
        assert type(err) is cls
        assert (err.message, err.request_id, err.definite) == ("msg", 7, cls("").definite)
    unknown = errors.error_from_code("from_the_future", "hi")
    assert type(unknown) is phx.DefiniteError and unknown.definite is True
    assert "from_the_future" in str(unknown)
    # a transport error a peer passed on (found by phx simulate: a bare PhoenixError
    # reached the caller, saying nothing of whether the call ran)
    broken = errors.error_from_code("connection_broken", "n14 crashed", definite=False)
    assert type(broken) is phx.IndefiniteError
    refused = errors.error_from_code("connection_broken", "never sent", definite=True)
    assert type(refused) is phx.DefiniteError and refused.definite is True


def test_coordination_namespace() -> None:
    assert coordination.__all__ == COORDINATION
    for name in COORDINATION:
        assert hasattr(coordination, name), name
    # every node process imports phoenix_cluster, so every node can host these kinds
    assert coordination.LeaseAgent._phx_spec.name == "phoenix.coordination.lease"
    for cls in (phx.LeaseHeld, phx.NotHolder, phx.StaleToken, phx.SemaphoreMismatch,
                phx.BarrierMismatch, phx.NotIdempotent, phx.SagaAborted, phx.NoBids):
        assert issubclass(cls, phx.DefiniteError)
        assert cls("x").definite is True
        assert type(errors.error_from_code(cls.code, "m")) is cls


def test_telemetry_namespace() -> None:
    assert telemetry.AGENT_STARTED == ("phoenix", "agent", "started")
    assert telemetry.TRANSPORT_PROTOCOL_SWITCHED == ("phoenix", "transport", "protocol_switched")
    for name in ("attach", "detach", "execute"):
        assert callable(getattr(telemetry, name))
