//! Privacy lists (XEP-0016): the `jabber:iq:privacy` commands (list names, get, edit, remove,
//! active list per session, default list per user, with list pushes) and the privacy half of
//! the verdict every delivery point asks for ([`allows`], called only through
//! [`crate::blocking::allows`] so block lists and privacy lists are checked in one place).
//! This module owns the lists in memory and the active list of each session; it never routes
//! a stanza itself.
//!
//! Cost per routed stanza: one hash-set lookup for users without lists. Users with lists keep
//! them parsed in memory while they have a session ([`UserCache`]); for offline users (offline
//! storage) they are read from the store. Subscription and group items read the owner's
//! roster item at most once per check, so roster changes apply at once (§2 rule 9).

use crate::blocking::{self, Verdict};
use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::jid::Jid;
use crate::presence;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{IqType, PresenceType, Stanza, StanzaCondition, StanzaType};
use crate::store::{RosterItem, Store, StoreError};
use crate::usercache::UserCache;
use crate::xml::build::Element;
use log::warn;
use roxmltree::Node;
use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

pub const NS: &str = "jabber:iq:privacy";

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

/// What a stanza is, as privacy lists tell stanzas apart (§2.1 child elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaKind {
    Message,
    Iq,
    /// A presence notification (no type, or `unavailable`): `<presence-in/>` on the
    /// recipient's list, `<presence-out/>` on the sender's.
    Presence,
    /// Any other presence (subscriptions, probes, errors): only items without child
    /// elements (all stanzas) apply to it.
    OtherPresence,
}

impl StanzaKind {
    pub fn of(stanza: &Stanza) -> StanzaKind {
        match stanza.ty {
            StanzaType::Message(_) => StanzaKind::Message,
            StanzaType::Iq(_) => StanzaKind::Iq,
            StanzaType::Presence(PresenceType::Available | PresenceType::Unavailable) => {
                StanzaKind::Presence
            }
            StanzaType::Presence(_) => StanzaKind::OtherPresence,
        }
    }

    /// The child element that selects this kind on the recipient's list (0: none does).
    fn inbound(self) -> u8 {
        match self {
            StanzaKind::Message => MESSAGE,
            StanzaKind::Iq => IQ,
            StanzaKind::Presence => PRESENCE_IN,
            StanzaKind::OtherPresence => 0,
        }
    }

    /// The child element that selects this kind on the sender's list (0: none does).
    fn outbound(self) -> u8 {
        match self {
            StanzaKind::Presence => PRESENCE_OUT,
            _ => 0,
        }
    }
}

const MESSAGE: u8 = 1;
const IQ: u8 = 2;
const PRESENCE_IN: u8 = 4;
const PRESENCE_OUT: u8 = 8;
/// The item child elements, in the order they are written.
const STANZA_ELEMENTS: [(&str, u8); 4] = [
    ("message", MESSAGE),
    ("iq", IQ),
    ("presence-in", PRESENCE_IN),
    ("presence-out", PRESENCE_OUT),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscription {
    None,
    To,
    From,
    Both,
}

const SUBSCRIPTIONS: [(&str, Subscription); 4] = [
    ("none", Subscription::None),
    ("to", Subscription::To),
    ("from", Subscription::From),
    ("both", Subscription::Both),
];

#[derive(Clone, Debug, PartialEq)]
enum Rule {
    /// The fall-through item (no `type`).
    All,
    Jid(Jid),
    Group(Box<str>),
    Subscription(Subscription),
}

#[derive(Clone, Debug, PartialEq)]
struct Item {
    order: u32,
    allow: bool,
    rule: Rule,
    /// [`STANZA_ELEMENTS`] bits; 0 means every kind of stanza.
    stanzas: u8,
}

impl Item {
    /// Whether the item is about a stanza whose kind has bit `kind` (0: only "all" items).
    fn covers(&self, kind: u8) -> bool {
        self.stanzas == 0 || self.stanzas & kind != 0
    }

    fn matches<'r>(&self, other: &Jid, roster: &impl Fn() -> Option<&'r RosterItem>) -> bool {
        match &self.rule {
            Rule::All => true,
            Rule::Jid(jid) => blocking::matches(jid, other),
            Rule::Group(group) => {
                roster().is_some_and(|item| item.groups.iter().any(|g| g.as_str() == &**group))
            }
            Rule::Subscription(wanted) => {
                let (to, from) = roster().map_or((false, false), |item| (item.to, item.from));
                *wanted
                    == match (to, from) {
                        (false, false) => Subscription::None,
                        (true, false) => Subscription::To,
                        (false, true) => Subscription::From,
                        (true, true) => Subscription::Both,
                    }
            }
        }
    }
}

