//! The roster (RFC 6121 §2) with versioning (XEP-0237): a user's get, set and remove of
//! their own roster, each change pushed to the user's interested resources
//! ([`crate::roster_push`]). Only the user may touch their roster; subscription states change only
//! through [`crate::subscription`], never through a roster set.

use crate::feature::Deferred;
use crate::feature::{Feature, StreamStage};
use crate::iq::Iq;
use crate::iq::IqTarget;
use crate::jid::Jid;
use crate::roster_push::{push_id, write_item, write_push};
use crate::route::reply_error;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, Kind, Stanza, StanzaCondition, StanzaError};
use crate::store::{RosterItem, RosterTxn, StoreError, Stored};
use crate::subscription::{self, Change, End, Outcome};
use crate::xml::build::Element;
use log::warn;
use roxmltree::Node;
use std::rc::Rc;

pub use crate::roster_push::NS;
pub const NS_VERSIONING: &str = "urn:xmpp:features:rosterver";

/// Longest item name or group name accepted, in bytes (RFC 6121 §2.1.2.4, §2.1.2.5).
const MAX_TEXT: usize = 1023;

pub const FEATURE: Feature = Feature {
    name: "roster",
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    stream_features: Some(|_, stage, out| {
        if stage == StreamStage::Authenticated {
            Element::new("ver").ns(NS_VERSIONING).empty(out);
        }
    }),
    ..Feature::NONE
};

/// RFC 6121 §2.1.4: the result of a get with the whole roster, and its version when the
/// client versions its roster (XEP-0237).
fn write_roster<'s>(
    out: &mut String,
    id: Option<&str>,
    to: &Jid,
    ver: Option<u64>,
    items: impl Iterator<Item = &'s Stored>,
) {
    let ver = ver.map(|ver| ver.to_string());
    Element::new("iq")
        .attr("type", "result")
        .attr_opt("id", id)
        .attr("to", to.as_str())
        .children(out, |out| {
            Element::new("query")
                .ns(NS)
                .attr_opt("ver", ver.as_deref())
                .children(out, |out| items.for_each(|stored| write_item(out, stored)));
        });
}

/// A roster request, checked.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// RFC 6121 §2.1.3.
    Get {
        /// XEP-0237: the client sent `ver` (it keeps a copy of the roster) …
        versioned: bool,
        /// … and this version, when it is one hearth could have given.
        known: Option<u64>,
    },
    /// RFC 6121 §2.1.5.
    Set(SetRequest),
}

impl Request {
    /// The `<query/>` of a get (any `ver`) or a set ([`parse_set`]).
    fn parse(ty: IqType, query: Node) -> Result<Request, StanzaCondition> {
        match ty {
            IqType::Get => {
                let ver = query.attribute("ver");
                Ok(Request::Get {
                    versioned: ver.is_some(),
                    known: ver.and_then(|v| v.parse().ok()),
                })
            }
            IqType::Set => parse_set(query).map(Request::Set),
            // Not requests: dispatch answers neither to a feature.
            IqType::Result | IqType::Error => Err(StanzaCondition::BadRequest),
        }
    }
}

pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let (server, session, stanza) = (iq.server, iq.session, iq.stanza);
    // RFC 6121 §2.1.5: only the user's own server-side roster, addressed to no one or to
    // the user's bare JID.
    let own = match iq.target {
        IqTarget::Server => stanza.to.is_none(),
        IqTarget::Account(local) => local == iq.user(),
    };
    let reply = iq.reply();
    let Some(query) = iq.payload_named("query", &reply, out) else {
        return Deferred::None;
    };
    if !own {
        reply.fail(out, StanzaCondition::Forbidden);
        return Deferred::None;
    }
    match Request::parse(iq.ty, query) {
        Ok(Request::Get { versioned, known }) => {
            get(server, session, stanza, versioned, known, out);
            Deferred::None
        }
        Ok(Request::Set(request)) => set(server, session, stanza, request),
        Err(condition) => {
            reply.fail(out, condition);
            Deferred::None
        }
    }
}

/// RFC 6121 §2.2 with XEP-0237: a known version gets the changes since as pushes (or
/// nothing), anything else the whole roster.
fn get(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    versioned: bool,
    known: Option<u64>,
    out: &mut String,
) {
    session.interested.set(true);
    let user = session.jid.user();
    let roster = match server.store.roster(user) {
        Ok(roster) => roster,
        Err(e) => {
            warn!("{user}: cannot read roster: {e}");
            reply_error(
                server,
                session,
                stanza,
                StanzaCondition::ResourceConstraint,
                out,
            );
            return;
        }
    };
    if let Some(known) = known.filter(|v| (roster.floor..=roster.ver).contains(v)) {
        stanza::write_iq_result(out, stanza.id, "", session.jid.as_str());
        let mut changes: Vec<&Stored> = roster.items.iter().filter(|s| s.ver > known).collect();
        changes.sort_by_key(|s| s.ver);
        for stored in changes {
            write_push(out, &push_id(server), &session.jid, stored);
        }
        return;
    }
    write_roster(
        out,
        stanza.id,
        &session.jid,
        versioned.then_some(roster.ver),
        roster.items.iter().filter(|s| !s.removed),
    );
}

