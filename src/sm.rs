//! Stream Management (XEP-0198): the per-stream counters and the queue of
//! stanzas the client has not acknowledged yet, and the parking of a
//! resumable session whose connection dropped until it is resumed or times
//! out. This module owns the `urn:xmpp:sm:3` bookkeeping and the no-loss
//! rule for unacknowledged stanzas; it never parses client input (the
//! connection task does) and never decides where a stanza is delivered.

use crate::csi;
use crate::feature::{Feature, StreamStage};
use crate::router::Session;
use crate::server::Server;
use crate::stanza::Stanza;
use crate::xml::build::Element;
use crate::xml::{self, NS_CLIENT};
use log::info;
use smol::net::TcpStream;
use smol::{future, Timer};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const NS: &str = "urn:xmpp:sm:3";

/// The server asks for an ack after this many unacknowledged stanzas…
const REQUEST_EVERY: u16 = 5;
/// …or when stanzas went out and the stream has been quiet this long.
const REQUEST_IDLE: Duration = Duration::from_secs(1);

/// Stream management is part of the stream (c2s); this offers it.
pub const FEATURE: Feature = Feature {
    name: "sm",
    state: Some(crate::feature::init::<Parking>),
    // Parked sessions end with the server; their queued messages go to offline storage.
    stopping: Some(|server| server.state::<Parking>().close_all()),
    draining: Some(|server| server.state::<Parking>().count() > 0),
    enabled: |config| config.sm.enabled,
    stream_features: Some(|_, stage, out| {
        if stage == StreamStage::Authenticated {
            Element::new("sm").ns(NS).empty(out);
        }
    }),
    ..Feature::NONE
};

/// One stream's counters (XEP-0198 §4). Both `h` values wrap at 2^32.
#[derive(Debug, Default)]
pub struct State {
    /// Resumption id, when the client asked for resumption.
    pub id: Option<Box<str>>,
    /// Stanzas from the client the server has handled (our `h`).
    pub handled: u32,
    /// Stanzas the client has acknowledged (its last `h`).
    acked: u32,
    /// Stanzas written after enable and not yet acknowledged, oldest first.
    unacked: VecDeque<Rc<str>>,
    /// Their size: part of the session's byte budget.
    unacked_bytes: usize,
    /// Stanzas written since the last `<r/>` we sent.
    since_request: u16,
    /// When the first of those went out: an idle stream asks then.
    first_unrequested: Option<Instant>,
}

/// An `<a h/>` that acknowledges more than was sent (§4).
#[derive(Debug, PartialEq, Eq)]
pub struct TooHigh;

/// Too much waits for an ack.
#[derive(Debug, PartialEq, Eq)]
pub enum Overflow {
    /// More stanzas than `sm.max_unacked`.
    Stanzas,
    /// More bytes than the session's budget leaves them.
    Bytes,
}

impl State {
    /// Notes every stanza in bytes about to be written to the client: at most
    /// `max_unacked` stanzas and `max_bytes` bytes may wait for an ack.
    pub fn record(
        &mut self,
        bytes: &[u8],
        max_unacked: usize,
        max_bytes: usize,
    ) -> Result<(), Overflow> {
        for stanza in top_level_stanzas(bytes) {
            let text = String::from_utf8_lossy(stanza);
            self.unacked_bytes += text.len();
            self.unacked.push_back(text.into());
            self.since_request = self.since_request.saturating_add(1);
            self.first_unrequested.get_or_insert_with(Instant::now);
        }
        if self.unacked.len() > max_unacked {
            return Err(Overflow::Stanzas);
        }
        if self.unacked_bytes > max_bytes {
            return Err(Overflow::Bytes);
        }
        Ok(())
    }

