//! Communications blocking (XEP-0191): the block list commands (get, block, unblock,
//! unblock-all, with pushes) and the presence a block hides (§3.3). Who blocks whom in memory,
//! and the verdict every delivery point asks for, are [`crate::verdict`]'s; this module never
//! routes a stanza itself.

use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::jid::Jid;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{IqType, StanzaCondition};
use crate::verdict::blocklist::Blocklists;
use crate::verdict::{matches, write_unavailable};
use crate::xml::build::Element;
use log::warn;
use roxmltree::Node;
use std::rc::Rc;

use crate::verdict::{allows, gate, StanzaKind, Verdict};

pub const NS: &str = "urn:xmpp:blocking";

pub const FEATURE: Feature = Feature {
    name: "blocking",
    gate: Some(gate),
    admit: Some(|server, from, session| {
        allows(server, from, &session.jid, StanzaKind::Message) == Verdict::Allow
    }),
    state: Some(crate::feature::init::<Blocklists>),
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    server_disco: &[NS],
    user_offline: Some(user_offline),
    ..Feature::NONE
};

/// The user's last session ended: keep nothing of theirs in memory.
pub fn user_offline(server: &Server, user: &str) {
    server.state::<Blocklists>().lists.forget(user);
}

/// A change to the list, as requested and as pushed.
#[derive(Debug, PartialEq)]
enum Change {
    Block(Vec<Jid>),
    Unblock(Vec<Jid>),
    UnblockAll,
}

impl Change {
    /// The `<block/>` or `<unblock/>` element of a push (§3.3–3.5).
    fn write(&self, out: &mut String) {
        match self {
            Change::Block(jids) => write_list(out, "block", jids),
            Change::Unblock(jids) => write_list(out, "unblock", jids),
            Change::UnblockAll => write_list(out, "unblock", &[]),
        }
    }
}

/// A `urn:xmpp:blocking` request, checked (§3.2–3.5).
#[derive(Debug, PartialEq)]
enum Request {
    /// §3.2: a get of `<blocklist/>`.
    List,
    /// A set of `<block/>` or `<unblock/>`.
    Change(Change),
}

impl Request {
    /// A get carries `<blocklist/>`, a set `<block/>` with at least one item (§3.3) or
    /// `<unblock/>` with any number (none: everything, §3.5). Anything else, or an item that
    /// is not `<item jid='…'/>`, is a bad request; an item whose JID does not parse is
    /// `jid-malformed`.
    fn parse(ty: IqType, payload: Node) -> Result<Request, StanzaCondition> {
        let change = match (ty, payload.tag_name().name()) {
            (IqType::Get, "blocklist") => return Ok(Request::List),
            (IqType::Set, "block") => match items(payload)? {
                jids if jids.is_empty() => return Err(StanzaCondition::BadRequest),
                jids => Change::Block(jids),
            },
            (IqType::Set, "unblock") => match items(payload)? {
                jids if jids.is_empty() => Change::UnblockAll,
                jids => Change::Unblock(jids),
            },
            _ => return Err(StanzaCondition::BadRequest),
        };
        Ok(Request::Change(change))
    }
}

/// The `<item jid='…'/>` children of `<block/>` or `<unblock/>`.
fn items(payload: Node) -> Result<Vec<Jid>, StanzaCondition> {
    payload
        .children()
        .filter(Node::is_element)
        .map(|item| {
            if !item.has_tag_name((NS, "item")) {
                return Err(StanzaCondition::BadRequest);
            }
            let jid = item.attribute("jid").ok_or(StanzaCondition::BadRequest)?;
            Jid::parse(jid).map_err(|_| StanzaCondition::JidMalformed)
        })
        .collect()
}

