//! Who hears a local user: their contacts as their roster's subscription states say (local
//! users in `contacts`, addresses on other servers too in `contacts_everywhere`), each user's
//! available sessions, and presence addressed to those sessions on a user's behalf; a bare
//! JID elsewhere is reached through its server (`Server::send_remote`). Presence, subscriptions,
//! privacy lists and PEP all ask it. It decides nothing about whether a stanza may pass
//! ([`crate::verdict`]) and changes no roster.

use crate::jid::Jid;
use crate::router::Hold;
use crate::server::Server;
use crate::xml::Esc;
use log::warn;
use std::rc::Rc;

/// Local contacts whose roster item on `user`'s roster satisfies `wanted`.
pub(crate) fn contacts(
    server: &Server,
    user: &str,
    wanted: fn(&crate::store::RosterItem) -> bool,
) -> Vec<Jid> {
    contacts_everywhere(server, user, wanted).local
}

/// A user's contacts, where they are.
#[derive(Debug, Default)]
pub(crate) struct Contacts {
    /// Accounts on this server.
    pub local: Vec<Jid>,
    /// Addresses on servers federation reaches ([`reaches`]).
    pub remote: Vec<Jid>,
}

/// The contacts whose item on `user`'s roster satisfies `wanted`, here and on other servers;
/// with one roster read. Addresses federation does not reach (it is off, or refuses the
/// domain, or a service of this server's) are in neither list.
pub(crate) fn contacts_everywhere(
    server: &Server,
    user: &str,
    wanted: fn(&crate::store::RosterItem) -> bool,
) -> Contacts {
    let roster = match server.store.roster(user) {
        Ok(roster) => roster,
        Err(e) => {
            warn!("{user}: cannot read roster: {e}");
            return Contacts::default();
        }
    };
    let mut contacts = Contacts::default();
    let jids = roster
        .live()
        .filter(|item| wanted(item))
        .filter_map(|item| Jid::parse(&item.jid).ok());
    for jid in jids {
        if jid.domain() == server.config().domain {
            if jid.local().is_some() {
                contacts.local.push(jid);
            }
        } else if reaches(server, &jid) {
            contacts.remote.push(jid);
        }
    }
    contacts
}

/// Whether `jid` is elsewhere and reachable: an external component's (`[[components]]`,
/// whether connected now or not), or on another server that federation is on for: not this
/// domain nor one of its services, and a domain the `[s2s]` allow and deny lists let through.
pub(crate) fn reaches(server: &Server, jid: &Jid) -> bool {
    let config = server.config();
    let domain = jid.domain();
    if config.component_for(domain).is_some() {
        return true;
    }
    config.s2s.enabled
        && domain != config.domain
        && config.s2s.allows(domain)
        && server.hooks().service(server, domain).is_none()
}

/// Queues `xml` for a bare JID: every available resource of a local user, or the server of
/// an address elsewhere. False if federation refused it.
pub fn deliver_to_bare(server: &Server, to: &Jid, xml: Rc<str>, hold: Hold) -> bool {
    if to.domain() == server.config().domain {
        if let Some(local) = to.local() {
            deliver_to_user(server, local, xml, hold);
        }
        return true;
    }
    reaches(server, to) && server.send_remote(to, xml, false)
}

/// Queues `xml` for every available resource of a local user.
pub fn deliver_to_user(server: &Server, local: &str, xml: Rc<str>, hold: Hold) {
    let router = server.router.borrow();
    for session in router.resources(local).iter().filter(|s| s.available.get()) {
        server.deliver_as(session, xml.clone(), false, hold);
    }
}

/// The presence of each available resource of the local user `from` (or `unavailable` from
/// each) to the bare JID `to`, here or elsewhere: after a subscription is approved or
/// cancelled (RFC 6121 §3).
pub fn send_presence_of(server: &Server, from: &str, to: &Jid, available: bool) {
    let sessions: Vec<_> = server.router.borrow().resources(from).to_vec();
    for session in sessions.iter().filter(|s| s.available.get()) {
        let xml = if available {
            match session.presence.current.borrow().as_deref() {
                Some(current) => addressed(current, to.as_str()),
                None => continue,
            }
        } else {
            addressed(&unavailable_from(&session.jid), to.as_str())
        };
        deliver_to_bare(server, to, xml.into(), Hold::Presence(session.id));
    }
}

/// A presence serialised without `to`, addressed to `to`.
pub(crate) fn addressed(xml: &str, to: &str) -> String {
    let rest = xml.strip_prefix("<presence").unwrap_or(xml);
    format!("<presence to='{}'{rest}", Esc(to))
}

pub(crate) fn unavailable_from(from: &Jid) -> String {
    format!(
        "<presence type='unavailable' from='{}'/>",
        Esc(from.as_str())
    )
}
