//! Who hears a local user: their local contacts as their roster's subscription states say
//! (`contacts`), each user's available sessions, and presence addressed to those sessions
//! on a user's behalf. Presence, subscriptions, privacy lists and PEP all ask it. It decides
//! nothing about whether a stanza may pass ([`crate::verdict`]) and changes no roster.

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
    let roster = match server.store.roster(user) {
        Ok(roster) => roster,
        Err(e) => {
            warn!("{user}: cannot read roster: {e}");
            return Vec::new();
        }
    };
    roster
        .live()
        .filter(|item| wanted(item))
        .filter_map(|item| Jid::parse(&item.jid).ok())
        .filter(|jid| jid.domain() == server.config().domain && jid.local().is_some())
        .collect()
}

/// Queues `xml` for every available resource of a local user.
pub fn deliver_to_user(server: &Server, local: &str, xml: Rc<str>, hold: Hold) {
    let router = server.router.borrow();
    for session in router.resources(local).iter().filter(|s| s.available.get()) {
        server.deliver_as(session, xml.clone(), false, hold);
    }
}

/// The presence of each available resource of `from` (or `unavailable` from each) to the
/// bare JID of `to`: after a subscription is approved or cancelled (RFC 6121 §3).
pub fn send_presence_of(server: &Server, from: &str, to: &str, available: bool) {
    let to_jid = format!("{to}@{}", server.config().domain);
    let router = server.router.borrow();
    for session in router.resources(from).iter().filter(|s| s.available.get()) {
        let xml = if available {
            match session.presence.current.borrow().as_deref() {
                Some(current) => addressed(current, &to_jid),
                None => continue,
            }
        } else {
            addressed(&unavailable_from(&session.jid), &to_jid)
        };
        deliver_to_user(server, to, xml.into(), Hold::Presence(session.id));
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
