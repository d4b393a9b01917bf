"""Pluggable state stores: where a kind with ``store=`` keeps its committed state.

``base.py`` is the public protocol (:class:`~.base.StateStore`) and its row type;
``sqlite.py`` and ``postgres.py`` implement it; ``urls.py`` turns a node's
``stores={name: url}`` into opened stores. The agent layer's adapter (``_agents/stored.py``)
is the only caller inside Phoenix.
"""
