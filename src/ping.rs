//! XEP-0199 ping: the server (and any local account, answered by the
//! server on its behalf) replies to a ping with an empty result.

use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, Stanza};

pub const NS: &str = "urn:xmpp:ping";

pub fn handle(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    ty: IqType,
    out: &mut String,
) -> bool {
    let is_ping = stanza
        .payload()
        .is_some_and(|p| p.tag_name().name() == "ping");
    if ty != IqType::Get || !is_ping {
        return false;
    }
    let domain: &str = &server.config().domain;
    let from = stanza.to.as_ref().map_or(domain, |j| j.as_str());
    stanza::write_iq_result(out, stanza.id, from, session.jid.as_str());
    true
}