/// A checked roster set.
#[derive(Debug, PartialEq, Eq)]
enum SetRequest {
    Update {
        jid: String,
        name: Option<String>,
        groups: Vec<String>,
    },
    Remove {
        jid: String,
    },
}

/// RFC 6121 §2.3.3 / §2.1.2: exactly one item with a bare JID, non-empty distinct groups.
/// A `subscription` other than `remove` is ignored (§2.1.5): only presence changes it.
fn parse_set(query: Node) -> Result<SetRequest, StanzaCondition> {
    let mut children = query.children().filter(Node::is_element);
    let (Some(item), None) = (children.next(), children.next()) else {
        return Err(StanzaCondition::BadRequest);
    };
    if !item.has_tag_name((NS, "item")) {
        return Err(StanzaCondition::BadRequest);
    }
    let jid = item
        .attribute("jid")
        .and_then(|j| Jid::parse(j).ok())
        .filter(|j| j.resource().is_none())
        .ok_or(StanzaCondition::BadRequest)?;
    let jid = jid.as_str().to_owned();
    if item.attribute("subscription") == Some("remove") {
        return Ok(SetRequest::Remove { jid });
    }
    let name = item.attribute("name").filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > MAX_TEXT) {
        return Err(StanzaCondition::NotAcceptable);
    }
    let mut groups: Vec<String> = Vec::new();
    for group in item.children().filter(|c| c.has_tag_name((NS, "group"))) {
        let text = group.text().unwrap_or_default();
        // §2.3.3: a duplicate group is a bad request, an empty one not acceptable.
        if groups.iter().any(|g| g == text) {
            return Err(StanzaCondition::BadRequest);
        }
        if text.is_empty() || text.len() > MAX_TEXT {
            return Err(StanzaCondition::NotAcceptable);
        }
        groups.push(text.to_owned());
    }
    Ok(SetRequest::Update {
        jid,
        name: name.map(str::to_owned),
        groups,
    })
}

/// The store op of a roster set: the outcome, or the error the user gets.
type SetResult = Result<Outcome, StanzaCondition>;
type SetOp = Box<dyn Fn(&RosterTxn) -> Result<SetResult, StoreError> + Send>;

fn set(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    request: SetRequest,
) -> Deferred {
    let user = session.jid.user().to_owned();
    let domain = server.config().domain.clone();
    let max_items = server.config().roster.max_items as usize;
    let op: SetOp = match request {
        SetRequest::Update { jid, name, groups } => Box::new(move |txn| {
            let mut item = match txn.item(&user, &jid)? {
                Some(item) => item,
                None if txn.count(&user)? >= max_items => {
                    return Ok(Err(StanzaCondition::NotAllowed))
                }
                None => RosterItem {
                    jid: jid.clone(),
                    ..RosterItem::default()
                },
            };
            item.name = name.clone();
            item.groups = groups.clone();
            let stored = txn.put(&user, &item)?;
            Ok(Ok(Outcome {
                pushes: vec![(user.clone(), stored)],
                ..Outcome::default()
            }))
        }),
        SetRequest::Remove { jid } => {
            // A contact here or on another server (the cancellations then cross over s2s).
            let contact = Jid::parse(&jid)
                .ok()
                .filter(|j| j.local().is_some())
                .map_or(End::Nobody, |j| End::of(server, &j));
            Box::new(move |txn| remove(txn, &user, &jid, &contact, &domain))
        }
    };
    let id = stanza.id.map(str::to_owned);
    let to = session.jid.clone();
    let server = server.clone();
    Deferred::Reply(Box::pin(async move {
        let result = server.store.roster_update(op).await;
        let mut reply = String::new();
        let condition = match result {
            Ok(Ok(outcome)) => {
                stanza::write_iq_result(&mut reply, id.as_deref(), "", to.as_str());
                subscription::carry_out(&server, outcome);
                return reply;
            }
            Ok(Err(condition)) => condition,
            Err(e) => {
                warn!("{to}: roster change not stored: {e}");
                StanzaCondition::ResourceConstraint
            }
        };
        stanza::write_error_reply(
            &mut reply,
            Kind::Iq,
            id.as_deref(),
            "",
            to.as_str(),
            &StanzaError::new(condition),
        );
        reply
    }))
}

