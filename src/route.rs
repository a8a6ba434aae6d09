//! Addressing rules the core dispatcher and the features share: whether a `to` is served
//! here, whether an account exists, how a stanza is forwarded with its sender stamped and
//! how it is answered with an error. It decides nothing about what a feature does.

use crate::jid::Jid;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, Stanza, StanzaCondition, StanzaError};
use crate::xml::{write_element_without, NS_CLIENT};

/// Serialises a stanza for delivery with the sender's full JID stamped.
pub fn forwarded(stanza: &Stanza, from: &Jid) -> String {
    forwarded_without(stanza, from, |_| false)
}

/// [`forwarded`], leaving out the child elements `skip` picks (hints meant
/// for this server only).
pub fn forwarded_without(
    stanza: &Stanza,
    from: &Jid,
    skip: impl Fn(roxmltree::Node) -> bool,
) -> String {
    let mut xml = String::with_capacity(stanza.node.range().len() + 64);
    write_element_without(
        &mut xml,
        stanza.node,
        NS_CLIENT,
        &[("from", Some(from.as_str()))],
        skip,
    );
    xml
}

/// Answers a stanza with an error, unless it is an error itself (RFC 6120 §8.3.1).
pub fn reply_error(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    condition: StanzaCondition,
    out: &mut String,
) {
    if stanza.is_error() {
        return;
    }
    let domain: &str = &server.config().domain;
    let from = stanza.to.as_ref().map_or(domain, Jid::as_str);
    stanza::write_error_reply(
        out,
        stanza.kind,
        stanza.id,
        from,
        session.jid.as_str(),
        &StanzaError::new(condition),
    );
}

/// Whether `to` is on this server's domain. A local user's stanza for another domain leaves
/// through federation (`from` stamped) and this is false; one federation cannot take (off,
/// a refused domain) or a peer's (no relaying) is answered with `remote-server-not-found`
/// (RFC 6120 §8.3.3.16).
pub fn served_here(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    to: &Jid,
    out: &mut String,
) -> bool {
    if to.domain() != server.config().domain {
        if !session.remote {
            let xml = forwarded(stanza, &session.jid).into();
            if server.send_remote(to, xml, crate::offline::is_storable(stanza)) {
                return false;
            }
        }
        reply_remote_not_found(server, session, stanza, out);
        return false;
    }
    true
}

/// `remote-server-not-found` (RFC 6120 §8.3.3.16): another domain federation cannot reach.
pub fn reply_remote_not_found(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    out: &mut String,
) {
    reply_error(
        server,
        session,
        stanza,
        StanzaCondition::RemoteServerNotFound,
        out,
    );
}

/// `service-unavailable`: RFC 6121 §8.5's answer for no such account, resource or service
/// alike, which tells the sender nothing about which it was.
pub fn reply_unavailable(server: &Server, session: &Session, stanza: &Stanza, out: &mut String) {
    reply_error(
        server,
        session,
        stanza,
        StanzaCondition::ServiceUnavailable,
        out,
    );
}

/// Whether a localpart names an account: online users certainly exist.
pub fn account_exists(server: &Server, local: &str) -> bool {
    !server.is_retired(local)
        && (!server.router.borrow().resources(local).is_empty()
            || server.store.user_exists(local).unwrap_or(false))
}
