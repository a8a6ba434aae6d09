//! The session registry and the delivery rules of RFC 6121 §8.5 for local
//! addresses. The router decides *where* a stanza goes (which sessions,
//! offline storage, an error or nowhere); it never parses XML, touches the
//! store or writes to a socket. Each connection owns a [`Mailbox`] through
//! which the router hands it serialised stanzas.

use crate::jid::Jid;
use crate::stanza::{MessageType, Stanza, StanzaCondition, StanzaType, StreamCondition};
use crate::xml::NS_CLIENT;

/// A session that once held this much for its client leaves enough freed heap
/// behind to hand back to the system as soon as it ends, whoever else stays
/// connected (glibc keeps freed pages otherwise, see [`crate::memory`]).
const LARGE_SESSION_BYTES: usize = 256 * 1024;

const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One item for a connection to write.
#[derive(Debug)]
pub enum Outbound {
    /// A serialised stanza. `storable` marks a message with a body that
    /// must go to offline storage if the session ends before writing it;
    /// `hold` says whether an inactive client (XEP-0352) may get it later.
    Stanza {
        xml: Rc<str>,
        storable: bool,
        hold: Hold,
    },
    /// End the stream with this error (conflict, shutdown, …).
    Close(StreamCondition),
    /// Messages were stored for this available resource's user after its
    /// initial presence looked: fetch them now, not at the next login.
    OfflineWaiting,
}

/// A bounded per-connection queue of stanzas to write, and the session's
/// byte budget: what the queue holds plus what its connection holds for the
/// client elsewhere (replies not yet written, stanzas not yet acknowledged:
/// [`Mailbox::set_held`]) must stay under one cap
/// (`limits.outbound_queue_bytes`), so a client that stops reading or
/// acknowledging cannot grow the server without bound. Empty mailboxes hold
/// no heap memory.
#[derive(Default)]
pub struct Mailbox {
    queue: RefCell<VecDeque<Outbound>>,
    queued_bytes: Cell<usize>,
    /// Bytes the session's connection (or its parking) holds outside the queue.
    held_bytes: Cell<usize>,
    /// The most the session ever held in all: a large peak is worth handing
    /// back to the system when the session ends.
    peak_bytes: Cell<usize>,
    waker: Cell<Option<Waker>>,
    /// A close was queued: the session is on its way out.
    closing: Cell<bool>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mailbox({} bytes queued)", self.queued_bytes.get())
    }
}

