"""Causal, atomic batches of changes across several CRDT fields.

A :class:`CausalFields` is a set of named CRDTs (a cart's items and its total, a
document's title and tags) that replicas change only in :class:`Batch` es:

- **Atomic.** ``batch(replica, change)`` runs ``change`` on staged copies of the fields
  it touches; if it raises, nothing changed. Otherwise the fields are swapped in at once
  and the batch carries one delta per changed field. A receiver checks every delta before
  joining any and joins them in one synchronous step: no reader, here or there, sees
  half of a batch.
- **Causal.** Each batch is numbered per origin (``seq``) and names the batches its
  writer had applied (``deps``, a version vector). A receiver applies it only once it
  has applied all of those and the origin's previous batch; until then it is parked
  (``pending``), and applying one releases every parked batch it unblocks. So a reader
  never sees an effect without its cause (a total that counts an item the items field
  does not hold yet), in whatever order, how often or how late batches arrive.

Duplicates are ignored (``seq`` already applied). Two replicas' states join with
``merge`` (fields joined, version vectors maxed): each is the join of a causally closed
set of batches, and so is their union. Every replica needs its own origin id, as for any
CRDT (docs/crdt.md, "Replica ids").

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any

import msgspec

from .base import Crdt
from .dots import check_replica

__all__ = ["Batch", "CausalFields"]

Seq = Annotated[int, msgspec.Meta(ge=1)]


class Batch(msgspec.Struct, frozen=True, omit_defaults=True):
    """One replica's change to several fields, delivered whole and in causal order.

    Encode with ``msgspec.msgpack.encode(batch)``; decode with
    :meth:`CausalFields.decode_batch`, which knows the fields' types.
    """

    origin: str
    """The replica that wrote it."""
    seq: Seq
    """Its number among ``origin``'s batches: 1, 2, 3..."""
    deltas: dict[str, Any]
    """Field name -> the delta of that field (a CRDT of the field's type)."""
    deps: dict[str, Seq] = msgspec.field(default_factory=dict)
    """Other origins' batches its writer had applied: ``{origin: last seq}``."""


class _State(msgspec.Struct, frozen=True):
    """The wire form of a whole :class:`CausalFields` (pending batches stay behind)."""

    fields: dict[str, Any]
    applied: dict[str, Seq]


class _Staging(Mapping[str, Crdt]):
    """The fields as ``change`` sees them: each copied on first access."""

    def __init__(self, fields: dict[str, Crdt]) -> None:
        self._fields = fields
        self.copies: dict[str, Crdt] = {}

    def __getitem__(self, name: str) -> Crdt:
        copy = self.copies.get(name)
        if copy is None:
            copy = self.copies[name] = self._fields[name].copy()
        return copy

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


