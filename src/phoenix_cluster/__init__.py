"""Phoenix: a distributed-native agent runtime for Python.

    import phoenix_cluster as phx

    class Counter(phx.Agent):
        def __init__(self) -> None:
            self.count = 0

        async def increment(self, by: int = 1) -> int:
            self.count += by
            return self.count

    async with phx.Node() as node:
        assert await node.ref(Counter, "alice").increment(5) == 5
"""


import msgspec as _msgspec

from . import coordination as coordination
from . import crdt as crdt
from . import telemetry as telemetry
from ._agents.agent import Agent as Agent
from ._agents.agent_timer import AgentTimer as AgentTimer
from ._agents.events import EventSourcedAgent as EventSourcedAgent
from ._agents.interceptors import CallInfo as CallInfo
from ._agents.interceptors import Interceptor as Interceptor
from ._agents.interceptors import Proceed as Proceed
from ._agents.kinds import reentrant as reentrant
from ._agents.ref import AgentRef as AgentRef
from ._foundation.settings import Settings as Settings
from ._membership.snapshot import Member as Member
from ._node import Node as Node
from ._placement.policies import Scored as Scored
from ._registry.registry import NameConflict as NameConflict
from ._registry.registry import Registration as Registration
from ._resilience.supervisor import ChildSpec as ChildSpec
from ._resilience.supervisor import Supervisor as Supervisor
from ._resilience.supervisor import SupervisorEscalation as SupervisorEscalation
from ._stores.base import StateStore as StateStore
from ._stores.base import StoredEvents as StoredEvents
from ._stores.base import StoredState as StoredState
from ._stores.postgres import PostgresStore as PostgresStore
from ._stores.sqlite import SqliteStore as SqliteStore
from ._version import __version__ as __version__
from .errors import AgentError as AgentError
from .errors import AgentNotFound as AgentNotFound
from .errors import AuthenticationError as AuthenticationError
from .errors import BarrierMismatch as BarrierMismatch
from .errors import CallCycle as CallCycle
from .errors import CallRejected as CallRejected
from .errors import CallTimeout as CallTimeout
from .errors import ConfigError as ConfigError
from .errors import DefiniteError as DefiniteError
from .errors import IndefiniteError as IndefiniteError
from .errors import LeaseHeld as LeaseHeld
from .errors import NameTaken as NameTaken
from .errors import NoBids as NoBids
from .errors import NodeClosed as NodeClosed
from .errors import NodeUnavailable as NodeUnavailable
from .errors import NoQuorum as NoQuorum
from .errors import NotHolder as NotHolder
from .errors import NotIdempotent as NotIdempotent
from .errors import NotLeader as NotLeader
from .errors import Overloaded as Overloaded
from .errors import PhoenixError as PhoenixError
from .errors import PhoenixInternalError as PhoenixInternalError
from .errors import ProtocolError as ProtocolError
from .errors import SagaAborted as SagaAborted
from .errors import SemaphoreMismatch as SemaphoreMismatch
from .errors import SerializationError as SerializationError
from .errors import StaleToken as StaleToken
from .errors import StateVersionError as StateVersionError
from .errors import StorageError as StorageError
from .errors import StoreUnavailable as StoreUnavailable
from .errors import WriteConflict as WriteConflict

__all__ = [
    "Agent",
    "AgentError",
    "AgentNotFound",
    "AgentRef",
    "AgentTimer",
    "AuthenticationError",
    "BarrierMismatch",
    "CallCycle",
    "CallInfo",
    "CallRejected",
    "CallTimeout",
    "ChildSpec",
    "ConfigError",
    "DefiniteError",
    "EventSourcedAgent",
    "IndefiniteError",
    "Interceptor",
    "LeaseHeld",
    "Member",
    "NameConflict",
    "NameTaken",
    "NoBids",
    "NoQuorum",
    "Node",
    "NodeClosed",
    "NodeUnavailable",
    "NotHolder",
    "NotIdempotent",
    "NotLeader",
    "Overloaded",
    "PhoenixError",
    "PhoenixInternalError",
    "PostgresStore",
    "Proceed",
    "ProtocolError",
    "Registration",
    "SagaAborted",
    "Scored",
    "SemaphoreMismatch",
    "SerializationError",
    "Settings",
    "SqliteStore",
    "StaleToken",
    "StateStore",
    "StateVersionError",
    "StorageError",
    "StoreUnavailable",
    "StoredEvents",
    "StoredState",
    "Supervisor",
    "SupervisorEscalation",
    "WriteConflict",
    "__version__",
    "coordination",
    "crdt",
    "reentrant",
    "telemetry",
]

# Tracebacks and docs name the public path, not the private module. (msgspec Structs
# keep theirs: msgspec resolves their annotations in their defining module.)
for _name in __all__:
    _obj = globals()[_name]
    if (
        isinstance(_obj, type)
        and _obj.__module__.startswith("phoenix_cluster._")
        and not issubclass(_obj, _msgspec.Struct)
    ):
        _obj.__module__ = "phoenix_cluster"
del _name, _obj