    /// Bytes waiting for an ack.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// The client's `h`: drops what it covers.
    pub fn acknowledge(&mut self, h: u32) -> Result<(), TooHigh> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(TooHigh);
        }
        let freed: usize = self.unacked.drain(..newly).map(|xml| xml.len()).sum();
        self.unacked_bytes -= freed;
        if self.unacked.is_empty() && self.unacked.capacity() > 16 {
            self.unacked = VecDeque::new();
        }
        self.acked = h;
        Ok(())
    }

    /// Appends `<r/>` when it is time to ask for an ack (`idle`: the
    /// stream has nothing else to do).
    pub fn request_if_due(&mut self, out: &mut String, now: Instant) {
        let due = self.since_request >= REQUEST_EVERY
            || self
                .first_unrequested
                .is_some_and(|first| now >= first + REQUEST_IDLE);
        if due {
            out.push_str("<r xmlns='urn:xmpp:sm:3'/>");
            self.since_request = 0;
            self.first_unrequested = None;
        }
    }

    /// When an idle stream asks for an ack.
    pub fn request_deadline(&self) -> Option<Instant> {
        self.first_unrequested.map(|first| first + REQUEST_IDLE)
    }

    /// What the client has not acknowledged, for retransmission.
    pub fn unacked(&self) -> impl Iterator<Item = &str> {
        self.unacked.iter().map(|xml| &**xml)
    }

    pub fn has_unacked(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// The no-loss rule (§5 "treat unacknowledged stanzas as if sent to an
    /// unavailable resource"): messages that offline storage takes go
    /// there, the rest is dropped.
    pub async fn keep_unacked(&mut self, server: &Server, session: &Session) {
        let user = session.jid.user();
        let mut kept = 0;
        self.unacked_bytes = 0;
        for xml in std::mem::take(&mut self.unacked) {
            if storable(&xml)
                && crate::offline::keep(server, user, xml.as_bytes().to_vec())
                    .await
                    .is_ok()
            {
                kept += 1;
            }
        }
        if kept > 0 {
            info!(
                "{}: {kept} unacknowledged messages moved to offline storage",
                session.jid
            );
        }
    }
}

/// The same test offline storage applies to messages from senders.
fn storable(serialised: &str) -> bool {
    let wrapped = format!("<w xmlns='{NS_CLIENT}'>{serialised}</w>");
    let Ok(doc) = xml::parse_stanza(&wrapped) else {
        return false;
    };
    let Ok(node) = xml::stanza_element(&doc) else {
        return false;
    };
    Stanza::parse(node).is_ok_and(|stanza| crate::offline::is_storable(&stanza))
}

/// The top-level `<message/>`, `<presence/>` and `<iq/>` elements of
/// serialised output (which the server itself wrote, so it is well formed
/// and has no comments or CDATA); nonzas, the stream header and its close
/// are skipped.
fn top_level_stanzas(bytes: &[u8]) -> Vec<&[u8]> {
    let mut found = Vec::new();
    let (mut depth, mut start, mut i) = (0usize, None, 0);
    while let Some(offset) = bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'<'))
    {
        i += offset;
        let mut quote = None;
        let Some(len) = bytes.get(i..).unwrap_or_default().iter().position(|&b| {
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'\'' || b == b'"' => quote = Some(b),
                None => return b == b'>',
            }
            false
        }) else {
            break;
        };
        let end = i + len + 1;
        // `len` ≥ 1: the byte at `i` is `<`, not `>`.
        let Some(tag) = bytes.get(i + 1..i + len) else {
            break;
        };
        match tag.first() {
            Some(b'?' | b'!') => {}
            Some(b'/') => {
                if depth > 0 {
                    depth -= 1;
                    if depth == 0 {
                        if let Some(stanza) = start.take().and_then(|s| bytes.get(s..end)) {
                            found.push(stanza);
                        }
                    }
                }
            }
            _ => {
                let name_len = tag
                    .iter()
                    .position(|b| b.is_ascii_whitespace() || *b == b'/')
                    .unwrap_or(tag.len());
                let name = tag.get(..name_len).unwrap_or(tag);
                let self_closing = tag.last() == Some(&b'/');
                if depth == 0 && name == b"stream:stream" {
                    i = end;
                    continue;
                }
                if depth == 0 && matches!(name, b"message" | b"presence" | b"iq") {
                    start = Some(i);
                }
                if !self_closing {
                    depth += 1;
                } else if depth == 0 {
                    if let Some(stanza) = start.take().and_then(|s| bytes.get(s..end)) {
                        found.push(stanza);
                    }
                }
            }
        }
        i = end;
    }
    found
}

/// A resumable session whose connection is gone.
pub struct Parked {
    pub user: Box<str>,
    pub session: Rc<Session>,
    pub state: Box<State>,
    /// Presence and chat states an inactive client had not been sent yet.
    pub csi: csi::Buffer,
    /// Dropped when a new connection takes the session: wakes the waiter.
    _taken: smol::channel::Sender<()>,
}

/// A resumption id's session: on a live connection or parked.
enum Slot {
    /// Shutting the socket down makes its connection task park the session.
    Live {
        user: Box<str>,
        socket: TcpStream,
    },
    Parked(Parked),
}

