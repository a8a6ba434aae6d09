//! Communications blocking (XEP-0191): the block list commands (get, block, unblock,
//! unblock-all, with pushes) and the verdict every delivery point asks for ([`allows`],
//! [`gate`]). This module owns who blocks whom in memory; it never routes a stanza itself.
//!
//! Cost per routed stanza: one hash-set lookup for users without a list. Users with a list
//! keep it in memory while they have a session ([`UserCache`]); for offline users (offline
//! storage) it is read from the store.

use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::jid::Jid;
use crate::privacy::{self, StanzaKind};
use crate::route::reply_unavailable;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::error::NS_STANZA_ERRORS;
use crate::stanza::{self, IqType, MessageType, Stanza, StanzaCondition, StanzaType};
use crate::store::{Store, StoreError};
use crate::usercache::UserCache;
use crate::xml::Esc;
use log::warn;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::Write;
use std::rc::Rc;

pub const NS: &str = "urn:xmpp:blocking";
pub const NS_ERRORS: &str = "urn:xmpp:blocking:errors";

pub const FEATURE: Feature = Feature {
    name: "blocking",
    state: Some(crate::feature::init::<Blocklists>),
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    server_disco: &[NS],
    user_offline: Some(user_offline),
    ..Feature::NONE
};

/// Who blocks whom, as far as the event loop needs to know.
pub struct Blocklists {
    /// Users whose list may be non-empty; `None` when it could not be read at startup (then
    /// every check reads the store: slower, never wrong).
    nonempty: RefCell<Option<HashSet<Box<str>>>>,
    lists: UserCache<Rc<[Jid]>>,
}

impl Blocklists {
    /// One scan of the block table's keys at startup.
    pub fn load(store: &Store) -> Blocklists {
        let nonempty = match store.blocking_users() {
            Ok(users) => Some(users.into_iter().map(String::into_boxed_str).collect()),
            Err(e) => {
                warn!("cannot list block lists ({e}); reading them for every stanza");
                None
            }
        };
        Blocklists {
            nonempty: RefCell::new(nonempty),
            lists: UserCache::default(),
        }
    }

    /// `user`'s list, from memory when they are online.
    fn list(&self, server: &Server, user: &str) -> Result<Rc<[Jid]>, StoreError> {
        let may_have_one = self
            .nonempty
            .borrow()
            .as_ref()
            .is_none_or(|users| users.contains(user));
        if !may_have_one {
            return Ok(Rc::from([]));
        }
        self.lists.get_or_load(server, user, || {
            let list: Rc<[Jid]> = server
                .store
                .blocklist(user)?
                .iter()
                .filter_map(|jid| Jid::parse(jid).ok())
                .collect();
            if list.is_empty() {
                // E.g. the account was deleted: no need to read it again.
                if let Some(users) = self.nonempty.borrow_mut().as_mut() {
                    users.remove(user);
                }
            }
            Ok(list)
        })
    }

    /// Whether local `user` blocks `jid`. A list that cannot be read blocks everything:
    /// failing open would deliver what the user asked never to see.
    fn blocks(&self, server: &Server, user: &str, jid: &Jid) -> bool {
        match self.list(server, user) {
            Ok(list) => list.iter().any(|item| matches(item, jid)),
            Err(e) => {
                warn!("{user}: cannot read the block list ({e}); refusing {jid}");
                true
            }
        }
    }

    /// `user`'s list was just written: the next check reads it again.
    fn changed(&self, user: &str) {
        self.lists.forget(user);
        if let Some(users) = self.nonempty.borrow_mut().as_mut() {
            users.insert(user.into());
        }
    }
}

/// The user's last session ended: keep nothing of theirs in memory.
pub fn user_offline(server: &Server, user: &str) {
    server.state::<Blocklists>().lists.forget(user);
}

