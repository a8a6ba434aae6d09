//! Client-to-server streams (RFC 6120): one task per connection walks the
//! negotiation (TLS → SASL → bind) and then hands each stanza to
//! [`crate::dispatch`]. This module owns the connection state machine, the
//! stream features offered at each stage and stream errors; it never
//! decides where a stanza is delivered.

mod auth;
mod guard;
mod managed;
mod transport;

pub use transport::Transport;

use crate::dispatch;
use crate::feature::{Deferred, StreamStage};
use crate::jid::Jid;
use crate::router::{Mailbox, Outbound, Session};
use crate::sasl::CHANNEL_BINDING_TYPE;
use crate::server::Server;
use crate::stanza::{self, Kind, Rejection, Stanza, StanzaError, StreamCondition};
use crate::xml::{self, Esc, Event, Framer, FramerError, StreamHeader, NS_CLIENT};
use crate::{csi, offline, register};
use log::{debug, info};
use smol::future;
use smol::net::TcpStream;
use smol::Timer;
use std::cell::Cell;
use std::fmt::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use transport::ReadError;

/// How long and how much a closing stream still reads and drops.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// XEP-0440 SASL channel-binding type capability.
pub const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const NS_IQ_AUTH: &str = "jabber:iq:auth";
/// XEP-0478: the stanza size limit, told to the client after authentication.
pub const NS_LIMITS: &str = "urn:xmpp:stream-limits:0";

/// Queued stanzas written together: one TLS record's worth of plaintext.
const WRITE_BATCH_BYTES: usize = 16 * 1024;

/// A session that once held this much for its client leaves enough freed heap
/// behind to hand back to the system as soon as it ends, whoever else stays
/// connected (glibc keeps freed pages otherwise, see [`crate::memory`]).
const LARGE_SESSION_BYTES: usize = 256 * 1024;

/// Where a connection is in RFC 6120's negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Plain TCP: STARTTLS is offered (and required by default).
    Plain,
    /// TLS up, not yet authenticated.
    Secured,
    /// SASL succeeded; the restarted stream offers resource binding.
    Authenticated,
    /// A resource is bound: stanzas flow.
    Bound,
}