/// The mailbox is over its byte cap: the reader is too slow.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Mailbox {
    /// Queues a stanza unless that would take the session past its budget of
    /// `cap` bytes. An empty queue takes one stanza whatever its size, so one
    /// large stanza still gets through.
    pub fn push_stanza(
        &self,
        xml: Rc<str>,
        storable: bool,
        hold: Hold,
        cap: usize,
    ) -> Result<(), Full> {
        let bytes = self.queued_bytes.get() + xml.len();
        if bytes + self.held_bytes.get() > cap && !self.queue.borrow().is_empty() {
            return Err(Full);
        }
        self.queued_bytes.set(bytes);
        self.note_peak();
        self.push(Outbound::Stanza {
            xml,
            storable,
            hold,
        });
        Ok(())
    }

    /// What the session's connection holds for the client outside the queue:
    /// output not yet written and, with XEP-0198, stanzas not yet acknowledged
    /// (a parked session: only those).
    pub fn set_held(&self, bytes: usize) {
        self.held_bytes.set(bytes);
        self.note_peak();
    }

    /// Bytes the session holds for its client in all, queued or held.
    pub fn budget_used(&self) -> usize {
        self.queued_bytes.get() + self.held_bytes.get()
    }

    /// Bytes waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    /// After a session that held a lot for its client (its connection's buffers, or a
    /// parked session's queues) is gone: the freed heap goes back at once.
    pub fn return_memory(&self) {
        if self.peak_bytes() >= LARGE_SESSION_BYTES {
            crate::memory::trim_heap();
        }
    }

    /// The most [`Mailbox::budget_used`] ever was.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes.get()
    }

    fn note_peak(&self) {
        let used = self.budget_used();
        if used > self.peak_bytes.get() {
            self.peak_bytes.set(used);
        }
    }

    /// Queues a stream close; it is written after what is already queued.
    pub fn close(&self, condition: StreamCondition) {
        self.closing.set(true);
        self.push(Outbound::Close(condition));
    }

    /// Queues a reminder that offline storage holds messages for the user.
    pub fn offline_waiting(&self) {
        self.push(Outbound::OfflineWaiting);
    }

    fn push(&self, item: Outbound) {
        self.queue.borrow_mut().push_back(item);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Outbound> {
        let mut queue = self.queue.borrow_mut();
        match queue.pop_front() {
            Some(item) => {
                if let Outbound::Stanza { xml, .. } = &item {
                    self.queued_bytes
                        .set(self.queued_bytes.get().saturating_sub(xml.len()));
                }
                if queue.is_empty() && queue.capacity() > 16 {
                    *queue = VecDeque::new();
                }
                Poll::Ready(item)
            }
            None => {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }

    /// Appends stanzas that are already queued to `out` until it holds
    /// `max_bytes`, stopping at a close: a busy session then writes one TLS
    /// record and makes one syscall for many stanzas instead of one each.
    pub fn take_queued(
        &self,
        out: &mut String,
        max_bytes: usize,
        mut each: impl FnMut(Rc<str>, bool, Hold, &mut String),
    ) {
        while out.len() < max_bytes {
            let item = {
                let mut queue = self.queue.borrow_mut();
                match queue.front() {
                    Some(Outbound::Stanza { .. }) => queue.pop_front(),
                    _ => None,
                }
            };
            let Some(Outbound::Stanza {
                xml,
                storable,
                hold,
            }) = item
            else {
                break;
            };
            self.queued_bytes
                .set(self.queued_bytes.get().saturating_sub(xml.len()));
            each(xml, storable, hold, out);
        }
    }

    /// Ready once a close is queued; for a parked session (XEP-0198) whose
    /// mailbox nobody reads.
    pub fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closing.get() {
            return Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }

    /// A close was queued: the session is on its way out.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Everything still queued, for the no-loss rule when a session ends.
    pub fn drain(&self) -> Vec<Outbound> {
        self.queued_bytes.set(0);
        self.held_bytes.set(0);
        std::mem::take(&mut *self.queue.borrow_mut()).into()
    }
}

/// Whether a queued stanza may wait for an inactive client, and what
/// supersedes it. The key is the id of the sending session, which stands
/// for the sender's full JID for as long as that session lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hold {
    /// Written at once (and flushes what is held, to keep the order).
    #[default]
    Urgent,
    /// Available or unavailable presence of this session.
    Presence(u64),
    /// A message carrying only a chat state, from this session.
    ChatState(u64),
}

impl Hold {
    /// How a message from `sender` waits: chat-state-only messages (no body,
    /// nothing but XEP-0085 states and a thread) may, anything else may not.
    pub fn of_message(stanza: &Stanza, sender: &Session) -> Hold {
        if matches!(
            stanza.ty,
            StanzaType::Message(MessageType::Error | MessageType::Groupchat)
        ) {
            return Hold::Urgent;
        }
        let mut states = 0;
        for child in stanza.node.children().filter(|c| c.is_element()) {
            match child.tag_name().namespace() {
                Some(NS_CHATSTATES) => states += 1,
                Some(NS_CLIENT) if child.tag_name().name() == "thread" => {}
                _ => return Hold::Urgent,
            }
        }
        if states == 0 {
            Hold::Urgent
        } else {
            Hold::ChatState(sender.id)
        }
    }
}

/// What a session remembers about its own presence (kept and read by the presence feature). Empty, it holds no heap memory.
#[derive(Debug, Default)]
pub struct PresenceState {
    /// The last broadcast available presence, `from` stamped and without `to`: what a
    /// probe or a new subscriber gets. Shared by every copy sent.
    pub current: RefCell<Option<Rc<str>>>,
    /// Addresses given available presence outside the subscription (RFC 6121 §4.6), told
    /// `unavailable` when the session goes offline.
    pub directed: RefCell<Vec<Jid>>,
    /// Verified entity capabilities (XEP-0115), shared with every session announcing them.
    pub caps: RefCell<Option<Rc<[Box<str>]>>>,
}

/// A bound resource: what the router needs to deliver to it.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub jid: crate::jid::SessionJid,
    pub mailbox: Rc<Mailbox>,
    /// Sent initial presence and not yet unavailable (RFC 6121 §4.2).
    pub available: Cell<bool>,
    pub priority: Cell<i8>,
    /// Asked for the roster, so gets roster pushes (RFC 6121 §2.1.6).
    pub interested: Cell<bool>,
    pub presence: PresenceState,
    /// Wants copies of its user's other conversations (XEP-0280).
    pub carbons: Cell<bool>,
    /// An entity on another server (federation) or of an external component, standing in
    /// for it as a sender and a recipient: its `jid` is whatever address the peer used (a
    /// bare JID or a domain too, not a local account), and its mailbox is the queue to the
    /// peer's server (or the component's stream). It is never
    /// bound in the router; its `available` and `presence.directed` say whether it sent
    /// available presence and to which local addresses (told `unavailable` if its server
    /// is lost, `s2s::peer_lost`).
    pub remote: bool,
}