/// XEP-0191 §6 (the XEP-0016 §2.1 rules): a full JID or `domain/resource` item matches only
/// itself, a bare JID matches any of its resources, a domain matches everything at it.
pub(crate) fn matches(item: &Jid, jid: &Jid) -> bool {
    if item.domain() != jid.domain() {
        return false;
    }
    match (item.local(), item.resource()) {
        (None, None) => true,
        (Some(local), None) => jid.local() == Some(local),
        _ => item == jid,
    }
}

/// What the block lists say about a stanza from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The (local) sender blocked the recipient: XEP-0191 §3.3 `<not-acceptable/>` +
    /// `<blocked/>` to the sender.
    SenderBlocks,
    /// The (local) recipient blocked the sender: `<service-unavailable/>` for messages and
    /// iq requests, silence for presence and everything else.
    RecipientBlocks,
}

/// The check for every delivery point (message, iq, presence): block lists, then privacy
/// lists ([`privacy::allows`]). The server's own address and a user's own addresses are never
/// blocked.
pub fn allows(server: &Server, from: &Jid, to: &Jid, kind: StanzaKind) -> Verdict {
    let ours: &str = &server.config().domain;
    let is_server = |jid: &Jid| jid.local().is_none() && jid.domain() == ours;
    if is_server(from)
        || is_server(to)
        || (from.local() == to.local() && from.domain() == to.domain())
    {
        return Verdict::Allow;
    }
    let blocks = |owner: &Jid, other: &Jid| {
        owner.domain() == ours
            && owner
                .local()
                .is_some_and(|user| server.state::<Blocklists>().blocks(server, user, other))
    };
    if blocks(from, to) {
        Verdict::SenderBlocks
    } else if blocks(to, from) {
        Verdict::RecipientBlocks
    } else {
        privacy::allows(server, from, to, kind)
    }
}

/// [`allows`] applied to a stanza from `session` to `to`: false when it must not go on, with
/// the answer XEP-0191 §3.3 asks for already in `out`.
pub fn gate(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    to: &Jid,
    out: &mut String,
) -> bool {
    match allows(server, &session.jid, to, StanzaKind::of(stanza)) {
        Verdict::Allow => true,
        Verdict::SenderBlocks => {
            if !stanza.is_error() {
                stanza::open_reply(
                    out,
                    stanza.kind,
                    "error",
                    stanza.id,
                    to.as_str(),
                    session.jid.as_str(),
                );
                let _ = write!(
                    out,
                    "><error type='cancel'><not-acceptable xmlns='{NS_STANZA_ERRORS}'/><blocked xmlns='{NS_ERRORS}'/></error></{}>",
                    stanza.kind.name()
                );
            }
            false
        }
        Verdict::RecipientBlocks => {
            let answered = match stanza.ty {
                StanzaType::Message(ty) => ty != MessageType::Error,
                StanzaType::Iq(ty) => matches!(ty, IqType::Get | IqType::Set),
                StanzaType::Presence(_) => false,
            };
            if answered {
                reply_unavailable(server, session, stanza, out);
            }
            false
        }
    }
}

/// A change to the list, as requested and as pushed.
enum Change {
    Block(Vec<Jid>),
    Unblock(Vec<Jid>),
    UnblockAll,
}

