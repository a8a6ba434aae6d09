//! Presence (RFC 6121 §4): availability and priority of each session, broadcast to the
//! contacts subscribed `from` the user and to all the user's resources (the sender included),
//! probes answered on behalf of local contacts (their current presence, or the last unavailable
//! one with a XEP-0203 delay), directed presence and the `unavailable` its recipients get at
//! logout. Contacts on other servers get the same over s2s: the broadcast one stanza per
//! contact's bare JID, probes from the user's bare JID at initial presence; presence from a
//! peer (a remote [`Session`]) is delivered to the user it is addressed to, and its probes
//! answered for that user.
//! Subscription stanzas go to [`crate::subscription`]; this module never changes a roster.

use crate::audience::{addressed, contacts_everywhere, deliver_to_user, reaches, unavailable_from};
use crate::feature::Deferred;
use crate::feature::{Feature, Wait};
use crate::jid::Jid;
use crate::offline::NS_DELAY;
use crate::route::{forwarded, reply_error, served_here};
use crate::router::Hold;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, PresenceType, Stanza, StanzaCondition};
use crate::store::StoreError;
use crate::subscription;
use crate::time;
use crate::verdict::{self, StanzaKind, Verdict};
use crate::xml::{Esc, NS_CLIENT};
use log::warn;
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

/// Directed presence recipients remembered per session; past it the oldest is forgotten
/// (it then misses the `unavailable` at logout), so a session's memory stays bounded.
const MAX_DIRECTED: usize = 32;

pub const FEATURE: Feature = Feature {
    name: "presence",
    on_presence: Some(|server, session, stanza, ty, out| {
        if session.remote {
            // Another server's user: no vCard of ours to announce (its localpart may name
            // a different account here).
            return on_presence(server, session, stanza, ty, out);
        }
        crate::vcard::with_photo_update(server, session, stanza, |stanza| {
            on_presence(server, session, stanza, ty, out)
        })
    }),
    state: Some(crate::feature::init::<PendingLast>),
    session_ended: Some(session_ended),
    account_deleting: Some(account_deleted),
    ..Feature::NONE
};

/// Last unavailable presences whose store write has not committed yet, so a probe that
/// arrives in between still gets the newest one. Entries leave once committed.
#[derive(Debug, Default)]
pub struct PendingLast(RefCell<std::collections::HashMap<Box<str>, LastPresence>>);

/// When a user went offline (Unix seconds) and the presence they left with.
type LastPresence = (u64, Rc<str>);

/// RFC 6121 §4.7.2.3: priority is -128..=127, absent means 0.
pub fn priority(stanza: &Stanza) -> Option<i8> {
    match stanza::child_text(stanza.node, "priority", NS_CLIENT) {
        None => Some(0),
        Some(text) => text.trim().parse().ok(),
    }
}

/// A presence with one more child element at its end.
fn with_child(mut xml: String, child: &str) -> String {
    if let Some(open) = xml.strip_suffix("/>").map(str::len) {
        xml.truncate(open);
        xml.push('>');
    } else if let Some(open) = xml.strip_suffix("</presence>").map(str::len) {
        xml.truncate(open);
    } else {
        return xml;
    }
    xml.push_str(child);
    xml.push_str("</presence>");
    xml
}

/// A bare JID reaches the user's available resources, a full JID that resource; an address
/// on another server, its server.
fn deliver_to_jid(server: &Server, to: &Jid, xml: Rc<str>, hold: Hold) {
    if to.domain() != server.config().domain {
        if reaches(server, to) {
            crate::s2s::send(server, to, xml, false);
        }
        return;
    }
    let Some(local) = to.local() else { return };
    if to.resource().is_none() {
        deliver_to_user(server, local, xml, hold);
    } else if let Some(session) = server.router.borrow().find(to) {
        server.deliver_as(session, xml, false, hold);
    }
}

/// RFC 6121 §4.2.2 / §4.4.2 / §4.5.2: to every contact subscribed `from` the user and to the
/// user's other available resources. The sending resource's own copy is [`echo`].
fn broadcast(server: &Server, session: &Session, xml: &str) {
    let user = session.jid.user();
    let contacts = contacts_everywhere(server, user, |item| item.from);
    for contact in contacts.remote {
        // §4.2.2, §4.4.2: to the contact's bare JID; its server delivers to its resources.
        if verdict::allows(server, &session.jid, &contact, StanzaKind::Presence) == Verdict::Allow {
            let xml = addressed(xml, contact.as_str()).into();
            crate::s2s::send(server, &contact, xml, false);
        }
    }
    for contact in contacts.local {
        let local = contact.local().unwrap_or_default();
        let xml: Rc<str> = addressed(xml, contact.as_str()).into();
        let router = server.router.borrow();
        // XEP-0191 §3.3: presence stops flowing to a blocked contact, both ways; privacy
        // lists (XEP-0016) may hold it back too, each resource's own active list deciding
        // whether it hears (XEP-0016 §2 rule 1).
        for to in router.resources(local).iter().filter(|s| s.available.get()) {
            if verdict::allows(server, &session.jid, &to.jid, StanzaKind::Presence)
                == Verdict::Allow
            {
                server.deliver_as(to, xml.clone(), false, Hold::Presence(session.id));
            }
        }
    }
    let router = server.router.borrow();
    for own in router.resources(user) {
        if own.id != session.id && own.available.get() {
            let xml = addressed(xml, own.jid.as_str()).into();
            server.deliver_as(own, xml, false, Hold::Presence(session.id));
        }
    }
}