/// Why the loop stopped.
enum End {
    /// We sent (or must send) a stream error.
    Error(StreamCondition, Option<&'static str>),
    /// The client closed its stream; we answer with ours.
    ClientClosed,
    /// The socket is gone (reset, EOF, write failure).
    Gone,
}

/// What woke the connection task.
enum Wake {
    Read(Result<usize, ReadError>),
    Mail(Outbound),
    Deadline,
    /// A rate-limit pause is over: read again.
    Resume,
}

struct Connection {
    server: Rc<Server>,
    peer: SocketAddr,
    transport: Transport,
    framer: Framer,
    /// The client's current stream header (namespace context for stanzas).
    header: Option<StreamHeader>,
    /// Our header for the current stream has been written.
    header_sent: bool,
    stage: Stage,
    /// A pre-1.0 stream (no `version`): no features, legacy auth only.
    legacy_stream: bool,
    out: String,
    mailbox: Rc<Mailbox>,
    sasl: Option<auth::SaslState>,
    auth_failures: u8,
    /// The authenticated account's localpart.
    user: Option<Box<str>>,
    session: Option<Rc<Session>>,
    /// XEP-0352: what waits while the client says it is inactive.
    csi: csi::Buffer,
    guard: guard::Guard,
    /// XEP-0198, once the client enabled it.
    sm: Option<Box<crate::sm::State>>,
    /// This connection's entry in the server's registry.
    conn_id: u64,
    /// Input already waited for unwritten replies once (logged once).
    backlog_logged: bool,
    /// Offline messages wait until the client acknowledges enough (XEP-0198).
    offline_pending: bool,
}

/// Runs one client connection to its end.
pub async fn serve(server: Rc<Server>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let keepalive = &server.config().keepalive;
    let timeout = Duration::from_secs(keepalive.ping_timeout_secs.into());
    if let Err(e) = transport::abort_unacknowledged_after(&tcp, timeout) {
        debug!("{peer}: TCP_USER_TIMEOUT not set: {e}");
    }
    let mailbox = Rc::new(Mailbox::default());
    let conn_id = server.register_connection(mailbox.clone());
    let limits = &server.config().limits;
    let framer = Framer::new(xml::Limits {
        max_stanza: preauth_stanza_bytes(limits),
        max_depth: limits.max_depth.into(),
        max_attributes: limits.max_attributes,
        max_namespaces: limits.max_namespaces,
        max_namespaces_in_scope: limits.max_namespaces_in_scope,
    });
    let mut conn = Connection {
        server: server.clone(),
        peer,
        transport: Transport::Plain(tcp),
        framer,
        header: None,
        header_sent: false,
        stage: Stage::Plain,
        legacy_stream: false,
        out: String::new(),
        mailbox,
        sasl: None,
        auth_failures: 0,
        user: None,
        session: None,
        csi: csi::Buffer::default(),
        guard: guard::Guard::new(&server.protection.rate(), Instant::now()),
        sm: None,
        conn_id,
        backlog_logged: false,
        offline_pending: false,
    };
    let deadline = Instant::now() + Duration::from_secs(limits.auth_timeout_secs.into());
    let refusal = match server.protection.admit(limits, peer.ip(), conn_id) {
        Ok(evict) => {
            if let Some(oldest) = evict {
                server.evict_unauthenticated(oldest);
            }
            None
        }
        Err(refusal) => Some(refusal),
    };
    let admitted = refusal.is_none();
    let mut parked = None;
    if !direct_tls || conn.direct_tls(deadline).await {
        let end = match refusal {
            Some(refusal) => {
                if let Some(unlogged) = server.protection.refusal_to_log(Instant::now()) {
                    info!(
                        "{peer}: connection refused: {} ({unlogged} more refused since the last report)",
                        refusal.text
                    );
                }
                End::Error(refusal.condition, Some(refusal.text))
            }
            None => conn.run(deadline).await,
        };
        parked = conn.finish(end).await;
    }
    if admitted {
        server
            .protection
            .release(peer.ip(), conn_id, conn.guard.authenticated);
    }
    server.unregister_connection(conn_id);
    let mailbox = conn.mailbox.clone();
    drop(conn);
    return_memory(&mailbox);
    if let Some((session, state, csi)) = parked {
        crate::sm::park(&server, session, state, csi).await;
    }
}

/// After a session that held a lot for its client (its connection's buffers,
/// or a parked session's queues) is gone: the freed heap goes back at once.
pub(crate) fn return_memory(mailbox: &Mailbox) {
    if mailbox.peak_bytes() >= LARGE_SESSION_BYTES {
        crate::memory::trim_heap();
    }
}

impl Connection {
    /// XEP-0368: TLS from the first byte, within the auth deadline.
    async fn direct_tls(&mut self, deadline: Instant) -> bool {
        let config = self.server.tls_config();
        let transport = &mut self.transport;
        let peer = self.peer;
        match future::or(async { Some(transport.start_tls(config).await) }, async {
            Timer::at(deadline).await;
            None
        })
        .await
        {
            Some(Ok(())) => {
                self.stage = Stage::Secured;
                true
            }
            Some(Err(e)) => {
                debug!("{peer}: direct TLS handshake failed: {e}");
                false
            }
            None => {
                debug!("{peer}: direct TLS handshake timed out");
                false
            }
        }
    }

    async fn flush_out(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.out);
        // On overflow they are unacknowledged already: the no-loss rule has them.
        self.record_sent(out.as_bytes())?;
        if let Some(sm) = &mut self.sm {
            sm.request_if_due(&mut out, Instant::now());
        }
        let result = self.write_raw(out.as_bytes()).await;
        if out.capacity() <= 4096 {
            self.out = out;
            self.out.clear();
        }
        result
    }

