//! Privacy lists (XEP-0016) in memory: the items of each user's lists, parsed, their default
//! list and the active list of each session, and the privacy half of the verdict
//! (`allows`). Users with lists keep them parsed in memory while they have a session
//! ([`UserCache`]); for offline users (offline storage) they are read from the store.
//! Subscription and group items read the owner's roster item at most once per check, so
//! roster changes apply at once (§2 rule 9). The commands are [`crate::privacy`]'s.

use super::rules::{matches, StanzaKind, Verdict};
use crate::jid::Jid;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::StanzaCondition;
use crate::store::{RosterItem, Store, StoreError};
use crate::usercache::UserCache;
use crate::xml::build::Element;
use log::warn;
use roxmltree::Node;
use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

pub const NS: &str = "jabber:iq:privacy";

/// How privacy list items select a kind of stanza: only these lists need it.
impl StanzaKind {
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

pub(crate) const MESSAGE: u8 = 1;
pub(crate) const IQ: u8 = 2;
pub(crate) const PRESENCE_IN: u8 = 4;
pub(crate) const PRESENCE_OUT: u8 = 8;
/// The item child elements, in the order they are written.
const STANZA_ELEMENTS: [(&str, u8); 4] = [
    ("message", MESSAGE),
    ("iq", IQ),
    ("presence-in", PRESENCE_IN),
    ("presence-out", PRESENCE_OUT),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subscription {
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
pub(crate) enum Rule {
    /// The fall-through item (no `type`).
    All,
    Jid(Jid),
    Group(Box<str>),
    Subscription(Subscription),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Item {
    pub(crate) order: u32,
    pub(crate) allow: bool,
    pub(crate) rule: Rule,
    /// [`STANZA_ELEMENTS`] bits; 0 means every kind of stanza.
    pub(crate) stanzas: u8,
}

impl Item {
    /// Whether the item is about a stanza whose kind has bit `kind` (0: only "all" items).
    fn covers(&self, kind: u8) -> bool {
        self.stanzas == 0 || self.stanzas & kind != 0
    }

    fn matches<'r>(&self, other: &Jid, roster: &impl Fn() -> Option<&'r RosterItem>) -> bool {
        match &self.rule {
            Rule::All => true,
            Rule::Jid(jid) => matches(jid, other),
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
pub(crate) fn parse_items(list: Node) -> Result<Vec<Item>, StanzaCondition> {
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
    if items
        .windows(2)
        .any(|pair| matches!(pair, [a, b] if a.order == b.order))
    {
        return Err(StanzaCondition::BadRequest);
    }
    Ok(items)
}

/// The items as the client sees them, and as the store keeps them.
pub(crate) fn write_items(out: &mut String, items: &[Item]) {
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
pub(crate) struct UserLists {
    /// Sorted by name.
    pub(crate) lists: Vec<(Box<str>, Rc<[Item]>)>,
    pub(crate) default: Option<Box<str>>,
}

impl UserLists {
    pub(crate) fn get(&self, name: &str) -> Option<&Rc<[Item]>> {
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
    pub(crate) lists: UserCache<Rc<UserLists>>,
    /// Session id → name of its active list (§2.4); only sessions that set one appear.
    pub(crate) active: RefCell<HashMap<u64, Box<str>>>,
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
    pub(crate) fn user_lists(
        &self,
        server: &Server,
        user: &str,
    ) -> Result<Rc<UserLists>, StoreError> {
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
    pub(crate) fn changed(&self, user: &str) {
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
    pub(crate) fn in_use_elsewhere(
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
/// inbound child elements, and items for all stanzas). Only [`super::allows`] calls it,
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