/// RFC 6121 §4.2.2, §4.4.2, §4.5.2: an entity is implicitly subscribed to its own presence,
/// so the resource that sent a broadcast presence gets it too, `from` its full JID. It is
/// written with the replies to that resource's own stanzas (before whatever else its presence
/// brings), so an inactive client (XEP-0352) gets it at once; block and privacy lists never
/// apply between a user's own resources ([`verdict::allows`]).
fn echo(session: &Session, xml: &str, out: &mut String) {
    out.push_str(&addressed(xml, session.jid.as_str()));
}

/// A probe answered on behalf of a local contact (RFC 6121 §4.3.2): the presence of each
/// available resource, else the last unavailable presence with the time it was sent.
fn answer_probe(server: &Server, contact: &str, to: &Jid, out: &mut String) {
    let blocked =
        Jid::from_parts(Some(contact), &server.config().domain, None).is_ok_and(|contact| {
            verdict::allows(server, &contact, to, StanzaKind::Presence) != Verdict::Allow
        });
    if blocked {
        return;
    }
    let router = server.router.borrow();
    let mut answered = false;
    for session in router
        .resources(contact)
        .iter()
        .filter(|s| s.available.get())
    {
        if let Some(current) = session.presence.current.borrow().as_deref() {
            out.push_str(&addressed(current, to.as_str()));
            answered = true;
        }
    }
    if answered {
        return;
    }
    let pending = server
        .state::<PendingLast>()
        .0
        .borrow()
        .get(contact)
        .cloned();
    let last = match pending {
        Some((when, xml)) => Some((when, xml.as_bytes().to_vec())),
        None => server.store.last_presence(contact).ok().flatten(),
    };
    if let Some((when, xml)) = last {
        let delay = format!(
            "<delay xmlns='{NS_DELAY}' from='{}' stamp='{}'/>",
            Esc(&server.config().domain),
            time::format_datetime(when)
        );
        let xml = addressed(&String::from_utf8_lossy(&xml), to.as_str());
        out.push_str(&with_child(xml, &delay));
    }
}

pub fn on_presence(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    ty: PresenceType,
    out: &mut String,
) -> Deferred {
    use PresenceType::*;
    match (ty, &stanza.to) {
        (Subscribe | Subscribed | Unsubscribe | Unsubscribed, Some(to)) => {
            subscription::handle(server, session, stanza, ty, to, out)
        }
        (Subscribe | Subscribed | Unsubscribe | Unsubscribed, None) => {
            reply_error(server, session, stanza, StanzaCondition::BadRequest, out);
            Deferred::None
        }
        (_, _) if session.remote => {
            inbound(server, session, stanza, ty, out);
            Deferred::None
        }
        (Probe, Some(to)) => {
            probe(server, session, to, out);
            Deferred::None
        }
        (Available | Unavailable | Error, Some(to)) => {
            directed(server, session, stanza, ty, to, out);
            Deferred::None
        }
        (Available, None) => available(server, session, stanza, out),
        (Unavailable, None) => {
            let xml = forwarded(stanza, &session.jid);
            if session.available.get() {
                // §4.5.2 sends it to the user's resources; implicitly subscribed to its own
                // presence (§4.2.2), the sender, whose stream stays open, gets it too.
                echo(session, &xml, out);
            }
            match unavailable(server, session, &xml) {
                Some(write) => Deferred::Reply(Box::pin(async move {
                    if let Err(e) = write.await {
                        warn!("last presence not stored: {e}");
                    }
                    String::new()
                })),
                None => Deferred::None,
            }
        }
        (Probe | Error, None) => Deferred::None,
    }
}