/// The `urn:xmpp:blocking` iq requests of a user about their own list.
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let (server, user) = (iq.server, iq.user());
    let Some(reply) = iq.own_reply(StanzaCondition::ServiceUnavailable, out) else {
        return Deferred::None;
    };
    let change = match Request::parse(iq.ty, iq.payload) {
        Err(condition) => {
            reply.fail(out, condition);
            return Deferred::None;
        }
        Ok(Request::List) => {
            match server.state::<Blocklists>().list(server, user) {
                Ok(list) => {
                    let mut payload = String::new();
                    write_list(&mut payload, "blocklist", &list);
                    reply.result_with(out, &payload);
                }
                Err(e) => {
                    warn!("{user}: cannot read the block list: {e}");
                    reply.fail(out, StanzaCondition::ResourceConstraint);
                }
            }
            return Deferred::None;
        }
        Ok(Request::Change(change)) => change,
    };
    let server = server.clone();
    let user = user.to_owned();
    Deferred::Reply(Box::pin(async move {
        let strings = |jids: &[Jid]| jids.iter().map(|j| j.as_str().to_owned()).collect();
        let result = match &change {
            Change::Block(jids) => server.store.block(&user, strings(jids)).await,
            Change::Unblock(jids) => server.store.unblock(&user, Some(strings(jids))).await,
            Change::UnblockAll => server.store.unblock(&user, None).await,
        };
        let stored = result.is_ok();
        let out = reply.after_write(result, "block list");
        if stored {
            server.state::<Blocklists>().changed(&user);
            push(&server, &user, &change);
            if let Change::Block(jids) = &change {
                hide_from(&server, &user, jids);
            }
        }
        out
    }))
}

/// `<name xmlns='urn:xmpp:blocking'>` holding an `<item jid='…'/>` per JID: the block list
/// (§3.2) and the pushes (§3.3–3.5).
fn write_list(out: &mut String, name: &str, jids: &[Jid]) {
    let list = Element::new(name).ns(NS);
    if jids.is_empty() {
        list.empty(out);
        return;
    }
    list.children(out, |out| {
        for jid in jids {
            Element::new("item").attr("jid", jid.as_str()).empty(out);
        }
    });
}

/// A push of `change` to one resource.
fn write_push(out: &mut String, id: &str, to: &Jid, change: &Change) {
    Element::new("iq")
        .attr("type", "set")
        .attr("id", id)
        .attr("to", to.as_str())
        .children(out, |out| change.write(out));
}

/// §3.3–3.5: every resource of the user learns of the change. (Only resources that fetched
/// the list are "interested"; until sessions track that, all bound resources get it.)
fn push(server: &Server, user: &str, change: &Change) {
    let sessions = server.router.borrow().resources(user).to_vec();
    for session in sessions {
        let mut xml = String::new();
        let id = format!("block-{}", server.random_id());
        write_push(&mut xml, &id, &session.jid, change);
        server.deliver(&session, xml.into(), false);
    }
}

