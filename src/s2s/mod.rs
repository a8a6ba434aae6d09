//! Federation: server-to-server streams (RFC 6120) that make this server one node of the
//! XMPP network. Stanzas for another domain leave through one outgoing stream per peer
//! domain; peers' stanzas arrive on incoming streams, authenticated by certificate (SASL
//! EXTERNAL, or a pinned fingerprint) or by Server Dialback (XEP-0220).

pub mod certs;
pub mod resolve;

use crate::jid::Jid;
use crate::server::Server;
use std::rc::Rc;

/// Sends `xml` (one stanza, `from` stamped and `to` set) toward `to`'s server, opening the
/// stream on demand. False when federation is off or refuses that domain: the caller then
/// answers `remote-server-not-found`. A stanza that cannot be delivered later bounces to
/// its sender (`storable` marks a message that must not vanish).
pub fn send(server: &Server, to: &Jid, xml: Rc<str>, storable: bool) -> bool {
    let _ = (server, to, xml, storable);
    false
}