/// RFC 6121 §2.5.2: removing an item cancels the subscriptions both ways (as `unsubscribe`
/// and `unsubscribed` would), then the item goes; the user sees only the removal.
fn remove(
    txn: &RosterTxn,
    user: &str,
    jid: &str,
    contact: &End,
    domain: &str,
) -> Result<SetResult, StoreError> {
    let Some(item) = txn.item(user, jid)? else {
        return Ok(Err(StanzaCondition::ItemNotFound));
    };
    let mut outcome = Outcome::default();
    let user_jid = format!("{user}@{domain}");
    if *contact != End::Nobody {
        let cancel = |kind, ty| Change {
            kind,
            from: user_jid.clone(),
            to: jid.to_owned(),
            sender: End::Account(user.to_owned()),
            target: contact.clone(),
            xml: subscription::stanza(ty, &user_jid, jid),
            max_items: usize::MAX,
        };
        use crate::stanza::PresenceType::{Unsubscribe, Unsubscribed};
        if item.to || item.ask {
            let step = cancel(Unsubscribe, "unsubscribe").apply(txn)?;
            outcome.pushes.extend(step.pushes);
            outcome.deliveries.extend(step.deliveries);
        }
        if item.from || txn.pending(user, jid)? {
            let step = cancel(Unsubscribed, "unsubscribed").apply(txn)?;
            outcome.pushes.extend(step.pushes);
            outcome.deliveries.extend(step.deliveries);
        }
    }
    txn.clear_pending(user, jid)?;
    let tombstone = txn.remove(user, jid)?;
    outcome
        .pushes
        .retain(|(owner, stored)| !(owner == user && stored.item.jid == jid));
    outcome.pushes.push((user.to_owned(), tombstone));
    Ok(Ok(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ty: IqType, query: &str) -> Result<Request, StanzaCondition> {
        let doc = roxmltree::Document::parse(query).unwrap();
        Request::parse(ty, doc.root_element())
    }

    fn set(items: &str) -> Result<Request, StanzaCondition> {
        parse(IqType::Set, &format!("<query xmlns='{NS}'>{items}</query>"))
    }

    fn update(jid: &str, name: Option<&str>, groups: &[&str]) -> Result<Request, StanzaCondition> {
        Ok(Request::Set(SetRequest::Update {
            jid: jid.into(),
            name: name.map(str::to_owned),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }))
    }

    fn stored(removed: bool) -> Stored {
        Stored {
            item: RosterItem {
                jid: "b@h".into(),
                name: Some("B'<".into()),
                groups: vec!["G&".into(), "H".into()],
                to: true,
                ask: true,
                ..RosterItem::default()
            },
            ver: 3,
            removed,
        }
    }

    /// The attributes of `node`, in order.
    fn attributes<'a>(node: roxmltree::Node<'a, '_>) -> Vec<(&'a str, &'a str)> {
        node.attributes().map(|a| (a.name(), a.value())).collect()
    }

    #[test]
    fn get_without_ver_is_unversioned() {
        assert_eq!(
            parse(IqType::Get, "<query xmlns='jabber:iq:roster'/>"),
            Ok(Request::Get {
                versioned: false,
                known: None
            })
        );
    }

    #[test]
    fn get_with_a_numeric_ver_names_it_xep_0237() {
        assert_eq!(
            parse(IqType::Get, "<query xmlns='jabber:iq:roster' ver='12'/>"),
            Ok(Request::Get {
                versioned: true,
                known: Some(12)
            })
        );
    }

    #[test]
    fn get_with_an_empty_or_foreign_ver_is_versioned_but_unknown() {
        for ver in ["", "abc", "-1"] {
            assert_eq!(
                parse(
                    IqType::Get,
                    &format!("<query xmlns='jabber:iq:roster' ver='{ver}'/>")
                ),
                Ok(Request::Get {
                    versioned: true,
                    known: None
                }),
                "{ver:?}"
            );
        }
    }

    #[test]
    fn set_with_name_and_groups_updates() {
        assert_eq!(
            set("<item jid='b@h' name='B'><group>x</group><group>y</group></item>"),
            update("b@h", Some("B"), &["x", "y"])
        );
    }

    #[test]
    fn set_with_subscription_remove_removes_rfc_6121_s2_5() {
        assert_eq!(
            set("<item jid='b@h' subscription='remove'/>"),
            Ok(Request::Set(SetRequest::Remove { jid: "b@h".into() }))
        );
    }

    #[test]
    fn set_ignores_other_subscriptions_rfc_6121_s2_1_5() {
        assert_eq!(
            set("<item jid='b@h' subscription='both'/>"),
            update("b@h", None, &[])
        );
    }

    #[test]
    fn set_with_an_empty_name_has_no_name() {
        assert_eq!(set("<item jid='b@h' name=''/>"), update("b@h", None, &[]));
    }

    #[test]
    fn set_without_exactly_one_item_is_bad_request_rfc_6121_s2_3_3() {
        for items in [
            "",
            "<item jid='b@h'/><item jid='c@h'/>",
            "<other jid='b@h'/>",
        ] {
            assert_eq!(set(items), Err(StanzaCondition::BadRequest), "{items}");
        }
    }

    #[test]
    fn set_without_a_bare_jid_is_bad_request_rfc_6121_s2_1_2_1() {
        for items in ["<item/>", "<item jid='b@@h'/>", "<item jid='b@h/r'/>"] {
            assert_eq!(set(items), Err(StanzaCondition::BadRequest), "{items}");
        }
    }

    #[test]
    fn set_with_a_duplicate_group_is_bad_request_rfc_6121_s2_3_3() {
        assert_eq!(
            set("<item jid='b@h'><group>x</group><group>x</group></item>"),
            Err(StanzaCondition::BadRequest)
        );
    }

    #[test]
    fn set_with_an_empty_group_is_not_acceptable_rfc_6121_s2_3_3() {
        assert_eq!(
            set("<item jid='b@h'><group></group></item>"),
            Err(StanzaCondition::NotAcceptable)
        );
    }

    #[test]
    fn set_with_an_overlong_name_or_group_is_not_acceptable_rfc_6121_s2_1_2() {
        let long = "n".repeat(MAX_TEXT + 1);
        assert_eq!(
            set(&format!("<item jid='b@h' name='{long}'/>")),
            Err(StanzaCondition::NotAcceptable)
        );
        assert_eq!(
            set(&format!("<item jid='b@h'><group>{long}</group></item>")),
            Err(StanzaCondition::NotAcceptable)
        );
    }

    #[test]
    fn items_are_written_as_rfc_6121_shows() {
        let mut out = String::new();
        write_item(&mut out, &stored(false));
        let doc = roxmltree::Document::parse(&out).unwrap();
        let item = doc.root_element();
        assert_eq!(
            attributes(item),
            [
                ("jid", "b@h"),
                ("name", "B'<"),
                ("subscription", "to"),
                ("ask", "subscribe")
            ]
        );
        let groups: Vec<_> = item
            .children()
            .filter(|c| c.has_tag_name("group"))
            .map(|c| c.text())
            .collect();
        assert_eq!(groups, [Some("G&"), Some("H")]);
    }

    #[test]
    fn removed_items_are_written_as_subscription_remove() {
        let mut out = String::new();
        write_item(&mut out, &stored(true));
        let doc = roxmltree::Document::parse(&out).unwrap();
        let item = doc.root_element();
        assert_eq!(
            attributes(item),
            [("jid", "b@h"), ("subscription", "remove")]
        );
        assert_eq!(item.children().count(), 0);
    }

    #[test]
    fn pushes_are_sets_with_the_item_and_its_version_rfc_6121_s2_1_6() {
        let mut out = String::new();
        write_push(
            &mut out,
            "push7",
            &Jid::parse("u@h/r").unwrap(),
            &stored(false),
        );
        let doc = roxmltree::Document::parse(&out).unwrap();
        let iq = doc.root_element();
        assert_eq!(
            attributes(iq),
            [("type", "set"), ("id", "push7"), ("to", "u@h/r")]
        );
        let query = iq.first_element_child().unwrap();
        assert!(query.has_tag_name((NS, "query")));
        assert_eq!(query.attribute("ver"), Some("3"));
        let items: Vec<_> = query.children().filter(|c| c.is_element()).collect();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].attribute("jid"), Some("b@h"));
    }

    #[test]
    fn roster_result_lists_the_items_with_the_version_when_asked() {
        let to = Jid::parse("u@h/r").unwrap();
        let items = [stored(false)];
        for ver in [Some(9), None] {
            let mut out = String::new();
            write_roster(&mut out, Some("r1"), &to, ver, items.iter());
            let doc = roxmltree::Document::parse(&out).unwrap();
            let iq = doc.root_element();
            assert_eq!(
                attributes(iq),
                [("type", "result"), ("id", "r1"), ("to", "u@h/r")]
            );
            let query = iq.first_element_child().unwrap();
            assert!(query.has_tag_name((NS, "query")));
            assert_eq!(
                query.attribute("ver"),
                ver.map(|v| v.to_string()).as_deref()
            );
            let jids: Vec<_> = query
                .children()
                .filter(|c| c.has_tag_name((NS, "item")))
                .filter_map(|c| c.attribute("jid"))
                .collect();
            assert_eq!(jids, ["b@h"]);
        }
    }
}
