//! Addressing rules the core dispatcher and the features share: whether a `to` is served
//! here, whether an account exists, how a stanza is forwarded with its sender stamped and
//! how it is answered with an error (also when another domain could not be reached: a
//! bounce). It decides nothing about what a feature does.

use crate::jid::Jid;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, Stanza, StanzaCondition, StanzaError};
use crate::xml::{write_element_without, NS_CLIENT};
use log::debug;
use std::rc::Rc;

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

/// A stanza that could not reach another domain (a server, a component): a message or iq
/// request is answered to its (local) sender with `condition`; presence and errors vanish
/// (RFC 6120 §8.3.1).
pub fn bounce(server: &Server, xml: &str, condition: StanzaCondition) {
    let wrapped = format!("<w xmlns='{}'>{xml}</w>", crate::xml::NS_CLIENT);
    let Ok(doc) = crate::xml::parse_stanza(&wrapped) else {
        return;
    };
    let Ok(node) = crate::xml::stanza_element(&doc) else {
        return;
    };
    let Ok(parsed) = stanza::Stanza::parse(node) else {
        return;
    };
    let answered = match parsed.ty {
        stanza::StanzaType::Message(ty) => ty != stanza::MessageType::Error,
        stanza::StanzaType::Iq(ty) => matches!(ty, stanza::IqType::Get | stanza::IqType::Set),
        stanza::StanzaType::Presence(_) => false,
    };
    let (Some(from), Some(to)) = (&parsed.from, &parsed.to) else {
        return;
    };
    if !answered {
        debug!(
            "{}: dropped an undeliverable {:?}",
            to.domain(),
            parsed.kind
        );
        return;
    }
    let mut error = String::new();
    stanza::write_error_reply(
        &mut error,
        parsed.kind,
        parsed.id,
        to.as_str(),
        from.as_str(),
        &StanzaError::new(condition),
    );
    deliver_local(server, from, error.into());
}

/// Hands a stanza from elsewhere to a local full JID's session (an error coming back).
fn deliver_local(server: &Server, to: &Jid, xml: Rc<str>) {
    let session = server.router.borrow().find(to).cloned();
    if let Some(session) = session {
        server.deliver(&session, xml, false);
    }
}
