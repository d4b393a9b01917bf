"""Every tunable of the TCP transport in one frozen object, each default explained once.

Units are in the names (STYLE 3.20). Validation happens here, so a bad value fails when
the transport is built, naming the key, not deep inside a connection later.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from phoenix_cluster._wire.frames import DEFAULT_MAX_FRAME_BYTES
from phoenix_cluster.errors import ConfigError

__all__ = ["TcpSettings"]


@dataclass(frozen=True, slots=True)
class TcpSettings:
    """Settings of a :class:`~.tcp.TcpTransport`; every value must be positive.

    Attributes:
        max_frame_bytes: largest frame accepted from a peer, checked before its body is
            read; also the largest we send (bigger messages fail as ``ProtocolError``).
        send_queue_frames: requests and casts queued per connection before ``send`` and
            ``request`` wait (backpressure). Large enough to absorb bursts between two
            writer turns; small enough that a stuck peer costs bounded memory.
        send_timeout_s: how long ``send`` waits for room in a full queue before raising
            ``Overloaded`` (``request`` uses its own timeout instead).
        max_inbound_tasks: inbound calls and casts handled at once per connection.
            Beyond it a Call is answered ``overloaded`` at once and a Cast makes the
            reader stop reading until a slot frees, which pushes back on the sender
            through TCP instead of growing memory.
        handshake_timeout_s: time a new connection has to authenticate (stops slowloris
            peers from holding sockets open); also bounds the TLS handshake.
        connect_timeout_s: time a dial may take to get a TCP (and TLS) connection.
        keepalive_interval_s: idle time after which a Ping is sent.
        keepalive_timeout_s: silence after which the peer is considered dead. Several
            intervals, so one lost or late Pong is not a false alarm.
        retire_timeout_s: how long a duplicate connection may take to finish its
            in-flight work after the tie-break before it is closed regardless.
        close_timeout_s: how long a close may spend flushing queued frames (and the
            Goodbye) and shutting TLS down before the socket is aborted.
        write_batch_bytes: bytes joined into one ``write()`` by the writer. Bigger
            batches mean fewer syscalls; the cap keeps a single join from copying a
            whole backlog at once.
        read_chunk_bytes: bytes asked of the socket per read.
    """

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    send_queue_frames: int = 10_000
    send_timeout_s: float = 5.0
    max_inbound_tasks: int = 10_000
    handshake_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    keepalive_interval_s: float = 5.0
    keepalive_timeout_s: float = 15.0
    retire_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    write_batch_bytes: int = 1024 * 1024
    read_chunk_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(
                    f"transport setting {f.name} must be a positive number, got {value!r}",
                    key=f.name,
                )
        if self.max_frame_bytes > 2**32 - 1:
            raise ConfigError(
                f"max_frame_bytes must be at most {2**32 - 1:,}, got {self.max_frame_bytes:,}",
                key="max_frame_bytes",
            )
