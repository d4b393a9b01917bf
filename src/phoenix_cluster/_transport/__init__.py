"""L2 transport: authenticated, multiplexed connections between nodes.

- ``base``: the seams (``Transport``, ``PeerConnection``, ``InboundHandler``), statistics,
  and the internal errors ``ConnectionClosed`` (we closed it) / ``ConnectionBroken`` (the
  peer or the network did), which the agents layer maps to ``phx.NodeUnavailable``.
- ``tcp``: ``TcpTransport``: listening, dialling, the per-peer registry and the
  simultaneous-dial tie-break, over asyncio streams, optionally TLS.
- ``connection``: one connection: request matching, keepalive, retire and close.
  ``handshake`` drives the wire handshake over a stream, ``sendqueue`` is the bounded
  queue and its coalescing writer, ``inbound`` runs the handler per inbound message.
- ``peers``: ``PeerManager``: per-peer circuit breakers and reconnect with backoff.
- ``http2``, ``quic``: the same connections carried in one HTTP/2 stream (h2) or one QUIC
  stream (aioquic); ``streams`` adapts either to an asyncio byte stream.
- ``fallback``: ``FallbackTransport``: a per-peer chain of protocols that switches on
  failure and back on recovery (``protocol_switched`` events).
- ``tls``: TLS contexts from the node's certificate settings.
- ``cookie``: finds or creates the cluster secret.
- ``settings``, ``tasks``: every tunable in one object; task ownership and clock timeouts.

Frames, messages and the handshake state machines come from the I/O-free ``_wire`` layer.
Imports only ``_wire``, ``_resilience``, ``_telemetry``, ``_foundation`` and ``errors``;
nothing above L2.
"""
