"""L4: the consistent-hash ring: which member owns which key.

Pure and I/O-free. ``hashing`` gives the stable 64-bit hash every node computes the same
way; ``ring`` places members on the hash circle with virtual nodes; ``partitions`` maps
the fixed set of partitions to replica sets in a versioned, immutable table. Imports only
the stdlib, msgspec, ``phoenix_cluster.errors``, ``_foundation`` and
``_membership.snapshot``; never asyncio.
"""
