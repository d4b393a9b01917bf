"""Names of the events Phoenix emits (the seed's event list plus runtime events).

Measurements are numbers (durations in seconds, counts); metadata carries ``node`` and
the subject (``kind``, ``key``, ``peer``...).
"""

from __future__ import annotations

__all__ = [
    "AGENT_ACTIVATED",
    "AGENT_CALL_EXCEPTION",
    "AGENT_CALL_STOP",
    "AGENT_DEACTIVATED",
    "AGENT_MIGRATED",
    "AGENT_OVERLOADED",
    "AGENT_STARTED",
    "AGENT_STATE_REPLICATED",
    "CLUSTER_NODE_JOINED",
    "CLUSTER_NODE_LEFT",
    "CLUSTER_NODE_SUSPECTED",
    "CLUSTER_PARTITION_DETECTED",
    "MESSAGE_DROPPED",
    "NODE_STARTED",
    "NODE_STOPPED",
    "PERFORMANCE_LATENCY_MEASURED",
    "PERFORMANCE_THROUGHPUT_CALCULATED",
    "PUBSUB_DELIVERED",
    "PUBSUB_DROPPED",
    "PUBSUB_PUBLISHED",
    "REGISTRY_LOOKUP",
    "REGISTRY_NAME_CONFLICT",
    "REGISTRY_REGISTERED",
    "REGISTRY_RELEASED",
    "REPLICATION_COMMITTED",
    "REPLICATION_EPOCH_CHANGED",
    "REPLICATION_FENCED",
    "SUPERVISOR_CHILD_CRASHED",
    "SUPERVISOR_CHILD_RESTARTED",
    "SUPERVISOR_ESCALATED",
    "TRANSPORT_MESSAGE_RECEIVED",
    "TRANSPORT_MESSAGE_SENT",
    "TRANSPORT_PROTOCOL_SWITCHED",
]

CLUSTER_NODE_JOINED = ("phoenix", "cluster", "node_joined")
"""A member became known, or came back as a newer incarnation; metadata ``peer``,
``address``, ``incarnation``, ``role``; measurement ``members`` (live members seen)."""
CLUSTER_NODE_LEFT = ("phoenix", "cluster", "node_left")
"""A member was declared dead or left gracefully; metadata ``reason`` (``dead``/``left``)."""
CLUSTER_NODE_SUSPECTED = ("phoenix", "cluster", "node_suspected")
"""A member missed its probes and is suspected; metadata ``peer``, ``by`` (the accuser)."""
CLUSTER_PARTITION_DETECTED = ("phoenix", "cluster", "partition_detected")

AGENT_STARTED = ("phoenix", "agent", "started")
"""An activation finished ``on_activate``; measurement ``duration`` (s)."""
AGENT_ACTIVATED = AGENT_STARTED
AGENT_DEACTIVATED = ("phoenix", "agent", "deactivated")
"""An activation was passivated or stopped; metadata ``reason``."""
AGENT_MIGRATED = ("phoenix", "agent", "migrated")
AGENT_STATE_REPLICATED = ("phoenix", "agent", "state_replicated")
AGENT_CALL_STOP = ("phoenix", "agent", "call", "stop")
"""A handler finished; measurement ``duration`` (s), metadata ``kind``, ``method``."""
AGENT_CALL_EXCEPTION = ("phoenix", "agent", "call", "exception")
"""A handler raised and its state was rolled back; metadata ``error``."""
AGENT_OVERLOADED = ("phoenix", "agent", "overloaded")
"""A message was refused at ``mailbox_limit``."""

MESSAGE_DROPPED = ("phoenix", "message", "dropped")
"""Messages that were accepted and then lost with no sender left to tell (e.g. casts still
queued on a node that stopped); measurement ``messages``, metadata ``node``, ``reason``,
``kind``, ``key``, ``method``. Feeds ``phoenix_messages_dropped_total{reason}``, which
stays 0 unless something went wrong."""

TRANSPORT_MESSAGE_SENT = ("phoenix", "transport", "message_sent")
TRANSPORT_MESSAGE_RECEIVED = ("phoenix", "transport", "message_received")
TRANSPORT_PROTOCOL_SWITCHED = ("phoenix", "transport", "protocol_switched")

PERFORMANCE_LATENCY_MEASURED = ("phoenix", "performance", "latency_measured")
PERFORMANCE_THROUGHPUT_CALCULATED = ("phoenix", "performance", "throughput_calculated")

REGISTRY_LOOKUP = ("phoenix", "registry", "lookup")
"""A name was resolved through the registry; measurement ``duration`` (s), metadata
``node``, ``found`` (bool). Feeds ``phoenix_registry_lookup_duration_seconds``."""
REGISTRY_REGISTERED = ("phoenix", "registry", "registered")
"""A name was registered (stored on a majority of its owners); measurement ``duration``
(s), metadata ``node``, ``name``."""
REGISTRY_RELEASED = ("phoenix", "registry", "released")
"""Names were released without a conflict; measurement ``names``, metadata ``node``,
``reason`` (``holder_gone`` on an owner, ``unregistered`` on the holder), ``holder`` or
``name``."""
REGISTRY_NAME_CONFLICT = ("phoenix", "registry", "name_conflict")
"""A name this node held lost a conflict after a partition healed (the earliest
registration wins); metadata ``node``, ``name``, ``winner``, ``loser`` (holder names)."""

PUBSUB_PUBLISHED = ("phoenix", "pubsub", "published")
"""A message was published; measurement ``nodes`` (nodes it was sent to, this one
included), metadata ``node``, ``topic``."""
PUBSUB_DELIVERED = ("phoenix", "pubsub", "delivered")
"""A published message reached a node's subscribers; measurement ``subscribers`` (how
many it was handed to on that node), metadata ``node``, ``topic``, ``publisher``."""
PUBSUB_DROPPED = ("phoenix", "pubsub", "dropped")
"""A subscriber missed a message; measurement ``messages``, metadata ``node``,
``topic``, ``reason`` (``queue_full``, ``callback_raised``, ``agent_refused``,
``unreachable``: a node the message could not be sent to)."""
REPLICATION_COMMITTED = ("phoenix", "replication", "committed")
"""A state change reached its replica quorum; measurement ``duration`` (s, from the write
to the quorum's acknowledgement), metadata ``node``, ``kind``. Feeds
``phoenix_replication_commit_duration_seconds``."""
REPLICATION_EPOCH_CHANGED = ("phoenix", "replication", "epoch_changed")
"""This node won a partition's election and leads it; measurements ``duration`` (s, the
election), ``adopted`` (records adopted), ``restamped``, ``rounds``; metadata ``node``,
``partition``, ``epoch`` (text), ``replicas`` (the new replica set)."""
REPLICATION_FENCED = ("phoenix", "replication", "fenced")
"""This node stopped leading a partition; metadata ``node``, ``partition``, ``epoch``
(the one it led at), ``reason`` (``fenced``: a replica promised a newer epoch;
``deposed``: this node promised one; ``moved``: the table moved the partition;
``stale``: a re-election found newer writes; ``no_quorum``; ``closed``)."""

NODE_STARTED = ("phoenix", "node", "started")
NODE_STOPPED = ("phoenix", "node", "stopped")
"""Metadata ``reason``: why the node stopped (``shutdown``, ``signal``, an escalation)."""

SUPERVISOR_CHILD_CRASHED = ("phoenix", "supervisor", "child_crashed")
SUPERVISOR_CHILD_RESTARTED = ("phoenix", "supervisor", "child_restarted")
SUPERVISOR_ESCALATED = ("phoenix", "supervisor", "escalated")
