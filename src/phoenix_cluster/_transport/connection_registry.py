"""Which connection to a peer new work uses: one per peer pair, and the dial tie-break.

Both nodes may dial each other. :class:`ConnectionRegistry` keeps every established
connection of a transport and, per peer name, the *primary* one new work goes to. When a
second connection to a peer arrives, both nodes keep the one dialled by the node with
the lower name and retire the other (``Goodbye("duplicate")``, see :mod:`.connection`),
a rule each side applies alone once the handshake told it both names; a peer that comes
back with a higher incarnation replaces its old connection at once (that process is
gone). :class:`~.tcp.TcpTransport` registers what it dials and accepts here.
"""

from __future__ import annotations

import logging

from .connection import TcpConnection

__all__ = ["ConnectionRegistry"]

_log = logging.getLogger("phoenix_cluster.transport")


class ConnectionRegistry:
    """The connections of the node ``node_name``, and the primary one per peer."""

    def __init__(self, node_name: str) -> None:
        self._node_name = node_name
        self.conns: set[TcpConnection] = set()  # past the handshake, not yet closed
        self.primary: dict[str, TcpConnection] = {}  # peer name -> where new work goes

    def register(self, new: TcpConnection) -> TcpConnection:
        """Add a fresh connection; return the one new work to this peer should use."""
        peer = new.peer_name
        self.conns.add(new)
        current = self.primary.get(peer)
        if current is None or not current.is_open:
            self.primary[peer] = new
            _log.debug("connected to %s (%s, %s)", peer, new.peer_address,
                       "dialled" if new.outbound else "accepted")
            return new
        if new.peer_incarnation != current.peer_incarnation:
            newer, older = (new, current) if new.peer_incarnation > current.peer_incarnation \
                else (current, new)
            _log.info("peer %s restarted (incarnation %d -> %d); dropping the old connection",
                      peer, older.peer_incarnation, newer.peer_incarnation)
            self.primary[peer] = newer
            older.fail(f"{peer} restarted (incarnation {older.peer_incarnation} ->"
                       f" {newer.peer_incarnation})")
            return newer
        if self._prefers(new, current):
            self.primary[peer] = new
            current.retire()
            return new
        if new.outbound or new.outbound != current.outbound:
            new.retire()  # our duplicate dial, or the loser of a crossing dial
        # else: a second connection the peer dialled; the peer retires one of them.
        return current

    def _prefers(self, new: TcpConnection, current: TcpConnection) -> bool:
        if current.peer_said_retire:
            return True  # the peer already chose the other one
        if new.outbound == current.outbound:
            return False  # one side dialled twice: that side keeps the first
        # Crossing dials: keep the one dialled by the lower name, as the peer will.
        dialler_of_new = self._node_name if new.outbound else new.peer_name
        return dialler_of_new == min(self._node_name, new.peer_name)

    def peer_retired(self, conn: TcpConnection) -> None:
        """The peer sent Goodbye("duplicate") on ``conn``: it uses another connection."""
        peer = conn.peer_name
        if self.primary.get(peer) is conn:
            other = self._other_open(conn)
            if other is None:
                return  # keep using it until the surviving connection arrives here
            self.primary[peer] = other
        conn.retire()

    def successor(self, conn: TcpConnection) -> TcpConnection | None:
        current = self.primary.get(conn.peer_name)
        return current if current is not None and current.is_open else None

    def closed(self, conn: TcpConnection) -> None:
        """``conn`` closed: new work to its peer goes to another open one, if any."""
        self.conns.discard(conn)
        peer = conn.peer_name
        if self.primary.get(peer) is conn:
            other = self._other_open(conn)
            if other is None:
                del self.primary[peer]
            else:
                self.primary[peer] = other

    def _other_open(self, conn: TcpConnection) -> TcpConnection | None:
        for c in self.conns:
            if c is not conn and c.peer_name == conn.peer_name and c.is_open:
                return c
        return None
