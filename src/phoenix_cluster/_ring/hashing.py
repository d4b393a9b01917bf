"""Stable 64-bit hashing shared by every node: never Python's ``hash()``.

Python's ``hash()`` of a ``str`` is salted per process (``PYTHONHASHSEED``), so two nodes
would disagree about who owns a key. Everything placed on the ring goes through
:func:`stable_hash64`: BLAKE2b with an 8-byte digest read big-endian, which is in the
stdlib (``hashlib``), defined byte for byte by RFC 7693 and so identical on every
process, platform and Python version. A faster non-cryptographic hash (xxhash) would save
a fraction of a microsecond per key; ``docs/design/ring.md`` gives the measurement and
why it does not pay for a new dependency.

Must not import anything above L4, nor asyncio.
"""

from __future__ import annotations

from hashlib import blake2b

__all__ = ["HASH_BITS", "HASH_SPACE", "key_hash", "stable_hash64"]

HASH_BITS = 64
"""Width of every hash on the ring."""

HASH_SPACE = 1 << HASH_BITS
"""Number of points on the ring: hashes are integers in ``[0, HASH_SPACE)``."""


def _to_bytes(data: bytes | str) -> bytes:
    # "surrogatepass" so that no str makes hashing raise; such strings cannot cross the
    # wire (msgpack needs valid UTF-8), so the lone encodings never meet a real key.
    return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data


def stable_hash64(data: bytes | str) -> int:
    """Hash ``data`` to an unsigned 64-bit integer, identically in every process.

    Args:
        data: bytes, or a str (hashed as its UTF-8 encoding).

    Returns:
        An int in ``[0, 2**64)``: the first 8 bytes of BLAKE2b-64, big-endian.
    """
    return int.from_bytes(blake2b(_to_bytes(data), digest_size=8).digest(), "big")


def key_hash(kind: str, key: str) -> int:
    """Hash an agent address ``(kind, key)`` to its point on the ring.

    The pair is encoded without ambiguity: the kind's UTF-8 length as 4 big-endian
    bytes, the kind, then the key. So ``("ab", "c")`` and ``("a", "bc")`` hash apart,
    which plain concatenation (or a separator that may occur in a key) would not ensure.

    Args:
        kind: the agent kind name.
        key: the agent key.

    Returns:
        An int in ``[0, 2**64)``.

    Raises:
        ValueError: the kind's encoding is 4 GiB or longer.
    """
    prefix = _PREFIXES.get(kind)
    if prefix is None:
        kind_bytes = _to_bytes(kind)
        if len(kind_bytes) >= 1 << 32:
            raise ValueError(f"kind name of {len(kind_bytes):,} bytes exceeds 4 GiB")
        prefix = blake2b(len(kind_bytes).to_bytes(4, "big"), digest_size=8)
        prefix.update(kind_bytes)
        if len(_PREFIXES) >= _MAX_PREFIXES:
            _PREFIXES.clear()  # (kinds are few; a peer naming many only refills it)
        _PREFIXES[kind] = prefix
    h = prefix.copy()
    h.update(key.encode("utf-8", "surrogatepass") if type(key) is str else _to_bytes(key))
    return int.from_bytes(h.digest(), "big")


# Per kind, the hash state after its length and name: copying it costs less than
# hashing the prefix again (1.3 against 3.1 µs per key_hash on the loaded 2-core
# machine, timeit), and every remote call and registry operation hashes a key.
_PREFIXES: dict[str, blake2b] = {}
_MAX_PREFIXES = 1024
