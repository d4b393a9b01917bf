"""L4: split-brain resolution: which side of a partition survives.

- ``view`` holds the inputs of a decision (:class:`~.view.PartitionView`: the members,
  who is reachable from this side, the members' age, broken links, the lease holder) and
  its output (:class:`~.view.Decision`: ``keep`` or ``down_self``, with a reason).
- ``strategies`` are pure, deterministic functions of a view: keep-majority (default),
  static-quorum, keep-oldest, lease-majority and down-all. No asyncio, no clock.
- ``resolver`` feeds a strategy from membership snapshots and the node's clock: it waits
  until the unreachable set has been stable for ``stable_after_s``, acquires the lease
  when the strategy needs one, logs the decision with its inputs in one line, emits
  ``partition_detected`` and, on ``down_self``, calls the node's ``on_down`` once.
  Its parts: ``tracker`` (the inputs of a decision from the snapshots, and since when
  they are stable; pure), ``lease`` (the lease as a referee, ``LeaseProvider``) and
  ``report`` (the decision's log line and event, the resolver's statistics).
- ``settings`` is the typed :class:`~.settings.SplitBrainSettings` and ``make_strategy``.
- ``lease_etcd`` and ``lease_k8s`` are the ``lease`` strategy's referees (a key in etcd, a
  Kubernetes ``coordination.k8s.io`` Lease); ``lease_spec`` builds one from the node's
  ``split_brain_lease`` setting, importing its module (and aiohttp) only then.

Imports only the stdlib, msgspec, ``phoenix_cluster.errors``, ``_foundation``,
``_telemetry``, ``_membership.snapshot`` and, for the lease providers, the JSON HTTP
client of ``_membership``'s discovery providers. ``docs/design/splitbrain.md`` explains the
strategies, their guarantees and their failure modes.
"""

from __future__ import annotations

__all__ = ["EXIT_DOWNED"]

EXIT_DOWNED = 3
"""Exit status of a ``phx node`` process that downed itself after a split-brain decision
(distinct from 0 = clean stop, 1 = error, 2 = usage error), so supervisors and
``LocalCluster`` can tell "lost a partition" from a crash."""
