//! Last Activity (XEP-0012): the server's uptime, and for an account's bare JID the seconds
//! since its last logout (0 while online) with the status it left, shown only to the account itself and to users
//! subscribed to its presence. Queries to a full JID are routed to the client, not here.

use crate::feature::{Deferred, Feature};
use crate::iq::Iq;
use crate::iq::IqTarget;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, StanzaCondition};
use crate::time;
use crate::xml::{Esc, NS_CLIENT};
use std::fmt::Write;

pub const NS: &str = "jabber:iq:last";

pub const FEATURE: Feature = Feature {
    name: "last",
    iq: &[NS],
    on_iq: |iq, out| handle(iq, out).then_some(Deferred::None),
    server_disco: &[NS],
    account_disco: &[NS],
    ..Feature::NONE
};

pub fn handle(iq: &Iq, out: &mut String) -> bool {
    if iq.ty != IqType::Get {
        return false;
    }
    let reply = iq.reply();
    let (seconds, status) = match iq.target {
        IqTarget::Server => (iq.server.started.elapsed().as_secs(), None),
        IqTarget::Account(contact) => match account_idle(iq.server, iq.session, contact) {
            Ok(idle) => idle,
            Err(condition) => {
                reply.fail(out, condition);
                return true;
            }
        },
    };
    reply.open_result(out);
    let _ = write!(out, "><query xmlns='{NS}' seconds='{seconds}'");
    match status {
        Some(status) => {
            let _ = write!(out, ">{}</query></iq>", Esc(&status));
        }
        None => out.push_str("/></iq>"),
    }
    true
}

/// XEP-0012 §5: seconds since `contact` logged out and the status it left, if the asker
/// may see its presence.
fn account_idle(
    server: &Server,
    session: &Session,
    contact: &str,
) -> Result<(u64, Option<String>), StanzaCondition> {
    let user = session.jid.user();
    if contact != user {
        let contact_jid = format!("{contact}@{}", server.config().domain);
        let subscribed = server
            .store
            .roster_item(user, &contact_jid)
            .ok()
            .flatten()
            .is_some_and(|item| item.to);
        if !subscribed {
            return Err(StanzaCondition::Forbidden);
        }
    }
    let online = server
        .router
        .borrow()
        .resources(contact)
        .iter()
        .any(|s| s.available.get());
    if online {
        return Ok((0, None));
    }
    match server.store.last_presence(contact) {
        Ok(Some((when, xml))) => Ok((
            time::unix_now().saturating_sub(when),
            status_of(&String::from_utf8_lossy(&xml)),
        )),
        _ => Err(StanzaCondition::ItemNotFound),
    }
}

/// The `<status/>` text of a stored presence (serialised in the `jabber:client` context).
fn status_of(presence: &str) -> Option<String> {
    let wrapped = format!("<w xmlns='{NS_CLIENT}'>{presence}</w>");
    let doc = roxmltree::Document::parse(&wrapped).ok()?;
    let node = doc.root_element().first_element_child()?;
    stanza::child_text(node, "status", NS_CLIENT)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_the_stored_presence() {
        assert_eq!(
            status_of("<presence type='unavailable' from='a@h/r'><status>gone &amp; back</status></presence>"),
            Some("gone & back".into())
        );
        assert_eq!(
            status_of("<presence type='unavailable' from='a@h/r'/>"),
            None
        );
        assert_eq!(status_of("<presence"), None);
    }
}
