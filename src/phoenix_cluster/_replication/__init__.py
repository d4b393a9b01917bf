"""State safety: quorum replication of agent records with fencing (L5).

See docs/design/replication.md. The runtime uses :class:`Replicator` (``service.py``);
the protocol itself is pure (``replica.py``, ``leader.py``); ``storage.py`` keeps it on
disk when the node has a ``data_dir``.
"""
