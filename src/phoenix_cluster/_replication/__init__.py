"""State safety: quorum replication of agent records with fencing (L5).

See docs/design/replication.md. The runtime uses :class:`Replicator` (``service.py``,
whose docstring is the integration contract; its parts are in ``core.py``,
``elections.py``, ``commits.py``, ``leases.py`` and ``handover.py``); the protocol itself is pure
(``replica.py``, ``leader.py``); ``storage.py`` keeps it on disk when the node has a
``data_dir``; ``memory.py`` and ``simulation.py`` run several replicators in one
process for tests and the micro-benchmark.
"""

from __future__ import annotations

from .service import Durability as Durability
from .service import OnLost as OnLost
from .service import ReplicationStatistics as ReplicationStatistics
from .service import Replicator as Replicator
from .service import partition_for as partition_for
from .settings import ReplicationSettings as ReplicationSettings
from .storage import SqliteStorage as SqliteStorage
from .storage import storage_path as storage_path
from .types import Record as Record

__all__ = [
    "Durability",
    "OnLost",
    "Record",
    "ReplicationSettings",
    "ReplicationStatistics",
    "Replicator",
    "SqliteStorage",
    "partition_for",
    "storage_path",
]