impl Session {
    /// A [`Session::remote`] one standing for `jid`, its stanzas queued in `mailbox` (the
    /// link to its server, or its component's stream).
    pub fn remote_entity(id: u64, jid: crate::jid::Jid, mailbox: Rc<Mailbox>) -> Session {
        Session {
            id,
            jid: crate::jid::SessionJid::remote(jid),
            mailbox,
            available: Cell::new(false),
            priority: Cell::new(0),
            interested: Cell::new(false),
            presence: PresenceState::default(),
            carbons: Cell::new(false),
            remote: true,
        }
    }
}

/// Where a message addressed to a local user goes (RFC 6121 §8.5).
#[derive(Debug, PartialEq)]
pub enum MessageTarget {
    Sessions(Vec<Rc<Session>>),
    /// No session may take it: store it if it is storable, else drop.
    Offline,
    /// Silently ignored (e.g. a headline nobody is online for).
    Drop,
    Error(StanzaCondition),
}

impl PartialEq for Session {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// Bound sessions of local users, keyed by localpart.
#[derive(Debug, Default)]
pub struct Router {
    users: HashMap<Box<str>, Vec<Rc<Session>>>,
}

impl Router {
    /// Registers a bound resource. A session already bound to the same full
    /// JID is returned so the caller can end it with `<conflict/>`
    /// (RFC 6120 §7.7.2.2, the new session wins).
    pub fn bind(&mut self, session: Rc<Session>) -> Option<Rc<Session>> {
        let local = session.jid.user();
        let resources = self.users.entry(local.into()).or_default();
        let old = resources
            .iter()
            .position(|s| s.jid.resource() == session.jid.resource())
            .map(|i| resources.swap_remove(i));
        resources.push(session);
        old
    }

    pub fn unbind(&mut self, session: &Session) {
        let Some(local) = session.jid.local() else {
            return;
        };
        if let Some(resources) = self.users.get_mut(local) {
            resources.retain(|s| s.id != session.id);
            if resources.is_empty() {
                self.users.remove(local);
                // A table sized for a past peak of users would stay at that size.
                crate::memory::shrink_sparse(&mut self.users);
            }
        }
    }

    /// All bound resources of a user.
    pub fn resources(&self, local: &str) -> &[Rc<Session>] {
        self.users.get(local).map(Vec::as_slice).unwrap_or_default()
    }

    /// The session bound to exactly this full JID.
    pub fn find(&self, full: &Jid) -> Option<&Rc<Session>> {
        let local = full.local()?;
        self.resources(local)
            .iter()
            .find(|s| s.jid.resource() == full.resource())
    }

    pub fn session_count(&self) -> usize {
        self.users.values().map(Vec::len).sum()
    }

