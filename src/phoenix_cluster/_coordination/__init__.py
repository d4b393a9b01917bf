"""Coordination primitives built on agents: leases, locks, elections, semaphores, barriers.

The public names are in :mod:`phoenix_cluster.coordination`.
"""
