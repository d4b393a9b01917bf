"""Coordination primitives built on agents, usable from any agent or client.

    from phoenix_cluster import coordination

    async with coordination.lock(node, "orders-db", holder="worker-1", ttl=10) as lease:
        await db.write(row, fencing_token=lease.token)

Each lease, semaphore, barrier or saga name is one fenced agent whose state is committed to a
quorum of replicas before it answers, so a fencing token survives the death of the node
that issued it and is never issued twice. See docs/coordination.md.

- :func:`acquire` / :func:`lock`: leases (locks) with fencing tokens;
- :func:`check_token`, :class:`FencedResource`: refuse a holder whose lease was lost;
- :func:`elect`, :class:`LeaderElection`: one leader per name, term = fencing token;
- :func:`acquire_permit`: counting semaphores; :func:`barrier`: reusable barriers;
- :func:`run_saga`, :class:`SagaStep`: steps over several agents with compensations,
  resumed on a survivor when the saga's node dies;
- :func:`allocate`: contract-net task allocation (announce, bid, award, once).
"""

from ._coordination.agents import BarrierAgent as BarrierAgent
from ._coordination.agents import LeaseAgent as LeaseAgent
from ._coordination.agents import SemaphoreAgent as SemaphoreAgent
from ._coordination.barriers import barrier as barrier
from ._coordination.contracts import Award as Award
from ._coordination.contracts import AwardAgent as AwardAgent
from ._coordination.contracts import allocate as allocate
from ._coordination.election import LeaderElection as LeaderElection
from ._coordination.election import elect as elect
from ._coordination.leases import FencedResource as FencedResource
from ._coordination.leases import Lease as Lease
from ._coordination.leases import Refs as Refs
from ._coordination.leases import acquire as acquire
from ._coordination.leases import acquire_permit as acquire_permit
from ._coordination.leases import check_token as check_token
from ._coordination.leases import lock as lock
from ._coordination.sagas import SagaAgent as SagaAgent
from ._coordination.sagas import SagaReport as SagaReport
from ._coordination.sagas import SagaStep as SagaStep
from ._coordination.sagas import StepLog as StepLog
from ._coordination.sagas import run_saga as run_saga
from ._coordination.sagas import saga_status as saga_status

__all__ = [
    "Award",
    "AwardAgent",
    "BarrierAgent",
    "FencedResource",
    "LeaderElection",
    "Lease",
    "LeaseAgent",
    "Refs",
    "SagaAgent",
    "SagaReport",
    "SagaStep",
    "SemaphoreAgent",
    "StepLog",
    "acquire",
    "acquire_permit",
    "allocate",
    "barrier",
    "check_token",
    "elect",
    "lock",
    "run_saga",
    "saga_status",
]
