//! Federation: server-to-server streams (RFC 6120) that make this server one node of the
//! XMPP network. Stanzas for another domain leave through one outgoing stream per peer
//! domain; peers' stanzas arrive on incoming streams, authenticated by certificate (SASL
//! EXTERNAL, or a pinned fingerprint) or by Server Dialback (XEP-0220).

pub mod certs;
pub mod resolve;