    /// Every bound session, e.g. to close them all at shutdown.
    pub fn all(&self) -> impl Iterator<Item = &Rc<Session>> {
        self.users.values().flatten()
    }

    /// RFC 6121 §8.5.2 and §8.5.3 for a message to an existing local user.
    pub fn message_targets(&self, to: &Jid, ty: MessageType) -> MessageTarget {
        if to.resource().is_some() {
            if let Some(session) = self.find(to) {
                return MessageTarget::Sessions(vec![session.clone()]);
            }
            // §8.5.3.2.1: no such resource. Only chat goes on as if to the bare JID; the
            // rest is bounced (the RFC's option b) so nothing vanishes silently, errors
            // excepted (RFC 6120 §8.3.1: never answer an error with an error).
            return match ty {
                MessageType::Chat => self.bare_message_targets(to, ty),
                MessageType::Normal | MessageType::Headline | MessageType::Groupchat => {
                    MessageTarget::Error(StanzaCondition::ServiceUnavailable)
                }
                MessageType::Error => MessageTarget::Drop,
            };
        }
        self.bare_message_targets(to, ty)
    }

    /// §8.5.2.1: the available resources with the highest non-negative
    /// priority get normal and chat messages; headlines go to all of them;
    /// errors are silently ignored (§8.5.2.1.1).
    fn bare_message_targets(&self, to: &Jid, ty: MessageType) -> MessageTarget {
        // The dispatcher routes here only addresses of local accounts.
        let Some(local) = to.local() else {
            return MessageTarget::Drop;
        };
        let eligible = || {
            self.resources(local)
                .iter()
                .filter(|s| s.available.get() && s.priority.get() >= 0)
        };
        match ty {
            MessageType::Groupchat => MessageTarget::Error(StanzaCondition::ServiceUnavailable),
            MessageType::Error => MessageTarget::Drop,
            MessageType::Headline => {
                let all: Vec<_> = eligible().cloned().collect();
                if all.is_empty() {
                    MessageTarget::Drop
                } else {
                    MessageTarget::Sessions(all)
                }
            }
            MessageType::Normal | MessageType::Chat => {
                let Some(top) = eligible().map(|s| s.priority.get()).max() else {
                    return MessageTarget::Offline;
                };
                MessageTarget::Sessions(
                    eligible()
                        .filter(|s| s.priority.get() == top)
                        .cloned()
                        .collect(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u64, jid: &str, available: bool, priority: i8) -> Rc<Session> {
        Rc::new(Session {
            id,
            jid: crate::jid::SessionJid::new(Jid::parse(jid).unwrap()).unwrap(),
            mailbox: Rc::default(),
            available: Cell::new(available),
            priority: Cell::new(priority),
            interested: Cell::new(false),
            presence: Default::default(),
            carbons: Cell::new(false),
            remote: false,
        })
    }

    fn ids(target: MessageTarget) -> Vec<u64> {
        match target {
            MessageTarget::Sessions(s) => {
                let mut ids: Vec<u64> = s.iter().map(|s| s.id).collect();
                ids.sort();
                ids
            }
            other => panic!("expected sessions, got {other:?}"),
        }
    }

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn same_full_jid_replaces_the_old_session() {
        let mut router = Router::default();
        assert!(router.bind(session(1, "a@h/r", true, 0)).is_none());
        let old = router.bind(session(2, "a@h/r", true, 0)).unwrap();
        assert_eq!(old.id, 1);
        assert_eq!(router.session_count(), 1);
    }

    #[test]
    fn bare_jid_goes_to_highest_non_negative_priority() {
        let mut router = Router::default();
        router.bind(session(1, "a@h/low", true, 1));
        router.bind(session(2, "a@h/high", true, 5));
        router.bind(session(3, "a@h/tie", true, 5));
        router.bind(session(4, "a@h/neg", true, -1));
        router.bind(session(5, "a@h/unavailable", false, 10));
        assert_eq!(
            ids(router.message_targets(&jid("a@h"), MessageType::Chat)),
            vec![2, 3]
        );
        assert_eq!(
            ids(router.message_targets(&jid("a@h"), MessageType::Headline)),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn only_negative_or_unavailable_resources_means_offline() {
        let mut router = Router::default();
        router.bind(session(1, "a@h/neg", true, -1));
        router.bind(session(2, "a@h/idle", false, 0));
        assert_eq!(
            router.message_targets(&jid("a@h"), MessageType::Chat),
            MessageTarget::Offline
        );
        assert_eq!(
            router.message_targets(&jid("a@h"), MessageType::Headline),
            MessageTarget::Drop
        );
        // A full JID reaches its resource whatever its priority.
        assert_eq!(
            ids(router.message_targets(&jid("a@h/neg"), MessageType::Chat)),
            vec![1]
        );
    }

    #[test]
    fn unknown_resource_rules() {
        let mut router = Router::default();
        router.bind(session(1, "a@h/r", true, 0));
        let gone = jid("a@h/gone");
        assert_eq!(
            ids(router.message_targets(&gone, MessageType::Chat)),
            vec![1]
        );
        for ty in [MessageType::Normal, MessageType::Headline] {
            assert_eq!(
                router.message_targets(&gone, ty),
                MessageTarget::Error(StanzaCondition::ServiceUnavailable)
            );
        }
        assert_eq!(
            router.message_targets(&gone, MessageType::Error),
            MessageTarget::Drop
        );
        assert_eq!(
            router.message_targets(&jid("a@h"), MessageType::Error),
            MessageTarget::Drop
        );
        assert_eq!(
            router.message_targets(&gone, MessageType::Groupchat),
            MessageTarget::Error(StanzaCondition::ServiceUnavailable)
        );
        assert_eq!(
            router.message_targets(&jid("a@h"), MessageType::Groupchat),
            MessageTarget::Error(StanzaCondition::ServiceUnavailable)
        );
    }

    #[test]
    fn mailbox_cap_refuses_past_limit_but_always_takes_one() {
        let mailbox = Mailbox::default();
        assert!(mailbox
            .push_stanza("x".repeat(100).into(), false, Hold::Urgent, 10)
            .is_ok());
        assert_eq!(
            mailbox.push_stanza("y".into(), false, Hold::Urgent, 10),
            Err(Full)
        );
        assert_eq!(mailbox.drain().len(), 1);
        assert!(mailbox
            .push_stanza("y".into(), false, Hold::Urgent, 10)
            .is_ok());
    }

    #[test]
    fn bytes_held_elsewhere_count_against_the_same_budget() {
        let mailbox = Mailbox::default();
        mailbox.set_held(7);
        assert!(mailbox
            .push_stanza("a".into(), false, Hold::Urgent, 10)
            .is_ok());
        // One queued byte and 7 held leave room for 2 of the 10.
        assert_eq!(
            mailbox.push_stanza("abc".into(), false, Hold::Urgent, 10),
            Err(Full)
        );
        assert!(mailbox
            .push_stanza("ab".into(), false, Hold::Urgent, 10)
            .is_ok());
        assert_eq!(mailbox.budget_used(), 10);
        assert_eq!(mailbox.peak_bytes(), 10);
        mailbox.drain();
        assert_eq!(mailbox.budget_used(), 0);
        assert_eq!(mailbox.peak_bytes(), 10);
    }

    #[test]
    fn take_queued_stops_at_close_and_at_the_byte_limit() {
        let mailbox = Mailbox::default();
        for xml in ["<a/>", "<b/>", "<c/>"] {
            assert!(mailbox
                .push_stanza(xml.into(), false, Hold::Urgent, 100)
                .is_ok());
        }
        mailbox.close(StreamCondition::Conflict);
        let mut out = String::new();
        let write = |xml: Rc<str>, _: bool, _: Hold, out: &mut String| out.push_str(&xml);
        mailbox.take_queued(&mut out, 6, write);
        assert_eq!(out, "<a/><b/>");
        mailbox.take_queued(&mut out, 100, write);
        assert_eq!(out, "<a/><b/><c/>");
        let rest = mailbox.drain();
        assert!(matches!(
            rest.as_slice(),
            [Outbound::Close(StreamCondition::Conflict)]
        ));
    }
}
