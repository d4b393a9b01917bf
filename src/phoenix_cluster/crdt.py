"""Delta-state CRDTs: replicated values that accept updates anywhere and always converge.

    from phoenix_cluster import crdt

    cart = crdt.ORSet[str]()
    delta = cart.add("apple", replica="n1")    # a small state: ship it to other replicas
    other = crdt.ORSet[str]()
    other.merge(delta)                         # joining deltas or states, in any order
    assert other.value == {"apple"}

Types: :class:`GCounter`, :class:`PNCounter`, :class:`GSet`, :class:`TwoPSet`,
:class:`ORSet`, :class:`LWWRegister`, :class:`MVRegister`, :class:`ORMap` (nested CRDTs)
and :class:`LWWMap`. Every mutator takes the acting replica's id and returns a delta;
``.value`` reads; ``merge`` joins. :class:`DeltaBuffer` keeps a replica's deltas until
peers acknowledge them; :meth:`Crdt.digest` and :meth:`Crdt.delta_for` compute the
smallest delta a peer lacks. All are msgspec Structs that round-trip through msgpack.
:class:`CausalFields` changes several named CRDTs in atomic :class:`Batch` es delivered
in causal order; registers take a conflict hook (``resolve`` / ``settle`` with
:class:`Sibling` s). See docs/crdt.md.
"""

from __future__ import annotations

from ._crdt.base import Crdt as Crdt
from ._crdt.base import Digest as Digest
from ._crdt.batch import Batch as Batch
from ._crdt.batch import CausalFields as CausalFields
from ._crdt.buffer import DeltaBuffer as DeltaBuffer
from ._crdt.buffer import Outgoing as Outgoing
from ._crdt.counters import GCounter as GCounter
from ._crdt.counters import PNCounter as PNCounter
from ._crdt.dots import CausalContext as CausalContext
from ._crdt.dots import Dot as Dot
from ._crdt.maps import LWWMap as LWWMap
from ._crdt.maps import ORMap as ORMap
from ._crdt.registers import ConflictHook as ConflictHook
from ._crdt.registers import LWWRegister as LWWRegister
from ._crdt.registers import MVRegister as MVRegister
from ._crdt.registers import Sibling as Sibling
from ._crdt.sets import GSet as GSet
from ._crdt.sets import ORSet as ORSet
from ._crdt.sets import TwoPSet as TwoPSet

__all__ = [
    "Batch",
    "CausalContext",
    "CausalFields",
    "ConflictHook",
    "Crdt",
    "DeltaBuffer",
    "Digest",
    "Dot",
    "GCounter",
    "GSet",
    "LWWMap",
    "LWWRegister",
    "MVRegister",
    "ORMap",
    "ORSet",
    "Outgoing",
    "PNCounter",
    "Sibling",
    "TwoPSet",
]