/// The `urn:xmpp:blocking` iq requests of a user about their own list.
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let (server, user, payload) = (iq.server, iq.user(), iq.payload);
    let Some(reply) = iq.own_reply(StanzaCondition::ServiceUnavailable, out) else {
        return Deferred::None;
    };
    let items = || -> Result<Vec<Jid>, StanzaCondition> {
        payload
            .children()
            .filter(|c| c.is_element())
            .map(|item| {
                if item.tag_name().name() != "item" || item.tag_name().namespace() != Some(NS) {
                    return Err(StanzaCondition::BadRequest);
                }
                let jid = item.attribute("jid").ok_or(StanzaCondition::BadRequest)?;
                Jid::parse(jid).map_err(|_| StanzaCondition::JidMalformed)
            })
            .collect()
    };
    let change = match (iq.ty, payload.tag_name().name(), items()) {
        (IqType::Get, "blocklist", _) => {
            match server.state::<Blocklists>().list(server, user) {
                Ok(list) if list.is_empty() => {
                    reply.result_with(out, &format!("<blocklist xmlns='{NS}'/>"));
                }
                Ok(list) => {
                    let mut payload = format!("<blocklist xmlns='{NS}'>");
                    write_items(&mut payload, &list);
                    payload.push_str("</blocklist>");
                    reply.result_with(out, &payload);
                }
                Err(e) => {
                    warn!("{user}: cannot read the block list: {e}");
                    reply.fail(out, StanzaCondition::ResourceConstraint);
                }
            }
            return Deferred::None;
        }
        (IqType::Set, "block" | "unblock", Err(condition)) => {
            reply.fail(out, condition);
            return Deferred::None;
        }
        // §3.3: a block without items is a bad request.
        (IqType::Set, "block", Ok(jids)) if !jids.is_empty() => Change::Block(jids),
        (IqType::Set, "unblock", Ok(jids)) if jids.is_empty() => Change::UnblockAll,
        (IqType::Set, "unblock", Ok(jids)) => Change::Unblock(jids),
        _ => {
            reply.fail(out, StanzaCondition::BadRequest);
            return Deferred::None;
        }
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

fn write_items(out: &mut String, jids: &[Jid]) {
    for jid in jids {
        let _ = write!(out, "<item jid='{}'/>", Esc(jid.as_str()));
    }
}

/// §3.3–3.5: every resource of the user learns of the change. (Only resources that fetched
/// the list are "interested"; until sessions track that, all bound resources get it.)
fn push(server: &Server, user: &str, change: &Change) {
    let mut payload = String::new();
    match change {
        Change::Block(jids) => {
            let _ = write!(payload, "<block xmlns='{NS}'>");
            write_items(&mut payload, jids);
            payload.push_str("</block>");
        }
        Change::Unblock(jids) => {
            let _ = write!(payload, "<unblock xmlns='{NS}'>");
            write_items(&mut payload, jids);
            payload.push_str("</unblock>");
        }
        Change::UnblockAll => {
            let _ = write!(payload, "<unblock xmlns='{NS}'/>");
        }
    }
    let sessions = server.router.borrow().resources(user).to_vec();
    for session in sessions {
        let xml = format!(
            "<iq type='set' id='block-{}' to='{}'>{payload}</iq>",
            server.random_id(),
            Esc(session.jid.as_str())
        );
        server.deliver(&session, xml.into(), false);
    }
}

/// §3.3: a newly blocked contact who is online here stops seeing the user as available.
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
            let xml = format!(
                "<presence type='unavailable' from='{}' to='{}'/>",
                Esc(own.jid.as_str()),
                Esc(contact.jid.as_str())
            );
            server.deliver(contact, xml.into(), false);
        }
    }
}

impl crate::feature::State for Blocklists {
    fn new(_config: &crate::config::Config, store: &crate::store::Store) -> Self {
        Blocklists::load(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn matching_rules() {
        let full = jid("bob@h/phone");
        let bare = jid("bob@h");
        let domain = jid("h");
        let domain_resource = jid("h/r");
        assert!(matches(&full, &jid("bob@h/phone")));
        assert!(!matches(&full, &jid("bob@h/laptop")));
        assert!(!matches(&full, &bare));
        assert!(matches(&bare, &jid("bob@h/laptop")));
        assert!(matches(&bare, &bare));
        assert!(!matches(&bare, &jid("bobby@h")));
        assert!(!matches(&bare, &jid("bob@other")));
        assert!(matches(&domain, &jid("anyone@h/x")));
        assert!(matches(&domain, &jid("h")));
        assert!(!matches(&domain, &jid("anyone@sub.h")));
        assert!(matches(&domain_resource, &jid("h/r")));
        assert!(!matches(&domain_resource, &jid("a@h/r")));
        assert!(matches(&jid("BOB@h"), &jid("bob@h/x")));
    }
}
