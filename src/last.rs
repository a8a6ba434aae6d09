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
use crate::xml::build::Element;
use crate::xml::NS_CLIENT;

pub const NS: &str = "jabber:iq:last";

pub const FEATURE: Feature = Feature {
    name: "last",
    answers_remote: true,
    iq: &[NS],
    on_iq: |iq, out| handle(iq, out).then_some(Deferred::None),
    server_disco: &[NS],
    account_disco: &[NS],
    ..Feature::NONE
};

/// Whose last activity a get asks for (§4 the server's uptime, §5 an account's idle time).
/// A set or a result is not a request of this feature: `None`.
#[derive(Debug, PartialEq)]
enum Query<'a> {
    Server,
    Account(&'a str),
}

impl<'a> Query<'a> {
    fn parse(ty: IqType, target: IqTarget<'a>) -> Option<Query<'a>> {
        if ty != IqType::Get {
            return None;
        }
        Some(match target {
            IqTarget::Server => Query::Server,
            IqTarget::Account(contact) => Query::Account(contact),
        })
    }
}

pub fn handle(iq: &Iq, out: &mut String) -> bool {
    let Some(query) = Query::parse(iq.ty, iq.target) else {
        return false;
    };
    let reply = iq.reply();
    let (seconds, status) = match query {
        Query::Server => (iq.server.started.elapsed().as_secs(), None),
        Query::Account(contact) => match account_idle(iq.server, iq.session, contact) {
            Ok(idle) => idle,
            Err(condition) => {
                reply.fail(out, condition);
                return true;
            }
        },
    };
    reply.result_of(out, |out| write_last(out, seconds, status.as_deref()));
    true
}

/// `<query seconds='…'>status</query>` (§3).
fn write_last(out: &mut String, seconds: u64, status: Option<&str>) {
    let seconds = seconds.to_string();
    let query = Element::new("query").ns(NS).attr("seconds", &seconds);
    match status {
        Some(status) => query.text(out, status),
        None => query.empty(out),
    }
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
    let mut wrapped = String::with_capacity(presence.len() + 32);
    Element::new("w")
        .ns(NS_CLIENT)
        .children(&mut wrapped, |out| out.push_str(presence));
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
    fn a_get_asks_the_server_or_an_account_xep_0012_s4_s5() {
        assert_eq!(
            Query::parse(IqType::Get, IqTarget::Server),
            Some(Query::Server)
        );
        assert_eq!(
            Query::parse(IqType::Get, IqTarget::Account("bob")),
            Some(Query::Account("bob"))
        );
    }

    #[test]
    fn a_set_is_not_a_query() {
        assert_eq!(Query::parse(IqType::Set, IqTarget::Server), None);
    }

    #[test]
    fn the_answer_carries_seconds_and_the_status_left() {
        let mut out = String::new();
        write_last(&mut out, 42, Some("gone <now>"));
        let doc = roxmltree::Document::parse(&out).unwrap();
        let query = doc.root_element();
        assert!(query.has_tag_name((NS, "query")));
        assert_eq!(query.attribute("seconds"), Some("42"));
        assert_eq!(query.text(), Some("gone <now>"));
        out.clear();
        write_last(&mut out, 0, None);
        let doc = roxmltree::Document::parse(&out).unwrap();
        assert_eq!(doc.root_element().text(), None);
    }

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