/// §2 rules 5–7: the first item (by order) about this kind of stanza that matches decides;
/// none matching allows.
fn evaluate<'r>(
    items: &[Item],
    kind: u8,
    other: &Jid,
    roster: impl Fn() -> Option<&'r RosterItem>,
) -> bool {
    items
        .iter()
        .find(|item| item.covers(kind) && item.matches(other, &roster))
        .is_none_or(|item| item.allow)
}

/// The `<item/>` children of a `<list/>`, validated (§2.1) and sorted by order.
fn parse_items(list: Node) -> Result<Vec<Item>, StanzaCondition> {
    let mut items = Vec::new();
    for node in list.children().filter(Node::is_element) {
        if node.tag_name().name() != "item" || node.tag_name().namespace() != Some(NS) {
            return Err(StanzaCondition::BadRequest);
        }
        let allow = match node.attribute("action") {
            Some("allow") => true,
            Some("deny") => false,
            _ => return Err(StanzaCondition::BadRequest),
        };
        let order = node
            .attribute("order")
            .and_then(|order| order.parse().ok())
            .ok_or(StanzaCondition::BadRequest)?;
        let value = node.attribute("value");
        let rule = match (node.attribute("type"), value) {
            (None, _) => Rule::All,
            (Some("jid"), Some(value)) => {
                Rule::Jid(Jid::parse(value).map_err(|_| StanzaCondition::BadRequest)?)
            }
            (Some("group"), Some(value)) if !value.is_empty() => Rule::Group(value.into()),
            (Some("subscription"), Some(value)) => Rule::Subscription(
                SUBSCRIPTIONS
                    .iter()
                    .find(|(name, _)| *name == value)
                    .ok_or(StanzaCondition::BadRequest)?
                    .1,
            ),
            _ => return Err(StanzaCondition::BadRequest),
        };
        let mut stanzas = 0;
        for child in node.children().filter(Node::is_element) {
            let bit = STANZA_ELEMENTS
                .iter()
                .find(|(name, _)| {
                    child.tag_name().name() == *name && child.tag_name().namespace() == Some(NS)
                })
                .ok_or(StanzaCondition::BadRequest)?
                .1;
            stanzas |= bit;
        }
        items.push(Item {
            order,
            allow,
            rule,
            stanzas,
        });
    }
    items.sort_by_key(|item| item.order);
    // §2.1: order values are unique within a list.
    if items.windows(2).any(|pair| pair[0].order == pair[1].order) {
        return Err(StanzaCondition::BadRequest);
    }
    Ok(items)
}

/// The items as the client sees them, and as the store keeps them.
fn write_items(out: &mut String, items: &[Item]) {
    for item in items {
        let (kind, value) = match &item.rule {
            Rule::All => (None, None),
            Rule::Jid(jid) => (Some("jid"), Some(jid.as_str())),
            Rule::Group(group) => (Some("group"), Some(&**group)),
            Rule::Subscription(sub) => {
                let name = SUBSCRIPTIONS
                    .iter()
                    .find(|(_, s)| s == sub)
                    .map_or("none", |(name, _)| name);
                (Some("subscription"), Some(name))
            }
        };
        let order = item.order.to_string();
        let element = Element::new("item")
            .attr_opt("type", kind)
            .attr_opt("value", value)
            .attr("action", if item.allow { "allow" } else { "deny" })
            .attr("order", &order);
        if item.stanzas == 0 {
            element.empty(out);
            continue;
        }
        element.children(out, |out| {
            for (name, bit) in STANZA_ELEMENTS {
                if item.stanzas & bit != 0 {
                    Element::new(name).empty(out);
                }
            }
        });
    }
}

/// A stored list back in memory. Hearth wrote it, so it parses; if it ever does not, the
/// list denies everything rather than silently letting through what the user refused.
fn parse_stored(user: &str, name: &str, stored: &str) -> Rc<[Item]> {
    let mut xml = String::new();
    Element::new("list")
        .ns(NS)
        .children(&mut xml, |out| out.push_str(stored));
    let parsed = roxmltree::Document::parse(&xml)
        .ok()
        .and_then(|doc| parse_items(doc.root_element()).ok());
    match parsed {
        Some(items) => items.into(),
        None => {
            warn!("{user}: privacy list {name:?} is unreadable; it denies everything");
            Rc::from([Item {
                order: 0,
                allow: false,
                rule: Rule::All,
                stanzas: 0,
            }])
        }
    }
}

