//! The roster (RFC 6121 §2) with versioning (XEP-0237): a user's get, set and remove of
//! their own roster, and roster pushes to the user's interested resources (those that asked
//! for the roster). Only the user may touch their roster; subscription states change only
//! through [`crate::subscription`], never through a roster set.

use crate::feature::Deferred;
use crate::feature::{Feature, StreamStage};
use crate::iq::Iq;
use crate::iq::IqTarget;
use crate::jid::Jid;
use crate::route::reply_error;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, Kind, Stanza, StanzaCondition, StanzaError};
use crate::store::{RosterItem, RosterTxn, StoreError, Stored};
use crate::subscription::{self, Change, Outcome};
use crate::xml::build::Element;
use crate::xml::Esc;
use log::warn;
use roxmltree::Node;
use std::fmt::Write;
use std::rc::Rc;

pub const NS: &str = "jabber:iq:roster";
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

/// One `<item/>` as RFC 6121 §2.1.2 describes it.
fn write_item(out: &mut String, stored: &Stored) {
    let item = &stored.item;
    let _ = write!(out, "<item jid='{}'", Esc(&item.jid));
    if stored.removed {
        out.push_str(" subscription='remove'/>");
        return;
    }
    if let Some(name) = &item.name {
        let _ = write!(out, " name='{}'", Esc(name));
    }
    let subscription = match (item.to, item.from) {
        (false, false) => "none",
        (true, false) => "to",
        (false, true) => "from",
        (true, true) => "both",
    };
    let _ = write!(out, " subscription='{subscription}'");
    if item.ask {
        out.push_str(" ask='subscribe'");
    }
    if item.approved {
        out.push_str(" approved='true'");
    }
    if item.groups.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for group in &item.groups {
        let _ = write!(out, "<group>{}</group>", Esc(group));
    }
    out.push_str("</item>");
}

fn write_push(out: &mut String, server: &Server, to: &Jid, stored: &Stored) {
    let _ = write!(
        out,
        "<iq type='set' id='push{}' to='{}'><query xmlns='{NS}' ver='{}'>",
        server.next_id(),
        Esc(to.as_str()),
        stored.ver
    );
    write_item(out, stored);
    out.push_str("</query></iq>");
}

/// A roster push (RFC 6121 §2.1.6) to every interested resource of `user`.
pub fn push(server: &Server, user: &str, stored: &Stored) {
    let router = server.router.borrow();
    for session in router.resources(user).iter().filter(|s| s.interested.get()) {
        let mut xml = String::new();
        write_push(&mut xml, server, &session.jid, stored);
        server.deliver(session, xml.into(), false);
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
    match iq.ty {
        IqType::Get => {
            get(server, session, stanza, query, out);
            Deferred::None
        }
        IqType::Set => match parse_set(query) {
            Ok(request) => set(server, session, stanza, request),
            Err(condition) => {
                reply.fail(out, condition);
                Deferred::None
            }
        },
        IqType::Result | IqType::Error => Deferred::None,
    }
}

/// RFC 6121 §2.2 with XEP-0237: a known version gets the changes since as pushes (or
/// nothing), anything else the whole roster.
fn get(server: &Server, session: &Session, stanza: &Stanza, query: Node, out: &mut String) {
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
    let client_ver = query.attribute("ver");
    let known = client_ver
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| (roster.floor..=roster.ver).contains(&v));
    if let Some(known) = known {
        stanza::write_iq_result(out, stanza.id, "", session.jid.as_str());
        let mut changes: Vec<&Stored> = roster.items.iter().filter(|s| s.ver > known).collect();
        changes.sort_by_key(|s| s.ver);
        for stored in changes {
            write_push(out, server, &session.jid, stored);
        }
        return;
    }
    stanza::open_reply(out, Kind::Iq, "result", stanza.id, "", session.jid.as_str());
    let _ = write!(out, "><query xmlns='{NS}'");
    if client_ver.is_some() {
        let _ = write!(out, " ver='{}'", roster.ver);
    }
    out.push('>');
    for stored in roster.items.iter().filter(|s| !s.removed) {
        write_item(out, stored);
    }
    out.push_str("</query></iq>");
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
            let contact = Jid::parse(&jid)
                .ok()
                .filter(|j| j.domain() == domain)
                .and_then(|j| j.local().map(str::to_owned));
            let contact_exists = contact
                .as_deref()
                .is_some_and(|c| crate::route::account_exists(server, c));
            Box::new(move |txn| {
                remove(
                    txn,
                    &user,
                    &jid,
                    contact.as_deref(),
                    contact_exists,
                    &domain,
                )
            })
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
    contact: Option<&str>,
    contact_exists: bool,
    domain: &str,
) -> Result<SetResult, StoreError> {
    let Some(item) = txn.item(user, jid)? else {
        return Ok(Err(StanzaCondition::ItemNotFound));
    };
    let mut outcome = Outcome::default();
    let user_jid = format!("{user}@{domain}");
    if let Some(contact) = contact {
        let cancel = |kind, ty| Change {
            kind,
            sender: user.to_owned(),
            target: contact.to_owned(),
            domain: domain.to_owned(),
            xml: subscription::stanza(ty, &user_jid, jid),
            target_exists: contact_exists,
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

    fn parse(items: &str) -> Result<SetRequest, StanzaCondition> {
        let xml = format!("<query xmlns='{NS}'>{items}</query>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        parse_set(doc.root_element())
    }

    #[test]
    fn set_requests_are_checked() {
        assert_eq!(
            parse("<item jid='b@h' name='B'><group>x</group><group>y</group></item>"),
            Ok(SetRequest::Update {
                jid: "b@h".into(),
                name: Some("B".into()),
                groups: vec!["x".into(), "y".into()],
            })
        );
        assert_eq!(
            parse("<item jid='b@h' subscription='remove'/>"),
            Ok(SetRequest::Remove { jid: "b@h".into() })
        );
        assert_eq!(
            parse("<item jid='b@h' subscription='both'/>"),
            Ok(SetRequest::Update {
                jid: "b@h".into(),
                name: None,
                groups: vec![],
            })
        );
        for bad in [
            "",
            "<item jid='b@h'/><item jid='c@h'/>",
            "<item jid='b@@h'/>",
            "<item jid='b@h/r'/>",
            "<item/>",
            "<item jid='b@h'><group>x</group><group>x</group></item>",
            "<other jid='b@h'/>",
        ] {
            assert_eq!(parse(bad), Err(StanzaCondition::BadRequest), "{bad}");
        }
        let long = "n".repeat(MAX_TEXT + 1);
        assert_eq!(
            parse(&format!("<item jid='b@h' name='{long}'/>")),
            Err(StanzaCondition::NotAcceptable)
        );
        assert_eq!(
            parse("<item jid='b@h'><group></group></item>"),
            Err(StanzaCondition::NotAcceptable)
        );
    }

    #[test]
    fn items_are_written_as_rfc_6121_shows() {
        let mut out = String::new();
        let stored = Stored {
            item: RosterItem {
                jid: "b@h".into(),
                name: Some("B'".into()),
                groups: vec!["G".into()],
                to: true,
                ..RosterItem::default()
            },
            ver: 3,
            removed: false,
        };
        write_item(&mut out, &stored);
        assert_eq!(
            out,
            "<item jid='b@h' name='B&apos;' subscription='to'><group>G</group></item>"
        );
        out.clear();
        write_item(
            &mut out,
            &Stored {
                removed: true,
                ..stored
            },
        );
        assert_eq!(out, "<item jid='b@h' subscription='remove'/>");
    }
}
