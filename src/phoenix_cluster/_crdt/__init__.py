"""L0: delta-state CRDTs (public as :mod:`phoenix_cluster.crdt`).

``dots`` holds dots and causal contexts; ``stores`` the dot stores and their joins;
``base`` the CRDT base class (join, inflation check, digest anti-entropy); ``counters``,
``sets``, ``registers`` and ``maps`` the types; ``buffer`` the per-replica delta buffer.
Pure and I/O-free: imports only the stdlib and msgspec; never asyncio.
"""
