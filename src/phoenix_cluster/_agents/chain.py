"""Call chains: which agents wait on a call, so that a cycle fails at once.

While a handler runs, :data:`~.mailbox.CURRENT` (a context variable of the task
running it) holds its message, whose chain lists the agents whose handlers wait, each
for the next, down to this one, as links ``(kind, key, reentrant)``. A call made from
the handler carries that chain plus the handler's own link: in its
:class:`~.mailbox.Message` on this node, in the ``phx-chain`` header of its wire
``Call`` to another node (headers are a map every version ignores when it does not
know a key, so the wire is unchanged).

A call whose target is in its own chain, through a link that is not reentrant, could
never run: that handler holds the target's mailbox while it waits. :func:`check` makes
it fail at once with :class:`~phoenix_cluster.errors.CallCycle`. A reentrant link (a
method marked ``@phx.reentrant`` or a kind with ``reentrant=True``) lets the call in:
its handler runs apart from the mailbox (``runtime.py``), which goes on meanwhile.

Tasks started by a handler inherit the context, so they see its chain while it runs;
once it returned (the message's ``handler`` is cleared), a task that outlives it calls
without one. ``Link`` and ``CURRENT`` live in ``mailbox.py``, which every call meets
anyway: the runtime keeps them per message without running code of this module, and
builds a chain only when a handler calls another agent.
"""

from __future__ import annotations

import json

from ..errors import CallCycle, SerializationError
from .mailbox import CURRENT, Link

__all__ = ["CHAIN_HEADER", "CURRENT", "Link", "check", "decode", "encode"]

CHAIN_HEADER = "phx-chain"
"""The ``Call.headers`` key of a call's chain (JSON ``[[kind, key, 0|1], ...]``)."""

MAX_LINKS = 256
"""A longer chain in a header is refused as malformed (no real call nests that deep)."""

def check(chain: tuple[Link, ...], kind: str, key: str) -> None:
    """Raise :class:`CallCycle` if calling ``kind/key`` from ``chain`` could never run.

    Raises:
        CallCycle: ``kind/key`` waits in ``chain`` in a handler that is not reentrant.
    """
    for link_kind, link_key, reentrant in chain:
        if link_key == key and link_kind == kind and not reentrant:
            names = (*tuple(f"{k}/{key_}" for k, key_, _ in chain), f"{kind}/{key}")
            raise CallCycle(
                f"call cycle: {' -> '.join(names)}: {kind}/{key} is waiting for this very "
                "call and handles one message at a time (mark the waiting method "
                "@phx.reentrant, or the kind reentrant=True, to let it in)",
                chain=names,
            )


def encode(chain: tuple[Link, ...]) -> str:
    """The header value of ``chain``."""
    return json.dumps([[k, key, 1 if r else 0] for k, key, r in chain],
                      separators=(",", ":"), ensure_ascii=False)


def decode(text: str) -> tuple[Link, ...]:
    """The chain in a ``phx-chain`` header.

    Raises:
        SerializationError: not a list of ``[kind, key, 0|1]`` (definite: nothing ran).
    """
    try:
        items = json.loads(text)
    except ValueError:
        items = None
    if (not isinstance(items, list) or len(items) > MAX_LINKS
            or not all(isinstance(i, list) and len(i) == 3 and isinstance(i[0], str)
                       and isinstance(i[1], str) and i[2] in (0, 1) for i in items)):
        raise SerializationError(f"malformed {CHAIN_HEADER} header of a call "
                                 f"({len(text)} characters); nothing ran", definite=True)
    return tuple((k, key, bool(r)) for k, key, r in items)
