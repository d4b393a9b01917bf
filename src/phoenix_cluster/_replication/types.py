"""The values the replication protocol speaks in: epochs, versions, records, configs.

See ``docs/design/replication.md`` (Vocabulary). Pure: no I/O, no asyncio. Imports only
msgspec and the stdlib.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

__all__ = [
    "NO_REPLIES",
    "ZERO_EPOCH",
    "Config",
    "Entry",
    "Epoch",
    "Record",
    "RecordKey",
    "Version",
    "config_members",
    "config_union",
    "decode_replies",
    "encode_replies",
    "majority",
    "make_config",
]


class Epoch(NamedTuple):
    """A leadership term of one partition: ``(counter, leader)``, totally ordered.

    ``leader`` is the electing node's id, ``name#incarnation``, unique per process, so no
    two elections ever share an epoch (invariant I1).
    """

    counter: int
    leader: str

    def __str__(self) -> str:
        return f"{self.counter}@{self.leader}"


ZERO_EPOCH = Epoch(0, "")
"""Below every real epoch: what a replica has promised before its first promise."""


class Version(NamedTuple):
    """Order of the writes of one key: the writer's epoch, then its sequence number."""

    counter: int
    leader: str
    seq: int


class Record(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What the runtime stores per agent.

    Attributes:
        state: the agent's encoded state.
        replies: the agent's dedup window: ``(request_id, encoded reply)`` of the last
            calls that changed the state, oldest first, so a retried call after a
            failover finds its reply instead of running again.
    """

    state: bytes
    replies: tuple[tuple[int, bytes], ...] = ()


_encoder = msgspec.msgpack.Encoder()
_replies_decoder = msgspec.msgpack.Decoder(tuple[tuple[int, bytes], ...])

NO_REPLIES = msgspec.Raw(b"\x90")
"""An empty dedup window, encoded (an empty msgpack array)."""


def encode_replies(replies: tuple[tuple[int, bytes], ...]) -> msgspec.Raw:
    """A dedup window as :attr:`Entry.replies` holds it."""
    return msgspec.Raw(_encoder.encode(replies)) if replies else NO_REPLIES


def decode_replies(replies: msgspec.Raw) -> tuple[tuple[int, bytes], ...]:
    """The dedup window of :attr:`Entry.replies`.

    Raises:
        msgspec.ValidationError, msgspec.DecodeError: it is not a window (a corrupt
            file; the wire's are checked where they are decoded, ``messages.py``).
    """
    return _replies_decoder.decode(replies)


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A record with its version, as replicas store it (flat: one object per key).

    ``replies`` is the record's dedup window as its msgpack encoding (an array of
    ``[request id, reply]`` pairs, the bytes ``Record.replies`` encodes to, so the wire
    format is that of a decoded window). The leader encodes it once per write, whatever
    the number of replicas; replicas store it without parsing it, and only an
    activation from the record decodes it (:attr:`record`): a window is most of a small
    agent's record, and most of what a replica would otherwise parse per write.
    """

    counter: int
    leader: str
    seq: int
    state: bytes
    replies: msgspec.Raw = NO_REPLIES

    @property
    def version(self) -> Version:
        return Version(self.counter, self.leader, self.seq)

    @property
    def record(self) -> Record:
        return Record(self.state, decode_replies(self.replies))

    @classmethod
    def of(cls, record: Record, epoch: Epoch, seq: int) -> Entry:
        return cls(epoch.counter, epoch.leader, seq, record.state,
                   encode_replies(record.replies))

    def restamped(self, epoch: Epoch, seq: int) -> Entry:
        """The same content under a new version (a new leader re-proposing it)."""
        return Entry(epoch.counter, epoch.leader, seq, self.state, self.replies)

    def detached(self) -> Entry:
        """This entry, holding none of the buffer it was decoded from (a decoded
        ``replies`` is a view into the whole batch; a stored entry must not keep the
        batch alive)."""
        replies = self.replies
        own = replies.copy()
        if own is replies:
            return self
        return Entry(self.counter, self.leader, self.seq, self.state, own)

    def size(self) -> int:
        """Approximate bytes this entry costs on the wire."""
        return 32 + len(self.leader) + len(self.state) + len(self.replies)


RecordKey = tuple[str, str]
"""``(kind, key)``: the agent address a record belongs to."""

Config = tuple[tuple[str, ...], ...]
"""Replica sets whose majorities a leader must reach: one set, or several during a
handoff. Sets keep their order (primary first); the config is kept sorted for equality."""


def majority(members: tuple[str, ...]) -> int:
    """How many members of a set make a majority of it."""
    return len(members) // 2 + 1


def make_config(*sets: tuple[str, ...]) -> Config:
    """A config of ``sets``, each once, in canonical (sorted) order."""
    return tuple(sorted(set(sets)))


def config_union(a: Config, b: Config) -> Config:
    """Both configs' sets, each once, in canonical order (``a`` and ``b`` canonical)."""
    if a == b or not b:
        return a
    if not a:
        return b
    return tuple(sorted(set(a) | set(b)))


def config_members(config: Config) -> frozenset[str]:
    """Every member named by some set of ``config``."""
    return frozenset(m for s in config for m in s)
