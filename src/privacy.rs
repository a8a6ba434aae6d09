//! Privacy lists (XEP-0016): the `jabber:iq:privacy` commands (list names, get, edit, remove,
//! active list per session, default list per user, with list pushes), and the presence a list
//! change hides (§2.10, §2.11). The lists in memory and their part of the verdict every
//! delivery point asks for are [`crate::verdict::privacy_lists`]'s; this module never routes
//! a stanza itself.

use crate::audience;
use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::jid::Jid;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{IqType, StanzaCondition};
use crate::verdict::privacy_lists::{parse_items, write_items, Item, Privacy, Rule, UserLists};
use crate::verdict::{self, Verdict};
use crate::xml::build::Element;
use log::warn;
use roxmltree::Node;
use std::rc::Rc;

pub use crate::verdict::privacy_lists::NS;
use crate::verdict::StanzaKind;

/// Lists one user may keep, and items one list may hold: the lists live in memory while the
/// user is online, so their size is bounded (`<policy-violation/>` past it).
const MAX_LISTS: usize = 16;
const MAX_ITEMS: usize = 128;

pub const FEATURE: Feature = Feature {
    name: "privacy",
    state: Some(crate::feature::init::<Privacy>),
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    server_disco: &[NS],
    session_ended: Some(|server, session| {
        session_ended(server, session);
        None
    }),
    ..Feature::NONE
};

/// The session ended: its active list goes, and with the user's last session their lists
/// leave memory.
pub fn session_ended(server: &Server, session: &Session) {
    server
        .state::<Privacy>()
        .active
        .borrow_mut()
        .remove(&session.id);
    let user = session.jid.user();
    if server.router.borrow().resources(user).is_empty() {
        server.state::<Privacy>().lists.forget(user);
    }
}

/// What a `set` changes in the store.
enum Change {
    Default(Option<String>),
    Replace(String, String),
    Remove(String),
}