/// Initial presence or an update (RFC 6121 §4.2, §4.4).
fn available(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    out: &mut String,
) -> Deferred {
    let Some(priority) = priority(stanza) else {
        reply_error(server, session, stanza, StanzaCondition::BadRequest, out);
        return Deferred::None;
    };
    session.priority.set(priority);
    let xml: Rc<str> = forwarded(stanza, &session.jid).into();
    *session.presence.current.borrow_mut() = Some(xml.clone());
    let initial = !session.available.replace(true);
    broadcast(server, session, &xml);
    // §4.2.2: the sender's own copy comes first, then (initial presence) the presence of the
    // user's other resources and the contacts' presence the probes bring back (§4.3.2).
    echo(session, &xml, out);
    crate::pep::caps::on_available(server, session, stanza, initial, out);
    if !initial {
        return Deferred::None;
    }
    let user = session.jid.user();
    for own in server.router.borrow().resources(user) {
        if own.id != session.id && own.available.get() {
            if let Some(current) = own.presence.current.borrow().as_deref() {
                out.push_str(&addressed(current, session.jid.as_str()));
            }
        }
    }
    let contacts = contacts_everywhere(server, user, |item| item.to);
    for contact in contacts.local {
        answer_probe(
            server,
            contact.local().unwrap_or_default(),
            &session.jid,
            out,
        );
    }
    // §4.3.1: a contact elsewhere is probed from the user's bare JID; its answers, addressed
    // to that bare JID, reach every available resource (§4.3.2).
    let bare = session.jid.bare();
    for contact in contacts.remote {
        if verdict::allows(server, &bare, &contact, StanzaKind::Presence) == Verdict::Allow {
            let xml = probe_stanza(&bare, &contact).into();
            crate::s2s::send(server, &contact, xml, false);
        }
    }
    // RFC 6121 §3.1.3: requests not yet answered are shown again at each login.
    match server.store.pending_in(user) {
        Ok(requests) => {
            for request in requests {
                out.push_str(&String::from_utf8_lossy(&request));
            }
        }
        Err(e) => warn!("{user}: cannot read subscription requests: {e}"),
    }
    Deferred::FlushOffline
}

/// A presence probe between two addresses (RFC 6121 §4.3.1).
fn probe_stanza(from: &Jid, to: &Jid) -> String {
    format!(
        "<presence type='probe' from='{}' to='{}'/>",
        Esc(from.as_str()),
        Esc(to.as_str())
    )
}

/// A probe from the client: answered for contacts it is subscribed to (one elsewhere is
/// asked, its answer coming to this resource), else ignored.
fn probe(server: &Server, session: &Session, to: &Jid, out: &mut String) {
    let user = session.jid.user();
    let subscribed = server
        .store
        .roster_item(user, to.bare().as_str())
        .ok()
        .flatten()
        .is_some_and(|item| item.to);
    if !subscribed {
        return;
    }
    if to.domain() != server.config().domain {
        if reaches(server, to) {
            let xml = probe_stanza(&session.jid, &to.bare()).into();
            crate::s2s::send(server, to, xml, false);
        }
    } else if let Some(contact) = to.local() {
        answer_probe(server, contact, &session.jid, out);
    }
}

/// Presence from an entity on another server to a local user (RFC 6121 §4.3.2, §4.4.3,
/// §4.5.3, §4.6.3), already past the block and privacy gate for its `to`: a probe is answered
/// for the user when the prober is subscribed to the user's presence (else ignored, revealing
/// nothing), anything else goes to the user's available resources (bare `to`) or the one
/// resource (full `to`), each resource's own privacy list deciding whether it hears.
fn inbound(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    ty: PresenceType,
    out: &mut String,
) {
    let Some(to) = &stanza.to else { return };
    let Some(user) = to.local().filter(|_| to.domain() == server.config().domain) else {
        return;
    };
    if ty == PresenceType::Probe {
        // `session.jid` is the prober's address; its localpart is no account here.
        let subscribed = server
            .store
            .roster_item(user, session.jid.bare().as_str())
            .ok()
            .flatten()
            .is_some_and(|item| item.from);
        if subscribed && !server.is_retired(user) {
            answer_probe(server, user, &session.jid, out);
        }
        return;
    }
    let xml: Rc<str> = forwarded(stanza, &session.jid).into();
    let router = server.router.borrow();
    let recipients: Vec<&Rc<Session>> = if to.resource().is_some() {
        router.find(to).into_iter().collect()
    } else {
        router
            .resources(user)
            .iter()
            .filter(|s| s.available.get())
            .collect()
    };
    for recipient in recipients {
        if verdict::allows(server, &session.jid, &recipient.jid, StanzaKind::Presence)
            == Verdict::Allow
        {
            server.deliver_as(recipient, xml.clone(), false, Hold::Presence(session.id));
        }
    }
}