/// One user's lists, parsed.
#[derive(Default)]
struct UserLists {
    /// Sorted by name.
    lists: Vec<(Box<str>, Rc<[Item]>)>,
    default: Option<Box<str>>,
}

impl UserLists {
    fn get(&self, name: &str) -> Option<&Rc<[Item]>> {
        self.lists
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, items)| items)
    }
}

/// Whose lists exist and which list each session has made active.
pub struct Privacy {
    /// Users who may have lists; `None` when it could not be read at startup (then every
    /// check reads the store: slower, never wrong).
    users: RefCell<Option<HashSet<Box<str>>>>,
    lists: UserCache<Rc<UserLists>>,
    /// Session id → name of its active list (§2.4); only sessions that set one appear.
    active: RefCell<HashMap<u64, Box<str>>>,
}

impl Privacy {
    /// One scan of the list table's keys at startup.
    pub fn load(store: &Store) -> Privacy {
        let users = match store.privacy_users() {
            Ok(users) => Some(users.into_iter().map(String::into_boxed_str).collect()),
            Err(e) => {
                warn!("cannot list privacy lists ({e}); reading them for every stanza");
                None
            }
        };
        Privacy {
            users: RefCell::new(users),
            lists: UserCache::default(),
            active: RefCell::default(),
        }
    }

    fn may_have_lists(&self, user: &str) -> bool {
        self.users
            .borrow()
            .as_ref()
            .is_none_or(|users| users.contains(user))
    }

    /// `user`'s lists, from memory when they are online.
    fn user_lists(&self, server: &Server, user: &str) -> Result<Rc<UserLists>, StoreError> {
        if !self.may_have_lists(user) {
            return Ok(Rc::default());
        }
        self.lists.get_or_load(server, user, || {
            let stored = server.store.privacy_lists(user)?;
            if stored.lists.is_empty() {
                if let Some(users) = self.users.borrow_mut().as_mut() {
                    users.remove(user);
                }
            }
            Ok(Rc::new(UserLists {
                lists: stored
                    .lists
                    .iter()
                    .map(|(name, items)| (name.as_str().into(), parse_stored(user, name, items)))
                    .collect(),
                default: stored.default.map(String::into_boxed_str),
            }))
        })
    }

    /// `user`'s lists were just written: the next check reads them again.
    fn changed(&self, user: &str) {
        self.lists.forget(user);
        if let Some(users) = self.users.borrow_mut().as_mut() {
            users.insert(user.into());
        }
    }

    /// The name of the list that applies to a session (§2 rules 1–2): its active list, else
    /// the default.
    fn applying<'l>(&self, lists: &'l UserLists, session: Option<u64>) -> Option<&'l str> {
        let active = self.active.borrow();
        match session.and_then(|id| active.get(&id)) {
            Some(name) => lists
                .lists
                .iter()
                .find(|(n, _)| n == name)
                .map(|(n, _)| &**n),
            None => lists.default.as_deref(),
        }
    }

    /// §2 rule 11: whether list `name` applies to a session of `session`'s user other than
    /// `session`.
    fn in_use_elsewhere(
        &self,
        server: &Server,
        session: &Session,
        lists: &UserLists,
        name: &str,
    ) -> bool {
        let user = session.jid.user();
        server
            .router
            .borrow()
            .resources(user)
            .iter()
            .any(|s| s.id != session.id && self.applying(lists, Some(s.id)) == Some(name))
    }

    /// Whether the lists of local user `owner` (their full or bare JID) let a stanza of
    /// `kind` (a bit of [`STANZA_ELEMENTS`]) to or from `other` through. A bare JID (or a
    /// resource that is not bound) asks every session's list, any allowing; with no session,
    /// the default list decides (§2 rule 2). Lists that cannot be read deny.
    fn permits(&self, server: &Server, owner: &Jid, kind: u8, other: &Jid) -> bool {
        let Some(user) = owner.local() else {
            return true;
        };
        if !self.may_have_lists(user) {
            return true;
        }
        let lists = match self.user_lists(server, user) {
            Ok(lists) => lists,
            Err(e) => {
                warn!("{user}: cannot read privacy lists ({e}); refusing {other}");
                return false;
            }
        };
        let sessions: Vec<Option<u64>> = {
            let router = server.router.borrow();
            let resources = router.resources(user);
            match resources.iter().find(|s| s.jid == *owner) {
                Some(session) => vec![Some(session.id)],
                None if resources.is_empty() => vec![None],
                None => resources.iter().map(|s| Some(s.id)).collect(),
            }
        };
        let roster = OnceCell::new();
        let roster_item = || {
            roster
                .get_or_init(|| {
                    server
                        .store
                        .roster_item(user, other.bare().as_str())
                        .unwrap_or_else(|e| {
                            warn!("{user}: cannot read roster for privacy lists: {e}");
                            None
                        })
                })
                .as_ref()
        };
        sessions.into_iter().any(|session| {
            match self
                .applying(&lists, session)
                .and_then(|name| lists.get(name))
            {
                Some(items) => evaluate(items, kind, other, roster_item),
                None => true,
            }
        })
    }
}

