"""L1 wire layer: I/O-free message types, codec, length-prefixed framing and handshake."""