/// How long a resuming stream waits for the session's old connection to
/// let go of it.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Resumable sessions by resumption id.
#[derive(Default)]
pub struct Parking {
    slots: RefCell<HashMap<Box<str>, Slot>>,
    /// Sessions no longer parked whose ending still waits for the disk.
    ending: Cell<usize>,
    /// The server is stopping: nothing is parked any more.
    stopping: Cell<bool>,
}

impl Parking {
    /// A connection enabled (or resumed) a resumable session.
    pub fn live(&self, id: &str, user: &str, socket: TcpStream) {
        let slot = Slot::Live {
            user: user.into(),
            socket,
        };
        self.slots.borrow_mut().insert(id.into(), slot);
    }

    /// A live session ended for good.
    pub fn forget(&self, id: &str) {
        let mut slots = self.slots.borrow_mut();
        if matches!(slots.get(id), Some(Slot::Live { .. })) {
            slots.remove(id);
        }
    }

    /// Takes a session of `user` to resume it; None if the id is unknown,
    /// expired or someone else's. A session whose old connection the
    /// server still thinks alive (§5: the client noticed the breakage
    /// first) has that connection cut, which parks it, and is then taken.
    pub async fn take(&self, id: &str, user: &str) -> Option<Parked> {
        let deadline = Instant::now() + TAKEOVER_WAIT;
        loop {
            {
                let mut slots = self.slots.borrow_mut();
                match slots.get(id)? {
                    Slot::Live { user: owner, .. } | Slot::Parked(Parked { user: owner, .. })
                        if owner.as_ref() != user =>
                    {
                        return None
                    }
                    Slot::Live { socket, .. } => {
                        let _ = socket.shutdown(std::net::Shutdown::Both);
                    }
                    Slot::Parked(_) => {
                        return match slots.remove(id) {
                            Some(Slot::Parked(parked)) => Some(parked),
                            _ => None,
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            Timer::after(Duration::from_millis(10)).await;
        }
    }

    /// Removes a parked session that is to end now.
    fn unpark(&self, id: &str) -> Option<Parked> {
        let mut slots = self.slots.borrow_mut();
        if !matches!(slots.get(id), Some(Slot::Parked(_))) {
            return None;
        }
        match slots.remove(id) {
            Some(Slot::Parked(parked)) => Some(parked),
            _ => None,
        }
    }

    /// Parked sessions and those being ended: shutdown waits for both.
    pub fn count(&self) -> usize {
        let slots = self.slots.borrow();
        let parked = slots
            .values()
            .filter(|slot| matches!(slot, Slot::Parked(_)))
            .count();
        parked + self.ending.get()
    }

    /// Graceful shutdown: every parked session ends (its waiter does the
    /// no-loss rule).
    pub fn close_all(&self) {
        self.stopping.set(true);
        for slot in self.slots.borrow().values() {
            if let Slot::Parked(parked) = slot {
                parked
                    .session
                    .mailbox
                    .close(crate::stanza::StreamCondition::SystemShutdown);
            }
        }
    }
}

/// Keeps a session whose connection dropped bound (still available,
/// mailbox filling) until a new connection resumes it, its mailbox is
/// closed (conflict, shutdown, full) or the resumption timeout passes;
/// the last two end it as a disconnect does, unacknowledged stanzas first
/// going through the no-loss rule. Its unacknowledged stanzas and its
/// mailbox share the session's byte budget: a mailbox that would overflow it
/// is closed, which ends the session.
pub async fn park(
    server: &Rc<Server>,
    mut session: Rc<Session>,
    mut state: Box<State>,
    csi: csi::Buffer,
) {
    // Without an id nobody can resume it, and nobody will once the server
    // is stopping: it ends at once.
    let mailbox = session.mailbox.clone();
    mailbox.set_held(state.unacked_bytes());
    if let Some(id) = state
        .id
        .clone()
        .filter(|_| !server.state::<Parking>().stopping.get())
    {
        let (taken, resumed) = smol::channel::bounded::<()>(1);
        info!(
            "{}: connection lost, session kept for resumption",
            session.jid
        );
        crate::push::hibernated(server, &session, || state.unacked().any(storable));
        let user = session.jid.user().into();
        let parked = Parked {
            user,
            session,
            state,
            csi,
            _taken: taken,
        };
        server
            .state::<Parking>()
            .slots
            .borrow_mut()
            .insert(id.clone(), Slot::Parked(parked));
        let timeout = Duration::from_secs(server.config().sm.resume_timeout_secs.into());
        future::or(
            async {
                let _ = resumed.recv().await;
            },
            future::or(
                async {
                    Timer::after(timeout).await;
                },
                future::poll_fn(|cx| mailbox.poll_closing(cx)),
            ),
        )
        .await;
        let Some(parked) = server.state::<Parking>().unpark(&id) else {
            // Resumed by a new connection.
            return;
        };
        info!("{}: not resumed, ending the session", parked.session.jid);
        (session, state) = (parked.session, parked.state);
    }
    let ending = &server.state::<Parking>().ending;
    ending.set(ending.get() + 1);
    state.keep_unacked(server, &session).await;
    server.protection.unbind_account(session.jid.user());
    crate::dispatch::session_ended(server, &session).await;
    drop(state);
    mailbox.return_memory();
    ending.set(ending.get() - 1);
}

impl crate::feature::State for Parking {
    fn new(_config: &crate::config::Config, _store: &crate::store::Store) -> Self {
        Parking::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanzas(text: &str) -> Vec<&str> {
        top_level_stanzas(text.as_bytes())
            .into_iter()
            .map(|s| std::str::from_utf8(s).unwrap())
            .collect()
    }

    #[test]
    fn finds_stanzas_and_skips_nonzas() {
        let out = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='x'>\
                   <a xmlns='urn:xmpp:sm:3' h='1'/><message to='a@h/r' from='b@h/x>y'>\
                   <body>1 > 0 &lt;b/></body><x/></message><iq type='result' id='i'/>\
                   <stream:features><sm xmlns='urn:xmpp:sm:3'/></stream:features>\
                   <presence from=\"c@h/'q'\"/><r xmlns='urn:xmpp:sm:3'/></stream:stream>";
        assert_eq!(
            stanzas(out),
            vec![
                "<message to='a@h/r' from='b@h/x>y'><body>1 > 0 &lt;b/></body><x/></message>",
                "<iq type='result' id='i'/>",
                "<presence from=\"c@h/'q'\"/>",
            ]
        );
        assert!(stanzas("<stream:error><conflict/></stream:error></stream:stream>").is_empty());
    }

    #[test]
    fn acks_drop_what_they_cover_and_wrap() {
        let mut state = State {
            acked: u32::MAX - 1,
            ..State::default()
        };
        state
            .record(b"<iq id='1'/><iq id='2'/><iq id='3'/>", 10, 100)
            .unwrap();
        assert_eq!(state.unacked().count(), 3);
        assert_eq!(state.unacked_bytes(), 36);
        state.acknowledge(u32::MAX).unwrap();
        assert_eq!(
            state.unacked().collect::<Vec<_>>(),
            ["<iq id='2'/>", "<iq id='3'/>"]
        );
        assert_eq!(state.acknowledge(2), Err(TooHigh));
        state.acknowledge(1).unwrap();
        assert!(!state.has_unacked());
        assert_eq!(state.unacked_bytes(), 0);
        assert_eq!(state.record(b"<iq/><iq/>", 1, 100), Err(Overflow::Stanzas));
    }

    #[test]
    fn unacknowledged_bytes_are_bounded() {
        let mut state = State::default();
        state.record(b"<iq id='1'/>", 10, 20).unwrap();
        assert_eq!(state.record(b"<iq id='2'/>", 10, 20), Err(Overflow::Bytes));
        state.acknowledge(1).unwrap();
        assert_eq!(state.unacked_bytes(), 12);
    }

    #[test]
    fn asks_every_few_stanzas_or_when_idle() {
        let mut state = State::default();
        let mut out = String::new();
        state.record(b"<iq/>", 10, 100).unwrap();
        let now = Instant::now();
        state.request_if_due(&mut out, now);
        assert_eq!(out, "");
        state.request_if_due(&mut out, now + REQUEST_IDLE);
        assert_eq!(out, "<r xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(state.request_deadline(), None);
        out.clear();
        state.record(b"<iq/><iq/><iq/><iq/><iq/>", 10, 100).unwrap();
        state.request_if_due(&mut out, Instant::now());
        assert_eq!(out, "<r xmlns='urn:xmpp:sm:3'/>");
    }

    #[test]
    fn only_messages_offline_storage_takes_are_kept() {
        assert!(storable(
            "<message to='a@h/r' type='chat'><body>hi</body></message>"
        ));
        assert!(!storable(
            "<message to='a@h/r' type='groupchat'><body>hi</body></message>"
        ));
        assert!(!storable("<presence to='a@h/r'/>"));
        assert!(!storable("<message to='a@h/r'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"));
    }
}
