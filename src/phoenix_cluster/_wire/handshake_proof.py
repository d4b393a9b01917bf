"""The cryptography of the connection handshake: transcripts, proofs, nonces, version choice.

Each proof is ``HMAC-SHA256(secret, transcript)``; the transcript holds a domain label
(``client`` or ``server``), the chosen version and every field of both Hellos, each
length-prefixed so no two transcripts encode alike (``handshake.py`` says what that
buys). Pure functions of their arguments: the state machines that send and check the
proofs are ``handshake.py``. Must not import anything above L0; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Final

from phoenix_cluster.errors import ProtocolError

from .messages import Hello

__all__ = [
    "CLIENT_LABEL",
    "DOMAIN",
    "NONCE_BYTES",
    "SERVER_LABEL",
    "compute_proof",
    "default_nonce",
    "negotiate_version",
]

NONCE_BYTES: Final = 32
"""Default nonce size: 256 bits, so two connections never share one."""
DOMAIN: Final = b"phoenix-cluster/handshake/v1"
CLIENT_LABEL: Final = b"client"
SERVER_LABEL: Final = b"server"


def default_nonce() -> bytes:
    """A fresh random nonce of ``NONCE_BYTES``."""
    return os.urandom(NONCE_BYTES)


def negotiate_version(ours: Sequence[int], theirs: Sequence[int]) -> int:
    """Pick the highest version both sides speak.

    Raises:
        ProtocolError: there is none; the message lists both sides' versions.
    """
    common = set(ours) & set(theirs)
    if not common:
        raise ProtocolError(
            f"no common protocol version: we speak {sorted(ours)}, peer speaks {sorted(theirs)}"
        )
    return max(common)


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _hello_fields(hello: Hello) -> bytes:
    versions = b"".join(_field(str(v).encode()) for v in hello.versions)
    return b"".join(
        (
            _field(versions),
            _field(hello.node.encode()),
            _field(str(hello.incarnation).encode()),
            _field(hello.nonce),
            _field(hello.role.encode()),
        )
    )


def compute_proof(
    secret: bytes, *, label: bytes, version: int, client_hello: Hello, server_hello: Hello
) -> bytes:
    """HMAC-SHA256 of ``secret`` over the domain, ``label``, ``version`` and both Hellos.

    Exposed so tests can forge proofs exactly as a peer with (or without) the secret would.
    """
    transcript = b"".join(
        (
            _field(DOMAIN),
            _field(label),
            _field(str(version).encode()),
            _field(_hello_fields(client_hello)),
            _field(_hello_fields(server_hello)),
        )
    )
    return hmac.new(secret, transcript, hashlib.sha256).digest()