/// The privacy lists' verdict on a stanza of `kind` from `from` to `to`: the sender's list
/// (`<presence-out/>` items, and items for all stanzas) and the recipient's list (the
/// inbound child elements, and items for all stanzas). Only [`blocking::allows`] calls it,
/// after it has set aside the server's and the user's own addresses.
pub(crate) fn allows(server: &Server, from: &Jid, to: &Jid, kind: StanzaKind) -> Verdict {
    let ours = |jid: &Jid| jid.domain() == server.config().domain;
    let privacy = &server.state::<Privacy>();
    if ours(from) && !privacy.permits(server, from, kind.outbound(), to) {
        Verdict::SenderBlocks
    } else if ours(to) && !privacy.permits(server, to, kind.inbound(), from) {
        Verdict::RecipientBlocks
    } else {
        Verdict::Allow
    }
}

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
        blocking::allows(server, from, to, StanzaKind::Presence) != Verdict::Allow
    };
    for contact in presence::contacts(server, user, |item| item.from) {
        for theirs in available(contact.local().unwrap_or_default()) {
            for own in mine.iter().filter(|own| denied(&own.jid, &theirs.jid)) {
                pairs.push((own.jid.jid().clone(), theirs.clone()));
            }
        }
    }
    for contact in presence::contacts(server, user, |item| item.to) {
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
        blocking::write_unavailable(&mut xml, &from, &to.jid);
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

impl crate::feature::State for Privacy {
    fn new(_config: &crate::config::Config, store: &crate::store::Store) -> Self {
        Privacy::load(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn items(xml: &str) -> Result<Vec<Item>, StanzaCondition> {
        let xml = format!("<list xmlns='{NS}' name='x'>{xml}</list>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        parse_items(doc.root_element())
    }

    fn contact(to: bool, from: bool, groups: &[&str]) -> RosterItem {
        RosterItem {
            jid: "c@h".into(),
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            to,
            from,
            ..RosterItem::default()
        }
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

    #[test]
    fn first_matching_item_decides() {
        let list = items(
            "<item type='jid' value='tybalt@h' action='deny' order='1'/>\
             <item type='group' value='Enemies' action='deny' order='2'><message/></item>\
             <item type='subscription' value='both' action='allow' order='3'/>\
             <item type='subscription' value='from' action='allow' order='4'><presence-in/></item>\
             <item action='deny' order='5'><message/><presence-in/></item>",
        )
        .unwrap();
        let stranger = jid("x@h/r");
        let none = || None;
        assert!(!evaluate(&list, MESSAGE, &stranger, none));
        assert!(!evaluate(&list, PRESENCE_IN, &stranger, none));
        // Nothing is about iq or outbound presence except the jid item: allowed.
        assert!(evaluate(&list, IQ, &stranger, none));
        assert!(evaluate(&list, PRESENCE_OUT, &stranger, none));
        assert!(!evaluate(&list, IQ, &jid("tybalt@h/x"), none));
        let both = contact(true, true, &[]);
        assert!(evaluate(&list, MESSAGE, &stranger, || Some(&both)));
        let enemy = contact(true, true, &["Enemies"]);
        assert!(!evaluate(&list, MESSAGE, &stranger, || Some(&enemy)));
        assert!(evaluate(&list, PRESENCE_IN, &stranger, || Some(&enemy)));
        let from = contact(false, true, &[]);
        assert!(evaluate(&list, PRESENCE_IN, &stranger, || Some(&from)));
        assert!(!evaluate(&list, MESSAGE, &stranger, || Some(&from)));
        // Subscription "none" also covers contacts absent from the roster.
        let none_list =
            items("<item type='subscription' value='none' action='deny' order='1'/>").unwrap();
        assert!(!evaluate(&none_list, 0, &stranger, none));
        let to = contact(true, false, &[]);
        assert!(evaluate(&none_list, 0, &stranger, || Some(&to)));
        let nothing = contact(false, false, &[]);
        assert!(!evaluate(&none_list, 0, &stranger, || Some(&nothing)));
    }
}