/// Presence sent to one address (RFC 6121 §4.6): delivered to a local user's available
/// resources (bare JID) or one resource (full JID); remembered for the logout.
fn directed(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    ty: PresenceType,
    to: &Jid,
    out: &mut String,
) {
    // §4.6.2: to another server's address too, when federation reaches it.
    let elsewhere = to.domain() != server.config().domain && reaches(server, to);
    if !elsewhere && !served_here(server, session, stanza, to, out) {
        return;
    }
    let mut list = session.presence.directed.borrow_mut();
    list.retain(|jid| jid != to);
    if ty == PresenceType::Available {
        let user = session.jid.user();
        let subscriber = server
            .store
            .roster_item(user, to.bare().as_str())
            .ok()
            .flatten()
            .is_some_and(|item| item.from);
        if !subscriber {
            if list.len() >= MAX_DIRECTED {
                list.remove(0);
            }
            list.push(to.clone());
        }
    }
    drop(list);
    let xml = forwarded(stanza, &session.jid).into();
    deliver_to_jid(server, to, xml, Hold::Presence(session.id));
}

/// The session goes unavailable with `xml` (from stamped, no `to`): broadcast, tell directed
/// recipients, and if it was the user's last available resource, return the store write
/// of the last presence (XEP-0012, probes while offline).
fn unavailable(
    server: &Rc<Server>,
    session: &Session,
    xml: &str,
) -> Option<impl Future<Output = Result<(), StoreError>> + 'static> {
    let was_available = session.available.replace(false);
    session.presence.current.take();
    for jid in session.presence.directed.take() {
        let xml = addressed(xml, jid.as_str()).into();
        deliver_to_jid(server, &jid, xml, Hold::Presence(session.id));
    }
    // Room joins are directed presence too (RFC 6121 §4.6.1): leave them.
    crate::muc::session_ended(server, session);
    if !was_available {
        return None;
    }
    let user = session.jid.user();
    let others = server
        .router
        .borrow()
        .resources(user)
        .iter()
        .any(|s| s.id != session.id && s.available.get());
    if others || server.is_retired(user) {
        // A deleted account keeps no last presence.
        broadcast(server, session, xml);
        return None;
    }
    // Recorded before contacts hear of it, so a probe right after sees this presence.
    let when = time::unix_now();
    let last: Rc<str> = xml.into();
    server
        .state::<PendingLast>()
        .0
        .borrow_mut()
        .insert(user.into(), (when, last.clone()));
    broadcast(server, session, xml);
    let write = server
        .store
        .set_last_presence(user, when, xml.as_bytes().to_vec());
    let (server, user) = (server.clone(), Box::<str>::from(user));
    Some(async move {
        let result = write.await;
        let pending = server.state::<PendingLast>();
        let mut pending = pending.0.borrow_mut();
        if pending
            .get(&user)
            .is_some_and(|(_, xml)| Rc::ptr_eq(xml, &last))
        {
            pending.remove(&user);
            crate::memory::shrink_sparse(&mut pending);
        }
        result
    })
}

/// The account is being deleted: each of its available resources goes unavailable now, for
/// its contacts (RFC 6121 §4.5.2) while its roster is still stored, before its sessions end
/// (which then broadcast nothing more). Their mailboxes are already closed, so the account's
/// own resources are not told.
pub fn account_deleted(server: &Server, user: &str) {
    let sessions: Vec<Rc<Session>> = server.router.borrow().resources(user).to_vec();
    for session in &sessions {
        if !session.available.replace(false) {
            continue;
        }
        session.presence.current.take();
        broadcast(server, session, &unavailable_from(&session.jid));
    }
}

/// The session ended, cleanly or not: contacts see it go `unavailable` either way.
fn session_ended(server: &Rc<Server>, session: &Rc<Session>) -> Wait {
    let xml = unavailable_from(&session.jid);
    let write = unavailable(server, session, &xml)?;
    let jid = session.jid.clone();
    Some(Box::pin(async move {
        if let Err(e) = write.await {
            warn!("{jid}: last presence not stored: {e}");
        }
    }))
}

impl crate::feature::State for PendingLast {
    fn new(_config: &crate::config::Config, _store: &crate::store::Store) -> Self {
        PendingLast::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing_and_children() {
        assert_eq!(
            addressed(
                "<presence from='a@h/r'><show>away</show></presence>",
                "b&c@h"
            ),
            "<presence to='b&amp;c@h' from='a@h/r'><show>away</show></presence>"
        );
        assert_eq!(
            with_child("<presence type='unavailable'/>".into(), "<x/>"),
            "<presence type='unavailable'><x/></presence>"
        );
        assert_eq!(
            with_child("<presence><status>s</status></presence>".into(), "<x/>"),
            "<presence><status>s</status><x/></presence>"
        );
    }
}