/// A `jabber:iq:privacy` request, checked.
#[derive(Debug, PartialEq)]
enum Request<'a> {
    /// §2.3: the names of the lists (a get of an empty `<query/>`).
    Names,
    /// §2.3: the items of one list.
    List(&'a str),
    /// §2.4: the session's active list; `None` declines any.
    Active(Option<&'a str>),
    /// §2.5: the user's default list; `None` declines any.
    Default(Option<&'a str>),
    /// §2.6–2.8: a list's new items, sorted by order; none removes the list.
    Edit { name: &'a str, items: Vec<Item> },
}

impl<'a> Request<'a> {
    /// The payload is a `<query/>` holding nothing (a get of the names) or exactly one
    /// element (§2.3: a get asks for one list; §2.4–2.6: a set changes one thing); a get
    /// names the `<list/>` it wants, a set of a `<list/>` names it and carries valid items
    /// ([`parse_items`]). Anything else is a bad request.
    fn parse(ty: IqType, query: Node<'a, '_>) -> Result<Self, StanzaCondition> {
        if query.tag_name().name() != "query" {
            return Err(StanzaCondition::BadRequest);
        }
        let children: Vec<Node> = query.children().filter(Node::is_element).collect();
        let child = match children.as_slice() {
            [] if ty == IqType::Get => return Ok(Request::Names),
            [child] if child.tag_name().namespace() == Some(NS) => *child,
            _ => return Err(StanzaCondition::BadRequest),
        };
        match (ty, child.tag_name().name(), child.attribute("name")) {
            (IqType::Get, "list", Some(name)) => Ok(Request::List(name)),
            (IqType::Set, "active", name) => Ok(Request::Active(name)),
            (IqType::Set, "default", name) => Ok(Request::Default(name)),
            (IqType::Set, "list", Some(name)) if !name.is_empty() => Ok(Request::Edit {
                name,
                items: parse_items(child)?,
            }),
            _ => Err(StanzaCondition::BadRequest),
        }
    }
}

/// The `jabber:iq:privacy` requests of a user about their own lists.
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let (server, session, user) = (iq.server, iq.session, iq.user());
    let Some(reply) = iq.own_reply(StanzaCondition::ServiceUnavailable, out) else {
        return Deferred::None;
    };
    let request = match Request::parse(iq.ty, iq.payload) {
        Ok(request) => request,
        Err(condition) => {
            reply.fail(out, condition);
            return Deferred::None;
        }
    };
    let lists = match server.state::<Privacy>().user_lists(server, user) {
        Ok(lists) => lists,
        Err(e) => {
            warn!("{user}: cannot read privacy lists: {e}");
            reply.fail(out, StanzaCondition::ResourceConstraint);
            return Deferred::None;
        }
    };
    let exists = |name: &str| lists.get(name).is_some();
    let change = match request {
        Request::Names => {
            let mut payload = String::new();
            let active = server
                .state::<Privacy>()
                .active
                .borrow()
                .get(&session.id)
                .cloned();
            write_names(&mut payload, active.as_deref(), &lists);
            reply.result_with(out, &payload);
            return Deferred::None;
        }
        Request::List(name) => {
            match lists.get(name) {
                Some(items) => {
                    let mut payload = String::new();
                    write_list(&mut payload, name, items);
                    reply.result_with(out, &payload);
                }
                None => reply.fail(out, StanzaCondition::ItemNotFound),
            }
            return Deferred::None;
        }
        // §2.4: the active list is the session's alone, kept in memory only.
        Request::Active(Some(name)) if !exists(name) => {
            reply.fail(out, StanzaCondition::ItemNotFound);
            return Deferred::None;
        }
        Request::Active(name) => {
            let before = hidden(server, user);
            let privacy = server.state::<Privacy>();
            let mut active = privacy.active.borrow_mut();
            match name {
                Some(name) => active.insert(session.id, name.into()),
                None => active.remove(&session.id),
            };
            drop(active);
            reply.result(out);
            hide(server, user, &before);
            return Deferred::None;
        }
        Request::Default(Some(name)) if !exists(name) => {
            reply.fail(out, StanzaCondition::ItemNotFound);
            return Deferred::None;
        }
        Request::Default(name) => {
            // §2.5: the current default may not change under another resource using it.
            let busy = lists.default.as_deref().is_some_and(|current| {
                Some(current) != name
                    && server
                        .state::<Privacy>()
                        .in_use_elsewhere(server, session, &lists, current)
            });
            if busy {
                reply.fail(out, StanzaCondition::Conflict);
                return Deferred::None;
            }
            Change::Default(name.map(str::to_owned))
        }
        // §2.8: an empty list removes it, unless another resource uses it.
        Request::Edit { name, items } if items.is_empty() => {
            let condition = if !exists(name) {
                Some(StanzaCondition::ItemNotFound)
            } else if server
                .state::<Privacy>()
                .in_use_elsewhere(server, session, &lists, name)
            {
                Some(StanzaCondition::Conflict)
            } else {
                None
            };
            if let Some(condition) = condition {
                reply.fail(out, condition);
                return Deferred::None;
            }
            Change::Remove(name.to_owned())
        }
        Request::Edit { name, items } => {
            if items.len() > MAX_ITEMS || (!exists(name) && lists.lists.len() >= MAX_LISTS) {
                reply.fail(out, StanzaCondition::PolicyViolation);
                return Deferred::None;
            }
            if let Err(condition) = groups_exist(server, user, &items) {
                reply.fail(out, condition);
                return Deferred::None;
            }
            let mut stored = String::new();
            write_items(&mut stored, &items);
            Change::Replace(name.to_owned(), stored)
        }
    };
    let before = hidden(server, user);
    let server = server.clone();
    let session = session.clone();
    let user = user.to_owned();
    Deferred::Reply(Box::pin(async move {
        let result = match &change {
            Change::Default(name) => server.store.set_privacy_default(&user, name.clone()).await,
            Change::Replace(name, items) => {
                server
                    .store
                    .set_privacy_list(&user, name, items.clone())
                    .await
            }
            Change::Remove(name) => server.store.remove_privacy_list(&user, name).await,
        };
        let stored = result.is_ok();
        let out = reply.after_write(result, "privacy list");
        if stored {
            server.state::<Privacy>().changed(&user);
            match &change {
                Change::Default(_) => {}
                Change::Replace(name, _) => push(&server, &user, name),
                Change::Remove(name) => {
                    let privacy = server.state::<Privacy>();
                    let mut active = privacy.active.borrow_mut();
                    if active.get(&session.id).is_some_and(|n| **n == **name) {
                        active.remove(&session.id);
                    }
                    drop(active);
                    push(&server, &user, name);
                }
            }
            hide(&server, &user, &before);
        }
        out
    }))
}

/// Presence that may not flow now between the user's available resources and their
/// contacts' (in either direction): (sender, recipient session) pairs.
type Hidden = Vec<(Jid, Rc<Session>)>;

fn hidden(server: &Server, user: &str) -> Hidden {
    let available = |local: &str| -> Vec<Rc<Session>> {
        server
            .router
            .borrow()
            .resources(local)
            .iter()
            .filter(|s| s.available.get())
            .cloned()
            .collect()
    };
    let mut pairs = Hidden::new();
    let mine = available(user);
    if mine.is_empty() {
        return pairs;
    }
    let denied = |from: &Jid, to: &Jid| {
        verdict::allows(server, from, to, StanzaKind::Presence) != Verdict::Allow
    };
    for contact in audience::contacts(server, user, |item| item.from) {
        for theirs in available(contact.local().unwrap_or_default()) {
            for own in mine.iter().filter(|own| denied(&own.jid, &theirs.jid)) {
                pairs.push((own.jid.jid().clone(), theirs.clone()));
            }
        }
    }
    for contact in audience::contacts(server, user, |item| item.to) {
        for theirs in available(contact.local().unwrap_or_default()) {
            for own in mine.iter().filter(|own| denied(&theirs.jid, &own.jid)) {
                pairs.push((theirs.jid.jid().clone(), own.clone()));
            }
        }
    }
    pairs
}

/// The notes of §2.10 and §2.11: after a change of lists, a contact no longer allowed to
/// see one of the user's resources is told it went unavailable, and a resource no longer
/// allowed to hear a contact sees the contact go unavailable. (Nothing is re-sent when a
/// change allows more: the next presence broadcast carries it.)
fn hide(server: &Server, user: &str, before: &Hidden) {
    for (from, to) in hidden(server, user) {
        if before.iter().any(|(f, t)| *f == from && t.id == to.id) {
            continue;
        }
        let mut xml = String::new();
        verdict::write_unavailable(&mut xml, &from, &to.jid);
        server.deliver(&to, xml.into(), false);
    }
}

/// §2.1: a group item names a group of the user's roster (`<item-not-found/>` otherwise).
fn groups_exist(server: &Server, user: &str, items: &[Item]) -> Result<(), StanzaCondition> {
    let groups: Vec<&str> = items
        .iter()
        .filter_map(|item| match &item.rule {
            Rule::Group(group) => Some(&**group),
            _ => None,
        })
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    let roster = server.store.roster(user).map_err(|e| {
        warn!("{user}: cannot read roster: {e}");
        StanzaCondition::ResourceConstraint
    })?;
    let known = |group: &&str| {
        roster
            .live()
            .any(|item| item.groups.iter().any(|g| g == group))
    };
    if groups.iter().all(known) {
        Ok(())
    } else {
        Err(StanzaCondition::ItemNotFound)
    }
}

/// §2.3: the names of the lists, preceded by the session's active list and the default.
fn write_names(out: &mut String, active: Option<&str>, lists: &UserLists) {
    Element::new("query").ns(NS).children(out, |out| {
        if let Some(active) = active {
            Element::new("active").attr("name", active).empty(out);
        }
        if let Some(default) = &lists.default {
            Element::new("default").attr("name", default).empty(out);
        }
        for (name, _) in &lists.lists {
            Element::new("list").attr("name", name).empty(out);
        }
    });
}

/// §2.3: one list and its items.
fn write_list(out: &mut String, name: &str, items: &[Item]) {
    Element::new("query").ns(NS).children(out, |out| {
        Element::new("list")
            .attr("name", name)
            .children(out, |out| write_items(out, items));
    });
}

/// §2 rule 10: the push telling a resource which list changed (only its name).
fn write_push(out: &mut String, id: &str, to: &Jid, name: &str) {
    Element::new("iq")
        .attr("type", "set")
        .attr("id", id)
        .attr("to", to.as_str())
        .children(out, |out| {
            Element::new("query").ns(NS).children(out, |out| {
                Element::new("list").attr("name", name).empty(out);
            });
        });
}

/// §2 rule 10: every connected resource learns which list changed.
fn push(server: &Server, user: &str, name: &str) {
    let sessions = server.router.borrow().resources(user).to_vec();
    for session in sessions {
        let mut xml = String::new();
        let id = format!("privacy-{}", server.random_id());
        write_push(&mut xml, &id, &session.jid, name);
        server.deliver(&session, xml.into(), false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::privacy_lists::{Subscription, IQ, MESSAGE, PRESENCE_OUT};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn items(xml: &str) -> Result<Vec<Item>, StanzaCondition> {
        let xml = format!("<list xmlns='{NS}' name='x'>{xml}</list>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        parse_items(doc.root_element())
    }

    /// Parses `query` as a request of type `ty` and compares with `expected`.
    fn parses(ty: IqType, query: &str, expected: Result<Request, StanzaCondition>) {
        let doc = roxmltree::Document::parse(query).unwrap();
        assert_eq!(Request::parse(ty, doc.root_element()), expected, "{query}");
    }

    fn query(children: &str) -> String {
        format!("<query xmlns='{NS}'>{children}</query>")
    }

    /// The attributes of `node`, in order.
    fn attributes<'a>(node: Node<'a, '_>) -> Vec<(&'a str, &'a str)> {
        node.attributes().map(|a| (a.name(), a.value())).collect()
    }

    fn element_names<'a>(node: Node<'a, '_>) -> Vec<&'a str> {
        node.children()
            .filter(Node::is_element)
            .map(|c| c.tag_name().name())
            .collect()
    }

    #[test]
    fn items_are_sorted_by_order_and_typed() {
        let list = items(
            "<item action='deny' order='9'/>\
             <item type='subscription' value='both' action='allow' order='2'><message/><presence-out/></item>\
             <item type='jid' value='A@h/r' action='deny' order='1'/>\
             <item type='group' value='Friends &amp; co' action='allow' order='3'><iq/></item>",
        )
        .unwrap();
        let expected = [
            (1, false, Rule::Jid(jid("a@h/r")), 0),
            (
                2,
                true,
                Rule::Subscription(Subscription::Both),
                MESSAGE | PRESENCE_OUT,
            ),
            (3, true, Rule::Group("Friends & co".into()), IQ),
            (9, false, Rule::All, 0),
        ];
        let got: Vec<_> = list
            .iter()
            .map(|i| (i.order, i.allow, i.rule.clone(), i.stanzas))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn written_items_parse_back_to_the_same_list() {
        let list = items(
            "<item type='jid' value='a@h/r&apos;' action='deny' order='1'/>\
             <item type='subscription' value='from' action='allow' order='2'><presence-in/><iq/></item>\
             <item type='group' value='&lt;G&gt;' action='allow' order='3'/>\
             <item action='deny' order='4'><message/></item>",
        )
        .unwrap();
        let mut xml = String::new();
        write_items(&mut xml, &list);
        assert_eq!(items(&xml).unwrap(), list);
        let wrapped = format!("<list xmlns='{NS}'>{xml}</list>");
        let doc = roxmltree::Document::parse(&wrapped).unwrap();
        let written: Vec<_> = doc
            .root_element()
            .children()
            .filter(Node::is_element)
            .collect();
        assert_eq!(
            attributes(written[0]),
            [
                ("type", "jid"),
                ("value", "a@h/r'"),
                ("action", "deny"),
                ("order", "1")
            ]
        );
        assert_eq!(element_names(written[1]), ["iq", "presence-in"]);
        assert_eq!(written[2].attribute("value"), Some("<G>"));
        assert_eq!(attributes(written[3]), [("action", "deny"), ("order", "4")]);
    }

    #[test]
    fn an_empty_list_has_no_items() {
        assert_eq!(items("").unwrap(), []);
    }

    #[test]
    fn invalid_items_are_bad_request_xep_0016_s2_1() {
        for bad in [
            "<item type='colour' value='red' action='deny' order='1'/>",
            "<item type='jid' value='a@h' action='deny'/>",
            "<item type='jid' value='a@h' action='deny' order='-1'/>",
            "<item type='jid' value='a@h' action='maybe' order='1'/>",
            "<item type='jid' action='deny' order='1'/>",
            "<item type='jid' value='@h' action='deny' order='1'/>",
            "<item type='group' value='' action='deny' order='1'/>",
            "<item type='subscription' value='some' action='deny' order='1'/>",
            "<item action='deny' order='1'/><item action='allow' order='1'/>",
            "<item action='deny' order='1'><presence/></item>",
            "<other/>",
        ] {
            assert_eq!(items(bad), Err(StanzaCondition::BadRequest), "{bad}");
        }
    }

    #[test]
    fn get_of_an_empty_query_asks_for_the_names() {
        parses(IqType::Get, &query(""), Ok(Request::Names));
    }

    #[test]
    fn get_of_a_named_list_asks_for_it() {
        parses(
            IqType::Get,
            &query("<list name='public'/>"),
            Ok(Request::List("public")),
        );
    }

    #[test]
    fn set_active_and_default_with_or_without_a_name() {
        for (children, expected) in [
            ("<active name='a'/>", Request::Active(Some("a"))),
            ("<active/>", Request::Active(None)),
            ("<default name='d'/>", Request::Default(Some("d"))),
            ("<default/>", Request::Default(None)),
        ] {
            parses(IqType::Set, &query(children), Ok(expected));
        }
    }

    #[test]
    fn set_of_a_list_carries_its_items() {
        parses(
            IqType::Set,
            &query("<list name='l'><item action='deny' order='1'/></list>"),
            Ok(Request::Edit {
                name: "l",
                items: vec![Item {
                    order: 1,
                    allow: false,
                    rule: Rule::All,
                    stanzas: 0,
                }],
            }),
        );
        parses(
            IqType::Set,
            &query("<list name='l'/>"),
            Ok(Request::Edit {
                name: "l",
                items: vec![],
            }),
        );
    }

    #[test]
    fn payload_other_than_query_is_bad_request() {
        parses(
            IqType::Get,
            &format!("<list xmlns='{NS}' name='l'/>"),
            Err(StanzaCondition::BadRequest),
        );
    }

    #[test]
    fn more_than_one_element_is_bad_request_xep_0016_s2_3() {
        for ty in [IqType::Get, IqType::Set] {
            parses(
                ty,
                &query("<list name='a'/><list name='b'/>"),
                Err(StanzaCondition::BadRequest),
            );
        }
    }

    #[test]
    fn set_of_nothing_is_bad_request() {
        parses(IqType::Set, &query(""), Err(StanzaCondition::BadRequest));
    }

    #[test]
    fn element_in_another_namespace_is_bad_request() {
        parses(
            IqType::Set,
            &query("<active xmlns='urn:x' name='a'/>"),
            Err(StanzaCondition::BadRequest),
        );
    }

    #[test]
    fn list_without_a_name_is_bad_request() {
        parses(
            IqType::Get,
            &query("<list/>"),
            Err(StanzaCondition::BadRequest),
        );
        for list in ["<list/>", "<list name=''/>"] {
            parses(IqType::Set, &query(list), Err(StanzaCondition::BadRequest));
        }
    }

    #[test]
    fn active_or_default_in_a_get_is_bad_request() {
        for children in ["<active name='a'/>", "<default name='d'/>"] {
            parses(
                IqType::Get,
                &query(children),
                Err(StanzaCondition::BadRequest),
            );
        }
    }

    #[test]
    fn set_of_a_list_with_an_invalid_item_is_bad_request() {
        parses(
            IqType::Set,
            &query("<list name='l'><item action='deny'/></list>"),
            Err(StanzaCondition::BadRequest),
        );
    }

    #[test]
    fn names_come_after_the_active_and_default_lists_xep_0016_s2_3() {
        let lists = UserLists {
            lists: vec![
                ("a&b".into(), Rc::from([])),
                ("public".into(), Rc::from([])),
            ],
            default: Some("public".into()),
        };
        let mut out = String::new();
        write_names(&mut out, Some("a&b"), &lists);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let query = doc.root_element();
        assert!(query.has_tag_name((NS, "query")));
        let got: Vec<_> = query
            .children()
            .filter(Node::is_element)
            .map(|c| (c.tag_name().name(), c.attribute("name")))
            .collect();
        assert_eq!(
            got,
            [
                ("active", Some("a&b")),
                ("default", Some("public")),
                ("list", Some("a&b")),
                ("list", Some("public")),
            ]
        );
    }

    #[test]
    fn a_list_result_carries_its_items() {
        let list = items("<item type='jid' value='a@h' action='deny' order='1'/>").unwrap();
        let mut out = String::new();
        write_list(&mut out, "l'", &list);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let query = doc.root_element();
        assert!(query.has_tag_name((NS, "query")));
        let list = query.first_element_child().unwrap();
        assert!(list.has_tag_name((NS, "list")));
        assert_eq!(list.attribute("name"), Some("l'"));
        let item = list.first_element_child().unwrap();
        assert_eq!(item.attribute("value"), Some("a@h"));
    }

    #[test]
    fn pushes_name_the_changed_list_xep_0016_s2_rule_10() {
        let mut out = String::new();
        write_push(&mut out, "privacy-1", &jid("u@h/r"), "l");
        let doc = roxmltree::Document::parse(&out).unwrap();
        let iq = doc.root_element();
        assert_eq!(
            attributes(iq),
            [("type", "set"), ("id", "privacy-1"), ("to", "u@h/r")]
        );
        let query = iq.first_element_child().unwrap();
        assert!(query.has_tag_name((NS, "query")));
        let list = query.first_element_child().unwrap();
        assert!(list.has_tag_name((NS, "list")));
        assert_eq!(attributes(list), [("name", "l")]);
        assert_eq!(list.children().count(), 0);
    }
}
