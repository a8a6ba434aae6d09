//! XEP-0199 ping: the server (and any local account, answered by the
//! server on its behalf) replies to a ping with an empty result; the
//! server's own keepalive ping and how a client shows it understands pings.

use crate::iq::Iq;
use crate::stanza::{IqType, Stanza, StanzaType};
use crate::xml::Esc;
use std::fmt::Write;

pub const NS: &str = "urn:xmpp:ping";

/// The ids of the server's keepalive pings start with this.
const KEEPALIVE_ID: &str = "keepalive-";

pub fn handle(iq: &Iq, out: &mut String) -> bool {
    if iq.ty != IqType::Get || iq.payload.tag_name().name() != "ping" {
        return false;
    }
    iq.reply().result(out);
    true
}

/// §4.1 server-to-client ping: the keepalive probe of a silent session.
pub fn write_keepalive(out: &mut String, id: u64, domain: &str, to: &str) {
    let _ = write!(
        out,
        "<iq type='get' id='{KEEPALIVE_ID}{id}' from='{}' to='{}'><ping xmlns='{NS}'/></iq>",
        Esc(domain),
        Esc(to)
    );
}

/// Whether a client's stanza shows it speaks XEP-0199: a ping of its own, or the result
/// answering one of the server's keepalive pings. A client that does not may fail on an
/// unexpected iq (it must answer with an error, RFC 6120 §8.2.3, but some crash instead).
pub fn shows_support(stanza: &Stanza) -> bool {
    match stanza.ty {
        StanzaType::Iq(IqType::Get) => stanza.child("ping", NS).is_some(),
        StanzaType::Iq(IqType::Result) => stanza.id.is_some_and(|id| id.starts_with(KEEPALIVE_ID)),
        _ => false,
    }
}
