"""L7: the cluster registry (names), process groups and pub/sub.

``entries``, ``store`` and ``messages`` are pure protocol logic (no asyncio, no I/O);
``cluster`` adapts the node's RPC client and membership view; ``registry``, ``groups`` and
``pubsub`` are the services ``node.registry``, ``node.groups`` and ``node.pubsub``;
``services`` builds them for a :class:`~phoenix_cluster.Node`. ``docs/registry.md``
describes the protocol and its guarantees.
"""