    async fn run(&mut self, auth_deadline: Instant) -> End {
        loop {
            if let Some(until) = self.guard.hold_until.take() {
                Timer::at(until).await;
                // Then whatever the client pipelined behind the held reply.
                let step = match self.flush_out().await {
                    Ok(()) => self.process_input().await,
                    Err(end) => Err(end),
                };
                if let Err(end) = step {
                    return end;
                }
                continue;
            }
            if let Err(end) = self.flush_out().await {
                return end;
            }
            self.publish_held(0);
            let wake = {
                let (paused_until, input_waiting) =
                    (self.guard.paused_until, self.guard.input_waiting);
                let mut next_deadline = self.next_deadline(auth_deadline);
                if let Some(ask) = self.sm.as_ref().and_then(|sm| sm.request_deadline()) {
                    next_deadline = next_deadline.min(ask);
                }
                let transport = &mut self.transport;
                let framer = &mut self.framer;
                let mailbox = &self.mailbox;
                let read = async {
                    match paused_until {
                        Some(until) => {
                            Timer::at(until).await;
                            Wake::Resume
                        }
                        // The pause was paid back by the time the read was charged.
                        None if input_waiting => Wake::Resume,
                        None => {
                            future::poll_fn(|cx| transport.poll_fill(cx, framer).map(Wake::Read))
                                .await
                        }
                    }
                };
                let mail = future::poll_fn(|cx| mailbox.poll_recv(cx).map(Wake::Mail));
                let deadline = async {
                    Timer::at(next_deadline).await;
                    Wake::Deadline
                };
                future::or(mail, future::or(read, deadline)).await
            };
            let step = match wake {
                Wake::Read(Ok(0)) => return End::Gone,
                Wake::Read(Err(ReadError::Io(error))) => return self.lost(&error),
                Wake::Read(Ok(n)) => match self.process_input().await {
                    Ok(()) => self.charge_input(n),
                    Err(end) => Err(end),
                },
                Wake::Read(Err(ReadError::Xml(e))) => Err(framer_end(e)),
                Wake::Resume => match self.on_resume() {
                    Ok(()) => self.process_input().await,
                    Err(end) => Err(end),
                },
                Wake::Mail(Outbound::Stanza {
                    xml,
                    storable,
                    hold,
                }) => {
                    let (csi, unwritten) = (&mut self.csi, &mut self.guard.unwritten);
                    let mut take = |xml: Rc<str>, storable: bool, hold, out: &mut String| {
                        if storable {
                            unwritten.push(xml.clone());
                        }
                        csi.deliver(xml, hold, out);
                    };
                    take(xml, storable, hold, &mut self.out);
                    self.mailbox
                        .take_queued(&mut self.out, WRITE_BATCH_BYTES, take);
                    Ok(())
                }
                Wake::Mail(Outbound::Close(condition)) => Err(End::Error(condition, None)),
                Wake::Mail(Outbound::OfflineWaiting) => match self.session.clone() {
                    Some(session) if session.available.get() => {
                        self.complete(&session, Deferred::FlushOffline).await
                    }
                    _ => Ok(()),
                },
                Wake::Deadline => {
                    if let Some(sm) = &mut self.sm {
                        sm.request_if_due(&mut self.out, Instant::now());
                    }
                    self.on_deadline(auth_deadline)
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Handles every complete event the framer holds.
    async fn process_input(&mut self) -> Result<(), End> {
        loop {
            // A held login failure or a rate-limit pause: the rest waits. A close is queued
            // (conflict, account deleted, shutdown): the rest is not acted on. Replies not
            // yet written fill the session's budget: the rest waits until they are.
            if self.guard.hold_until.is_some()
                || self.guard.paused_until.is_some()
                || self.mailbox.is_closing()
                || self.output_backlog()
            {
                self.guard.input_waiting = true;
                return Ok(());
            }
            let wrapped = match self.framer.next() {
                Err(e) => return Err(framer_end(e)),
                Ok(None) => {
                    self.guard.input_waiting = false;
                    return Ok(());
                }
                Ok(Some(Event::Whitespace)) => continue,
                Ok(Some(Event::StreamClose)) => return Err(End::ClientClosed),
                Ok(Some(Event::StreamOpen(header))) => {
                    self.on_stream_open(header)?;
                    continue;
                }
                Ok(Some(Event::Stanza(text))) => match &self.header {
                    Some(header) => header.wrap(text),
                    None => return Err(End::Error(StreamCondition::BadFormat, None)),
                },
            };
            self.charge_stanza()?;
            self.on_element(&wrapped).await?;
            // STARTTLS and SASL success restart the stream: anything the
            // client pipelined behind them belongs to the old one.
            if self.header.is_none() {
                return Ok(());
            }
        }
    }

    /// The session's byte budget: everything queued or held for its client.
    fn budget(&self) -> usize {
        self.server.config().limits.outbound_queue_bytes as usize
    }

    /// Tells the mailbox what this connection holds for the client besides
    /// its queue: output not yet written (`in_flight` of it taken out for a
    /// write) and stanzas not yet acknowledged.
    fn publish_held(&self, in_flight: usize) {
        let unacked = self.sm.as_ref().map_or(0, |sm| sm.unacked_bytes());
        self.mailbox.set_held(self.out.len() + in_flight + unacked);
    }

    /// Back-pressure on a client that asks for more than it reads: no more
    /// input is handled while unwritten output fills half the budget (the
    /// other half stays free for stanzas routed to it), or while output and
    /// unacknowledged stanzas together would overflow it. The output is
    /// written first; a client that does not read it is cut off by the write
    /// timeout, one that reads but never acknowledges by [`Self::record_sent`].
    fn output_backlog(&mut self) -> bool {
        let budget = self.budget();
        let unwritten = self.out.len() + self.mailbox.queued_bytes();
        let unacked = self.sm.as_ref().map_or(0, |sm| sm.unacked_bytes());
        let over = unwritten >= budget / 2 || unwritten + unacked > budget;
        if over && !self.backlog_logged {
            self.backlog_logged = true;
            info!(
                "{}: {} bytes of output waiting, input paused until it is written",
                self.who(),
                unwritten + unacked
            );
        }
        over
    }

    /// An ack made room: offline messages that waited for it follow.
    fn offline_after_ack(&mut self) {
        let unacked = self.sm.as_ref().map_or(0, |sm| sm.unacked_bytes());
        if self.offline_pending && unacked < self.budget() / 2 {
            self.offline_pending = false;
            self.mailbox.offline_waiting();
        }
    }

    fn on_stream_open(&mut self, header: StreamHeader) -> Result<(), End> {
        let ours = &self.server.config().domain;
        let result = check_header(&header, ours);
        self.legacy_stream = header.version.is_none();
        self.header = Some(header);
        self.write_stream_header();
        result?;
        if !self.legacy_stream {
            self.write_features();
        }
        Ok(())
    }

    fn write_stream_header(&mut self) {
        let server = &self.server;
        let id = server.random_id();
        let _ = write!(
            self.out,
            "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{}' id='{id}' from='{}'",
            xml::NS_STREAMS,
            Esc(&server.config().domain)
        );
        if let Some(from) = self.header.as_ref().and_then(|h| h.from.as_deref()) {
            if Jid::parse(from).is_ok() {
                let _ = write!(self.out, " to='{}'", Esc(from));
            }
        }
        if !self.legacy_stream {
            self.out.push_str(" version='1.0'");
        }
        self.out.push_str(" xml:lang='en'>");
        self.header_sent = true;
    }

    /// RFC 6120 §4.3.2: what this stage offers.
    fn write_features(&mut self) {
        let auth = &self.server.config().auth;
        self.out.push_str("<stream:features>");
        match self.stage {
            Stage::Plain => {
                let _ = write!(self.out, "<starttls xmlns='{NS_TLS}'>");
                if auth.require_encryption {
                    self.out.push_str("<required/></starttls>");
                } else {
                    self.out.push_str("</starttls>");
                    self.write_mechanisms();
                }
            }
            Stage::Secured => {
                self.write_mechanisms();
                self.write_feature_declarations(StreamStage::Secured);
            }
            Stage::Authenticated => {
                let _ = write!(
                    self.out,
                    "<bind xmlns='{NS_BIND}'/><session xmlns='{NS_SESSION}'><optional/></session>"
                );
                self.write_feature_declarations(StreamStage::Authenticated);
                // XEP-0478: the stanza limit, and how long silence lasts
                // before the keepalive ping.
                let _ = write!(
                    self.out,
                    "<limits xmlns='{NS_LIMITS}'><max-bytes>{}</max-bytes><idle-seconds>{}</idle-seconds></limits>",
                    self.server.config().limits.max_stanza_bytes,
                    self.server.config().keepalive.idle_secs
                );
            }
            Stage::Bound => {}
        }
        self.out.push_str("</stream:features>");
    }

    /// The stream features the features declare for this stage, in their order.
    fn write_feature_declarations(&mut self, stage: StreamStage) {
        let config = self.server.config();
        for write in crate::feature::enabled(self.server.features(), &config)
            .filter_map(|f| f.stream_features)
        {
            write(&self.server, stage, &mut self.out);
        }
    }

    fn write_mechanisms(&mut self) {
        let _ = write!(self.out, "<mechanisms xmlns='{NS_SASL}'>");
        let binds = self.transport.channel_binding().is_some();
        for mechanism in
            auth::offered_mechanisms(&self.server.config().auth, self.transport.is_tls(), binds)
        {
            let _ = write!(self.out, "<mechanism>{}</mechanism>", mechanism.name());
        }
        self.out.push_str("</mechanisms>");
        if binds {
            // XEP-0440 §2: which channel-binding types the -PLUS mechanisms accept.
            let _ = write!(
                self.out,
                "<sasl-channel-binding xmlns='{NS_SASL_CB}'>\
                 <channel-binding type='{CHANNEL_BINDING_TYPE}'/></sasl-channel-binding>"
            );
        }
        if auth::legacy_auth_allowed(&self.server.config().auth, self.transport.is_tls()) {
            self.out
                .push_str("<auth xmlns='http://jabber.org/features/iq-auth'/>");
        }
    }

    /// Starts a fresh stream: the client sends a new header next.
    fn restart_stream(&mut self) {
        self.framer.reset();
        self.header = None;
        self.header_sent = false;
        self.set_stanza_limit();
    }

    /// RFC 6120 §13.12: an unauthenticated peer gets the small stanza
    /// limit, so what it can make the parser chew on stays small.
    fn set_stanza_limit(&mut self) {
        let limits = &self.server.config().limits;
        self.framer.set_max_stanza(match self.stage {
            Stage::Plain | Stage::Secured => preauth_stanza_bytes(limits),
            Stage::Authenticated | Stage::Bound => limits.max_stanza_bytes as usize,
        });
    }

    async fn on_element(&mut self, wrapped: &str) -> Result<(), End> {
        let doc = xml::parse_stanza(wrapped).map_err(framer_end)?;
        let node = xml::stanza_element(&doc).map_err(framer_end)?;
        let ns = node.tag_name().namespace();
        match self.stage {
            Stage::Plain if ns == Some(NS_TLS) && node.tag_name().name() == "starttls" => {
                let _ = write!(self.out, "<proceed xmlns='{NS_TLS}'/>");
                let proceed = std::mem::take(&mut self.out);
                if self.write_bytes(proceed.as_bytes()).await.is_err() {
                    return Err(End::Gone);
                }
                if let Err(e) = self.transport.start_tls(self.server.tls_config()).await {
                    debug!("{}: STARTTLS handshake failed: {e}", self.peer);
                    return Err(End::Gone);
                }
                self.stage = Stage::Secured;
                self.restart_stream();
                Ok(())
            }
            Stage::Plain | Stage::Secured if ns == Some(NS_SASL) => {
                if self.stage == Stage::Plain && self.server.config().auth.require_encryption {
                    // RFC 6120 §6.5.6: refuse, the client may still STARTTLS.
                    // Counted like any failure, so repeating it is slowed.
                    let _ = write!(
                        self.out,
                        "<failure xmlns='{NS_SASL}'><encryption-required/></failure>"
                    );
                    self.delay_login_failure(None);
                    return self.count_failure();
                }
                self.on_sasl(node)
            }
            // XEP-0198 §3: `<enable/>` before authentication is answered
            // with `<failed/>` (by `on_enable`), not a stream error.
            Stage::Plain | Stage::Secured
                if ns == Some(crate::sm::NS)
                    && node.tag_name().name() == "enable"
                    && self.server.config().sm.enabled =>
            {
                self.on_sm(node).await
            }
            Stage::Plain | Stage::Secured => {
                let stanza = Stanza::parse(node);
                match stanza {
                    Ok(iq) if auth::is_legacy_auth(&iq) => {
                        if !auth::legacy_auth_allowed(
                            &self.server.config().auth,
                            self.transport.is_tls(),
                        ) {
                            return Err(End::Error(StreamCondition::NotAuthorized, None));
                        }
                        self.on_legacy_auth(&iq)
                    }
                    Ok(iq) if self.stage == Stage::Secured && register::is_register(&iq) => {
                        let server = self.server.clone();
                        register::before_auth(&server, self.peer.ip(), &iq, &mut self.out).await;
                        Ok(())
                    }
                    _ => Err(End::Error(StreamCondition::NotAuthorized, None)),
                }
            }
            Stage::Authenticated | Stage::Bound
                if ns == Some(crate::sm::NS) && self.server.config().sm.enabled =>
            {
                self.on_sm(node).await
            }
            Stage::Authenticated => {
                let stanza = Stanza::parse(node);
                match stanza {
                    Ok(iq) if iq.kind == Kind::Iq && iq.child("bind", NS_BIND).is_some() => {
                        self.on_bind(&iq)
                    }
                    _ => Err(End::Error(StreamCondition::NotAuthorized, None)),
                }
            }
            Stage::Bound
                if ns == Some(csi::NS)
                    && matches!(node.tag_name().name(), "active" | "inactive") =>
            {
                let active = node.tag_name().name() == "active";
                self.csi.set_active(active, &mut self.out);
                Ok(())
            }
            Stage::Bound => {
                self.on_established(node).await?;
                // XEP-0198 §4: handled, and durable or delivered, by now.
                if let Some(sm) = &mut self.sm {
                    sm.handled = sm.handled.wrapping_add(1);
                }
                Ok(())
            }
        }
    }

    async fn on_established(&mut self, node: roxmltree::Node<'_, '_>) -> Result<(), End> {
        let Some(session) = self.session.clone() else {
            return Err(End::Error(StreamCondition::InternalServerError, None));
        };
        let stanza = match Stanza::parse(node) {
            Ok(stanza) => stanza,
            Err(Rejection::Stream(condition)) => return Err(End::Error(condition, None)),
            Err(Rejection::Stanza {
                kind,
                id,
                condition,
                is_error,
            }) => {
                if !is_error {
                    let domain = &self.server.config().domain;
                    stanza::write_error_reply(
                        &mut self.out,
                        kind,
                        id,
                        domain,
                        session.jid.as_str(),
                        &StanzaError::new(condition),
                    );
                }
                return Ok(());
            }
        };
        self.note_keepalive_support(&stanza);
        // RFC 6120 §8.1.2.1: a client may only name itself as sender.
        if let Some(from) = &stanza.from {
            if *from != session.jid && *from != session.jid.bare() {
                return Err(End::Error(StreamCondition::InvalidFrom, None));
            }
        }
        let deferred = dispatch::handle(&self.server, &session, &stanza, &mut self.out);
        match deferred {
            Deferred::None => Ok(()),
            Deferred::CloseStream(condition) => Err(End::Error(condition, None)),
            deferred => {
                // Replies so far go out first: they answer earlier stanzas.
                if !self.out.is_empty() {
                    let out = std::mem::take(&mut self.out);
                    if self.write_bytes(out.as_bytes()).await.is_err() {
                        return Err(End::Gone);
                    }
                }
                self.complete(&session, deferred).await
            }
        }
    }

    /// Finishes work that waits for the disk, keeping the stream's order.
    async fn complete(&mut self, session: &Session, deferred: Deferred) -> Result<(), End> {
        match deferred {
            Deferred::None => Ok(()),
            Deferred::CloseStream(condition) => Err(End::Error(condition, None)),
            Deferred::Reply(task) => {
                let reply = task.await;
                self.out.push_str(&reply);
                Ok(())
            }
            Deferred::StoreOffline(pending) => {
                pending.store(&self.server, &mut self.out).await;
                Ok(())
            }
            Deferred::FlushOffline => {
                let user = session.jid.user();
                // Batches leave the budget room: with XEP-0198 at most half of it waits for
                // acks, and the next batch waits for the client's ack when it would not fit.
                let unacked = self.sm.as_ref().map_or(0, |sm| sm.unacked_bytes());
                let room = (self.budget() / 2).saturating_sub(unacked);
                if room == 0 {
                    self.offline_pending = true;
                    return Ok(());
                }
                let Some(batch) = offline::take(&self.server, user, room) else {
                    return Ok(());
                };
                // Removed from the store only once written to this session.
                if self.write_bytes(batch.xml.as_bytes()).await.is_err() {
                    offline::release(&self.server, user);
                    return Err(End::Gone);
                }
                offline::acknowledge(&self.server, batch).await;
                Ok(())
            }
        }
    }

    fn bind_session(
        &mut self,
        resource: Option<&str>,
    ) -> Result<Rc<Session>, stanza::StanzaCondition> {
        let server = &self.server;
        let user = self.user.as_deref().unwrap_or_default();
        let resource = match resource.map(str::trim) {
            Some(r) if !r.is_empty() => r.to_owned(),
            _ => server.random_id(),
        };
        let jid = Jid::from_parts(Some(user), &server.config().domain, Some(&resource))
            .ok()
            .and_then(crate::jid::SessionJid::new)
            .ok_or(stanza::StanzaCondition::BadRequest)?;
        let session = Rc::new(Session {
            id: server.next_id(),
            jid,
            mailbox: self.mailbox.clone(),
            available: Cell::new(false),
            priority: Cell::new(0),
            interested: Cell::new(false),
            presence: Default::default(),
            carbons: Cell::new(false),
        });
        if let Some(old) = server.router.borrow_mut().bind(session.clone()) {
            info!(
                "{}: resource conflict, replacing the older session",
                old.jid
            );
            old.mailbox.close(StreamCondition::Conflict);
        }
        let user = session.jid.user();
        server.protection.bind_account(user, Instant::now());
        info!("{}: session bound from {}", session.jid, self.peer);
        self.session = Some(session.clone());
        self.stage = Stage::Bound;
        // XEP-0078 binds without a stream restart.
        self.set_stanza_limit();
        Ok(session)
    }

    fn on_bind(&mut self, iq: &Stanza) -> Result<(), End> {
        let resource = iq
            .child("bind", NS_BIND)
            .and_then(|bind| stanza::child_text(bind, "resource", NS_BIND));
        let domain = self.server.config().domain.clone();
        match self.bind_session(resource) {
            Ok(session) => {
                stanza::open_reply(&mut self.out, Kind::Iq, "result", iq.id, "", "");
                let _ = write!(
                    self.out,
                    "><bind xmlns='{NS_BIND}'><jid>{}</jid></bind></iq>",
                    Esc(session.jid.as_str())
                );
            }
            Err(condition) => {
                stanza::write_error_reply(
                    &mut self.out,
                    Kind::Iq,
                    iq.id,
                    &domain,
                    "",
                    &StanzaError::new(condition),
                );
            }
        }
        Ok(())
    }

    /// Ends the connection: stream error or close, then the no-loss rule
    /// for anything still queued, then the registry. A resumable session
    /// (XEP-0198) whose connection was lost is returned to be parked instead.
    async fn finish(&mut self, end: End) -> Option<Parkable> {
        let lost = matches!(
            end,
            End::Gone | End::Error(StreamCondition::ConnectionTimeout, _)
        );
        if self.sm.is_some() {
            // Unacknowledged from here on, whether the write below works or not.
            let out = std::mem::take(&mut self.out);
            let _ = self.record_sent(out.as_bytes());
            self.out = out;
            self.guard.unwritten.clear();
        }
        match end {
            End::Error(condition, text) => {
                if !self.header_sent {
                    self.write_stream_header();
                }
                info!("{}: stream error {}", self.peer, condition.name());
                condition.write_close(text, &mut self.out);
            }
            End::ClientClosed => {
                if !self.header_sent {
                    self.write_stream_header();
                }
                self.out.push_str("</stream:stream>");
            }
            End::Gone => self.out.clear(),
        }
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let write = self.transport.write_all(out.as_bytes());
            // A peer that does not read must not hold the task forever.
            let _ = future::or(async { write.await.ok() }, async {
                Timer::after(Duration::from_secs(5)).await;
                None
            })
            .await;
            self.transport.shutdown().await;
            // Unread input would turn our close into a TCP reset that can
            // destroy the stream error before the client reads it. Not when
            // overloaded: then sockets must be freed at once.
            let limit = self.server.config().limits.max_connections as usize;
            if self.server.connection_count() <= limit {
                self.transport.discard_input(LINGER_BYTES, LINGER).await;
            }
        }
        self.keep_unwritten().await;
        let session = self.session.take()?;
        let mut sm = self.sm.take();
        if let Some(state) = sm.take_if(|state| lost && state.id.is_some()) {
            return Some((session, state, std::mem::take(&mut self.csi)));
        }
        if let Some(state) = &mut sm {
            if let Some(id) = &state.id {
                self.server.state::<crate::sm::Parking>().forget(id);
            }
            state.keep_unacked(&self.server, &session).await;
        }
        let user = session.jid.user();
        self.server.protection.unbind_account(user);
        dispatch::session_ended(&self.server, &session).await;
        None
    }
}

/// A session to park for resumption: its counters and what CSI held.
type Parkable = (Rc<Session>, Box<crate::sm::State>, csi::Buffer);

/// RFC 6120 §4.7–4.8: namespace, version and host of a client's header.
fn check_header(header: &StreamHeader, domain: &str) -> Result<(), End> {
    if header.default_ns.as_deref() != Some(NS_CLIENT) {
        return Err(End::Error(StreamCondition::InvalidNamespace, None));
    }
    if let Some(version) = &header.version {
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        if major != Some(1) {
            return Err(End::Error(StreamCondition::UnsupportedVersion, None));
        }
    }
    if let Some(to) = &header.to {
        if !to.eq_ignore_ascii_case(domain) {
            return Err(End::Error(StreamCondition::HostUnknown, None));
        }
    }
    Ok(())
}

/// `limits.max_stanza_bytes_preauth`, never above the limit after login.
fn preauth_stanza_bytes(limits: &crate::config::Limits) -> usize {
    limits.max_stanza_bytes_preauth.min(limits.max_stanza_bytes) as usize
}

fn framer_end(e: FramerError) -> End {
    let condition = match e {
        FramerError::NotWellFormed => StreamCondition::NotWellFormed,
        FramerError::RestrictedXml => StreamCondition::RestrictedXml,
        FramerError::PolicyViolation => StreamCondition::PolicyViolation,
        FramerError::InvalidNamespace => StreamCondition::InvalidNamespace,
        FramerError::BadFormat => StreamCondition::BadFormat,
        FramerError::UnsupportedEncoding => StreamCondition::UnsupportedEncoding,
    };
    End::Error(condition, None)
}
