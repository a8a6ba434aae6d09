//! Presence (RFC 6121 §4): a session's availability and priority, and
//! directed presence between local users. Roster-based broadcast and
//! subscriptions build on this (they need the roster).

use crate::dispatch::{forwarded, reply_error, Deferred};
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, PresenceType, Stanza, StanzaCondition};
use crate::xml::NS_CLIENT;
use std::rc::Rc;

/// RFC 6121 §4.7.2.3: priority is -128..=127, absent means 0.
pub fn priority(stanza: &Stanza) -> Option<i8> {
    match stanza::child_text(stanza.node, "priority", NS_CLIENT) {
        None => Some(0),
        Some(text) => text.trim().parse().ok(),
    }
}

pub fn on_presence(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    ty: PresenceType,
    out: &mut String,
) -> Deferred {
    if let Some(to) = &stanza.to {
        directed(server, session, stanza, to, out);
        return Deferred::None;
    }
    match ty {
        PresenceType::Available => {
            let Some(priority) = priority(stanza) else {
                reply_error(server, session, stanza, StanzaCondition::BadRequest, out);
                return Deferred::None;
            };
            session.priority.set(priority);
            let initial = !session.available.replace(true);
            if initial {
                Deferred::FlushOffline
            } else {
                Deferred::None
            }
        }
        PresenceType::Unavailable => {
            session.available.set(false);
            Deferred::None
        }
        _ => Deferred::None,
    }
}

/// Presence sent to one address: delivered to a local user's available
/// resources (bare JID) or to one resource (full JID).
fn directed(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    to: &crate::jid::Jid,
    out: &mut String,
) {
    if to.domain() != server.config.domain {
        reply_error(
            server,
            session,
            stanza,
            StanzaCondition::RemoteServerNotFound,
            out,
        );
        return;
    }
    let Some(local) = to.local() else { return };
    let targets: Vec<Rc<Session>> = {
        let router = server.router.borrow();
        if to.resource().is_some() {
            router.find(to).cloned().into_iter().collect()
        } else {
            router
                .resources(local)
                .iter()
                .filter(|s| s.available.get())
                .cloned()
                .collect()
        }
    };
    if targets.is_empty() {
        return;
    }
    let xml: Rc<str> = forwarded(stanza, &session.jid).into();
    for target in &targets {
        server.deliver(target, xml.clone(), false);
    }
}

/// A session ended without (or after) unavailable presence.
pub fn session_ended(_server: &Rc<Server>, session: &Rc<Session>) {
    session.available.set(false);
}