/// §3.3: a newly blocked contact stops seeing the user as available: sessions here, and
/// subscribers on other servers (through their server).
fn hide_from(server: &Server, user: &str, blocked: &[Jid]) {
    let router = server.router.borrow();
    let mine: Vec<&Rc<Session>> = router
        .resources(user)
        .iter()
        .filter(|s| s.available.get())
        .collect();
    if mine.is_empty() {
        return;
    }
    let contacts = router.all().filter(|s| {
        s.jid.local() != Some(user)
            && s.available.get()
            && blocked.iter().any(|item| matches(item, &s.jid))
    });
    for contact in contacts {
        for own in &mine {
            let mut xml = String::new();
            write_unavailable(&mut xml, &own.jid, &contact.jid);
            server.deliver(contact, xml.into(), false);
        }
    }
    // Subscribers on other servers: their server hands it to their resources.
    let elsewhere = crate::audience::contacts_everywhere(server, user, |item| item.from).remote;
    for contact in elsewhere
        .iter()
        .filter(|c| blocked.iter().any(|item| matches(item, c)))
    {
        for own in &mine {
            let mut xml = String::new();
            write_unavailable(&mut xml, &own.jid, contact);
            server.send_remote(contact, xml.into(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn parse(ty: IqType, payload: &str) -> Result<Request, StanzaCondition> {
        let doc = roxmltree::Document::parse(payload).unwrap();
        Request::parse(ty, doc.root_element())
    }

    fn xml(write: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        write(&mut out);
        out
    }

    /// The `jid` attributes of the `<item/>` children of `node`.
    fn item_jids<'a>(node: roxmltree::Node<'a, '_>) -> Vec<&'a str> {
        node.children()
            .filter(|c| c.has_tag_name((NS, "item")))
            .filter_map(|c| c.attribute("jid"))
            .collect()
    }

    #[test]
    fn get_blocklist_is_the_list_request() {
        let got = parse(IqType::Get, "<blocklist xmlns='urn:xmpp:blocking'/>");
        assert_eq!(got, Ok(Request::List));
    }

    #[test]
    fn block_with_items_blocks_them() {
        let got = parse(
            IqType::Set,
            "<block xmlns='urn:xmpp:blocking'><item jid='a@h'/><item jid='h/r'/></block>",
        );
        assert_eq!(
            got,
            Ok(Request::Change(Change::Block(vec![jid("a@h"), jid("h/r")])))
        );
    }

    #[test]
    fn unblock_with_items_unblocks_them() {
        let got = parse(
            IqType::Set,
            "<unblock xmlns='urn:xmpp:blocking'><item jid='a@h/r'/></unblock>",
        );
        assert_eq!(
            got,
            Ok(Request::Change(Change::Unblock(vec![jid("a@h/r")])))
        );
    }

    #[test]
    fn unblock_without_items_unblocks_all() {
        let got = parse(IqType::Set, "<unblock xmlns='urn:xmpp:blocking'/>");
        assert_eq!(got, Ok(Request::Change(Change::UnblockAll)));
    }

    #[test]
    fn block_without_items_is_bad_request_xep_0191_s3_3() {
        let got = parse(IqType::Set, "<block xmlns='urn:xmpp:blocking'/>");
        assert_eq!(got, Err(StanzaCondition::BadRequest));
    }

    #[test]
    fn item_that_is_not_an_item_with_a_jid_is_bad_request() {
        for payload in [
            "<block xmlns='urn:xmpp:blocking'><other jid='a@h'/></block>",
            "<block xmlns='urn:xmpp:blocking'><item xmlns='urn:x' jid='a@h'/></block>",
            "<unblock xmlns='urn:xmpp:blocking'><item/></unblock>",
        ] {
            assert_eq!(
                parse(IqType::Set, payload),
                Err(StanzaCondition::BadRequest),
                "{payload}"
            );
        }
    }

    #[test]
    fn item_with_a_malformed_jid_is_jid_malformed() {
        let got = parse(
            IqType::Set,
            "<block xmlns='urn:xmpp:blocking'><item jid='a@h'/><item jid='@h'/></block>",
        );
        assert_eq!(got, Err(StanzaCondition::JidMalformed));
    }

    #[test]
    fn wrong_element_for_the_iq_type_is_bad_request() {
        for (ty, payload) in [
            (
                IqType::Get,
                "<block xmlns='urn:xmpp:blocking'><item jid='a@h'/></block>",
            ),
            (IqType::Get, "<unblock xmlns='urn:xmpp:blocking'/>"),
            (IqType::Set, "<blocklist xmlns='urn:xmpp:blocking'/>"),
            (IqType::Set, "<other xmlns='urn:xmpp:blocking'/>"),
        ] {
            assert_eq!(
                parse(ty, payload),
                Err(StanzaCondition::BadRequest),
                "{payload}"
            );
        }
    }

    #[test]
    fn blocklist_lists_every_jid() {
        let out = xml(|out| write_list(out, "blocklist", &[jid("a@h"), jid("x@h/a&b'")]));
        let doc = roxmltree::Document::parse(&out).unwrap();
        let list = doc.root_element();
        assert!(list.has_tag_name((NS, "blocklist")));
        assert_eq!(item_jids(list), ["a@h", "x@h/a&b'"]);
        let empty = xml(|out| write_list(out, "blocklist", &[]));
        let doc = roxmltree::Document::parse(&empty).unwrap();
        assert!(doc.root_element().has_tag_name((NS, "blocklist")));
        assert_eq!(doc.root_element().children().count(), 0);
    }

    #[test]
    fn pushes_are_sets_carrying_the_change() {
        let to = jid("u@h/r");
        for (change, name, jids) in [
            (Change::Block(vec![jid("a@h")]), "block", vec!["a@h"]),
            (Change::Unblock(vec![jid("a@h")]), "unblock", vec!["a@h"]),
            (Change::UnblockAll, "unblock", vec![]),
        ] {
            let out = xml(|out| write_push(out, "block-1", &to, &change));
            let doc = roxmltree::Document::parse(&out).unwrap();
            let iq = doc.root_element();
            assert_eq!(iq.tag_name().name(), "iq");
            assert_eq!(iq.attribute("type"), Some("set"));
            assert_eq!(iq.attribute("id"), Some("block-1"));
            assert_eq!(iq.attribute("to"), Some("u@h/r"));
            let payload = iq.first_element_child().unwrap();
            assert!(payload.has_tag_name((NS, name)), "{out}");
            assert_eq!(item_jids(payload), jids, "{out}");
        }
    }
}