class CausalFields:
    """Named CRDT fields changed by atomic, causally delivered batches (module docstring).

        cart = CausalFields({"items": ORSet[str](), "total": PNCounter()})
        b = cart.batch("n1", lambda f: (f["items"].add("tea", replica="n1"),
                                        f["total"].increment(4, replica="n1")))
        other.apply(b)                      # both fields, or (until its causes) neither

    Args:
        fields: the fields and their initial (usually empty) values; every replica starts
            with the same names and types. The values are owned by this object from now on.
        schema: the type to decode each field's deltas with (``ORSet[tuple[int, int]]``),
            where the value's own class is not precise enough.
    """

    def __init__(self, fields: Mapping[str, Crdt],
                 schema: Mapping[str, Any] | None = None) -> None:
        for name, value in fields.items():
            if not isinstance(name, str) or not isinstance(value, Crdt):
                raise TypeError(f"field {name!r} must be a phx.crdt value, "
                                f"got {type(value).__name__}")
        self._fields: dict[str, Crdt] = dict(fields)
        self._schema: dict[str, Any] = {n: type(v) for n, v in self._fields.items()}
        self._schema.update(schema or {})
        self._applied: dict[str, int] = {}
        self._pending: dict[tuple[str, int], Batch] = {}

    # ----------------------------------------------------------------- reading

    def __getitem__(self, name: str) -> Crdt:
        """The field ``name``. Read it; change it only through :meth:`batch`."""
        return self._fields[name]

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    @property
    def value(self) -> dict[str, Any]:
        """Every field's plain value."""
        return {name: field.value for name, field in self._fields.items()}

    @property
    def applied(self) -> dict[str, int]:
        """The batches applied here: ``{origin: last seq}`` (a copy)."""
        return dict(self._applied)

    @property
    def pending(self) -> int:
        """Batches received but waiting for a batch they depend on."""
        return len(self._pending)

    def missing(self) -> dict[str, int]:
        """``{origin: the first seq this replica lacks}`` for every origin a pending
        batch needs: what to ask a peer to resend."""
        wanted: dict[str, int] = {}
        for batch in self._pending.values():
            for origin, seq in [*batch.deps.items(), (batch.origin, batch.seq - 1)]:
                have = self._applied.get(origin, 0)
                if seq > have:
                    wanted[origin] = have + 1
        return wanted

    # ----------------------------------------------------------------- writing

    def batch(self, replica: str, change: Callable[[Mapping[str, Crdt]], object]) -> Batch:
        """Run ``change(fields)`` as one batch of ``replica`` and return it to ship.

        ``change`` calls mutators on the fields it is given (each is a staged copy); if it
        raises, no field changes and the exception propagates. Pending batches do not
        block a local write: it depends on what is applied here.

        Raises:
            TypeError, ValueError: a bad replica id.
            KeyError: ``change`` read a field that does not exist.
        """
        check_replica(replica)
        staging = _Staging(self._fields)
        change(staging)
        deltas: dict[str, Any] = {}
        for name, staged in staging.copies.items():
            before = self._fields[name]
            if staged != before:
                deltas[name] = staged.delta_for(before.digest())
        seq = self._applied.get(replica, 0) + 1
        deps = {o: n for o, n in self._applied.items() if o != replica}
        self._fields.update({n: staging.copies[n] for n in deltas})  # the atomic swap
        self._applied[replica] = seq
        return Batch(replica, seq, deltas, deps)

    # ----------------------------------------------------------------- receiving

    def apply(self, batch: Batch) -> list[Batch]:
        """Apply ``batch`` if its causes are here, then every parked batch it unblocks.

        Returns:
            The batches applied now, in order (``[]``: a duplicate, or parked).

        Raises:
            ValueError: a delta names an unknown field or has the wrong type; nothing is
                applied or parked.
        """
        self._check(batch)
        if batch.seq <= self._applied.get(batch.origin, 0):
            return []
        self._pending[(batch.origin, batch.seq)] = batch
        done: list[Batch] = []
        progress = True
        while progress:
            progress = False
            for key, waiting in list(self._pending.items()):
                if self._ready(waiting):
                    del self._pending[key]
                    self._join(waiting)
                    done.append(waiting)
                    progress = True
                elif waiting.seq <= self._applied.get(waiting.origin, 0):
                    del self._pending[key]  # covered meanwhile by a merged state
        return done

    def _ready(self, batch: Batch) -> bool:
        if self._applied.get(batch.origin, 0) != batch.seq - 1:
            return False
        return all(self._applied.get(o, 0) >= n for o, n in batch.deps.items())

    def _check(self, batch: Batch) -> None:
        for name, delta in batch.deltas.items():
            mine = self._fields.get(name)
            if mine is None:
                raise ValueError(f"batch {batch.origin}#{batch.seq} changes unknown field "
                                 f"{name!r} (fields: {', '.join(sorted(self._fields))})")
            if type(delta) is not type(mine):
                raise ValueError(f"batch {batch.origin}#{batch.seq}: field {name!r} is a "
                                 f"{type(mine).__name__}, its delta a {type(delta).__name__}")

    def _join(self, batch: Batch) -> None:
        for name, delta in batch.deltas.items():
            self._fields[name].merge(delta)
        self._applied[batch.origin] = batch.seq

    # ----------------------------------------------------------------- whole states

    def merge(self, other: CausalFields) -> None:
        """Join another replica's whole state (a new replica's start, a repair), then
        apply what that unblocks. Both hold causally closed sets of batches; so does
        the join.

        Raises:
            ValueError: the fields differ in names or types.
        """
        if {n: type(v) for n, v in other._fields.items()} != {
                n: type(v) for n, v in self._fields.items()}:
            raise ValueError("cannot merge CausalFields with different fields")
        for name, field in other._fields.items():
            self._fields[name].merge(field)
        for origin, seq in other._applied.items():
            self._applied[origin] = max(seq, self._applied.get(origin, 0))
        for key, batch in list(self._pending.items()):
            del self._pending[key]
            self.apply(batch)

    def copy(self) -> CausalFields:
        """An independent copy (pending batches included)."""
        twin = CausalFields({n: v.copy() for n, v in self._fields.items()}, self._schema)
        twin._applied = dict(self._applied)
        twin._pending = dict(self._pending)
        return twin

    def encode(self) -> bytes:
        """This replica's fields and applied batches as msgpack, for :meth:`decode_state`
        elsewhere (a new replica's start, a repair, an agent's snapshot). Parked batches
        are not included: the receiver gets them again from their senders."""
        return msgspec.msgpack.encode(_State(self._fields, self._applied))

    def decode_state(self, data: bytes) -> CausalFields:
        """A replica from :meth:`encode`'s bytes, with this one's fields and types; join it
        with :meth:`merge`.

        Raises:
            ValueError: malformed data, or fields other than this replica's.
        """
        try:
            raw = msgspec.msgpack.decode(data, type=_State)
            if set(raw.fields) != set(self._fields):
                raise ValueError(f"state has fields {sorted(raw.fields)}, expected "
                                 f"{sorted(self._fields)}")
            fields = {n: msgspec.convert(v, self._schema[n]) for n, v in raw.fields.items()}
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"malformed CausalFields state: {exc}") from None
        state = CausalFields(fields, self._schema)
        state._applied = dict(raw.applied)
        return state

    def decode_batch(self, data: bytes) -> Batch:
        """A :class:`Batch` from its msgpack encoding, each delta with its field's type.

        Raises:
            ValueError: malformed data, an unknown field, or a delta of the wrong shape.
        """
        try:
            raw = msgspec.msgpack.decode(data, type=Batch)
            deltas = {}
            for name, delta in raw.deltas.items():
                tp = self._schema.get(name)
                if tp is None:
                    raise ValueError(f"batch changes unknown field {name!r}")
                deltas[name] = msgspec.convert(delta, tp)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"malformed batch: {exc}") from None
        return Batch(raw.origin, raw.seq, deltas, raw.deps)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalFields):
            return NotImplemented
        return self._fields == other._fields and self._applied == other._applied

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"<CausalFields {', '.join(sorted(self._fields))}: applied {self._applied}"
                f", {len(self._pending)} pending>")
