//! Peer certificates: the TLS client side of outgoing streams and what a peer's certificate proves.
