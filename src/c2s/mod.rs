//! Client-to-server streams (RFC 6120): one task per connection walks the
//! negotiation (TLS → SASL → bind) and then hands each stanza to
//! [`crate::dispatch`]. This module owns the client's negotiation on top of
//! the shared stream machinery in [`stream`]: the stages and what each has
//! established, the stream features offered at each stage and stream errors;
//! it never decides where a stanza is delivered.
//!
//! A [`Connection`] is a [`Stream`] (transport, framer, output, budget,
//! keepalive: what server-to-server and component streams will share) and a
//! [`Stage`] that carries its own data: the login attempts before
//! authentication, the account once authenticated, the bound session with
//! its XEP-0198 and XEP-0352 state once bound. A transition builds the next
//! stage from what it requires and replaces the old one, so no code can see
//! a stage without its data (the style of rustls's handshake states).

mod auth;
mod managed;

pub use crate::stream::transport::Transport;

use crate::dispatch::{self, NS_SESSION};
use crate::feature::{Deferred, StreamStage};
use crate::jid::{Jid, SessionJid};
use crate::router::{Mailbox, Outbound, Session};
use crate::sasl::CHANNEL_BINDING_TYPE;
use crate::server::Server;
use crate::stanza::{self, Kind, Rejection, Stanza, StanzaError, StreamCondition};
use crate::stream::guard::Probe;
use crate::stream::transport::ReadError;
use crate::stream::{framer_end, End, Input, Stream, Wake, Who};
use crate::xml::{self, Esc, StreamHeader, NS_CLIENT};
use crate::{csi, offline, register};
use log::{debug, info};
use smol::net::TcpStream;
use std::cell::Cell;
use std::fmt::{Display, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// XEP-0440 SASL channel-binding type capability.
pub const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_IQ_AUTH: &str = "jabber:iq:auth";
/// XEP-0478: the stanza size limit, told to the client after authentication.
pub const NS_LIMITS: &str = "urn:xmpp:stream-limits:0";

// Every connected client holds one `Connection` and one `Session` for as long
// as it stays, and a 512 MiB board is meant to hold thousands of them: a field
// added here is paid once per session. Grow these bounds deliberately. On
// 64-bit targets a Connection is 776 bytes (its heap buffers come on top) and a
// Session 128.
const _: () = assert!(std::mem::size_of::<Connection>() <= 800);
const _: () = assert!(std::mem::size_of::<Session>() <= 128);

/// Where a connection is in RFC 6120's negotiation, with what it established.
enum Stage {
    /// Plain TCP: STARTTLS is offered (and required by default).
    Plain(Login),
    /// TLS up, not yet authenticated.
    Secured(Login),
    /// SASL succeeded; the restarted stream offers resource binding.
    Authenticated(Authenticated),
    /// A resource is bound: stanzas flow.
    Bound(Bound),
}

/// A stream's login attempts before authentication (kept across STARTTLS).
#[derive(Default)]
struct Login {
    /// An unfinished SASL exchange.
    sasl: Option<auth::SaslState>,
    /// Failed negotiation steps so far (RFC 6120 §6.4.5 bounds them).
    failures: u8,
}

/// SASL succeeded; no resource is bound yet.
struct Authenticated {
    /// The account's localpart.
    user: Box<str>,
}

/// A bound session and what exists only for one.
struct Bound {
    session: Rc<Session>,
    /// XEP-0198, once the client enabled it.
    sm: Option<Box<crate::sm::State>>,
    /// XEP-0352: what waits while the client says it is inactive.
    csi: csi::Buffer,
    /// Offline messages wait until the client acknowledges enough (XEP-0198).
    offline_pending: bool,
}

/// A client stream: the shared stream part and the c2s stage on top.
struct Connection {
    stream: Stream,
    stage: Stage,
    /// A pre-1.0 stream (no `version`): no features, legacy auth only.
    legacy_stream: bool,
}

/// Runs one client connection to its end.
pub async fn serve(server: Rc<Server>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let keepalive = &server.config().keepalive;
    let timeout = Duration::from_secs(keepalive.ping_timeout_secs.into());
    if let Err(e) = crate::stream::transport::abort_unacknowledged_after(&tcp, timeout) {
        debug!("{peer}: TCP_USER_TIMEOUT not set: {e}");
    }
    let mailbox = Rc::new(Mailbox::default());
    let conn_id = server.register_connection(mailbox.clone());
    let limits = &server.config().limits;
    let max_stanza = preauth_stanza_bytes(limits);
    let mut conn = Connection {
        stream: Stream::new(server.clone(), tcp, peer, conn_id, mailbox, max_stanza),
        stage: Stage::Plain(Login::default()),
        legacy_stream: false,
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
    let end = if !direct_tls || conn.direct_tls(deadline).await {
        Some(match refusal {
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
        })
    } else {
        None
    };
    let authenticated = conn.stream.guard.authenticated;
    let mailbox = conn.stream.mailbox.clone();
    let parked = match end {
        Some(end) => conn.finish(end).await,
        None => {
            drop(conn);
            None
        }
    };
    if admitted {
        server.protection.release(peer.ip(), conn_id, authenticated);
    }
    server.unregister_connection(conn_id);
    mailbox.return_memory();
    if let Some((session, state, csi)) = parked {
        crate::sm::park(&server, session, state, csi).await;
    }
}

impl Stage {
    /// Past SASL (or legacy auth): the keepalive schedule and the full
    /// stanza limit apply, and the connection no longer counts as unauthenticated.
    fn authenticated(&self) -> bool {
        matches!(self, Stage::Authenticated(_) | Stage::Bound(_))
    }

    /// Whom to name in a log line: the address `peer`, and the account once known.
    fn who(&self, peer: SocketAddr) -> Who<'_> {
        let name: Option<&dyn Display> = match self {
            Stage::Plain(_) | Stage::Secured(_) => None,
            Stage::Authenticated(authenticated) => Some(&authenticated.user),
            Stage::Bound(bound) => return bound.who(peer),
        };
        Who { peer, name }
    }

    /// The bound session's address: rate limits charge its account.
    fn jid(&self) -> Option<&SessionJid> {
        match self {
            Stage::Bound(bound) => Some(&bound.session.jid),
            _ => None,
        }
    }

    /// Bytes written and not yet acknowledged (XEP-0198).
    fn unacked(&self) -> usize {
        match self {
            Stage::Bound(bound) => bound.unacked(),
            _ => 0,
        }
    }

    /// How a silent client is asked whether it is still there, asking only
    /// what it has shown it understands (`speaks_ping`: it used XEP-0199).
    fn probe(&self, speaks_ping: bool) -> Probe {
        let Stage::Bound(bound) = self else {
            // An unbound stream cannot take an iq; it only gets the grace period.
            return Probe::Grace;
        };
        if bound.sm.is_some() {
            // XEP-0198 §4: any client that enabled it must answer `<r/>`.
            return Probe::Ack;
        }
        let session = &bound.session;
        if speaks_ping || crate::pep::caps::wants(session, crate::ping::NS) {
            return Probe::Ping(session.jid.as_str().into());
        }
        Probe::Whitespace
    }
}

impl Connection {
    /// TLS is up (XEP-0368 or STARTTLS): the login state carries over.
    fn secured(&mut self) {
        if let Stage::Plain(login) = &mut self.stage {
            let login = std::mem::take(login);
            self.stage = Stage::Secured(login);
        }
    }

    /// Authentication succeeded as `user`: the stream restarts.
    fn authenticated(&mut self, user: Box<str>) {
        self.stage = Stage::Authenticated(Authenticated { user });
        self.restart_stream();
    }

    /// A session is bound: stanzas flow. XEP-0078 binds without a stream
    /// restart, so the stanza limit is raised here.
    fn bound(&mut self, session: Rc<Session>) {
        self.stage = Stage::Bound(Bound::new(session, csi::Buffer::default()));
        self.set_stanza_limit();
    }

    /// XEP-0368: TLS from the first byte, within the auth deadline.
    async fn direct_tls(&mut self, deadline: Instant) -> bool {
        let secured = self.stream.direct_tls(deadline).await;
        if secured {
            self.secured();
        }
        secured
    }

    fn publish_held(&self, in_flight: usize) {
        self.stream.publish_held(in_flight, self.stage.unacked());
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), End> {
        let who = self.stage.who(self.stream.peer);
        (self.stream.write_raw(bytes, self.stage.unacked(), who)).await
    }

    async fn flush_out(&mut self) -> Result<(), End> {
        if self.stream.out.is_empty() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.stream.out);
        if let Stage::Bound(bound) = &mut self.stage {
            // On overflow they are unacknowledged already: the no-loss rule has them.
            bound.record_sent(&self.stream, out.as_bytes())?;
            if let Some(sm) = &mut bound.sm {
                sm.request_if_due(&mut out, Instant::now());
            }
        }
        let result = self.write_raw(out.as_bytes()).await;
        if out.capacity() <= 4096 {
            self.stream.out = out;
            self.stream.out.clear();
        }
        result
    }

    async fn run(&mut self, auth_deadline: Instant) -> End {
        loop {
            if let Some(until) = self.stream.guard.hold_until.take() {
                smol::Timer::at(until).await;
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
            let mut next_deadline =
                (self.stream).next_deadline(self.stage.authenticated(), auth_deadline);
            if let Stage::Bound(Bound { sm: Some(sm), .. }) = &self.stage {
                if let Some(ask) = sm.request_deadline() {
                    next_deadline = next_deadline.min(ask);
                }
            }
            let step = match self.stream.wait(next_deadline).await {
                Wake::Read(Ok(0)) => return End::Gone,
                Wake::Read(Err(ReadError::Io(error))) => {
                    return self.stream.lost(&error, self.stage.who(self.stream.peer))
                }
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
                    let stage = &mut self.stage;
                    self.stream
                        .take_mail(xml, storable, hold, |xml, hold, out| match stage {
                            Stage::Bound(bound) => bound.csi.deliver(xml, hold, out),
                            _ => out.push_str(&xml),
                        });
                    Ok(())
                }
                Wake::Mail(Outbound::Close(condition)) => Err(End::Error(condition, None)),
                Wake::Mail(Outbound::OfflineWaiting) => match &mut self.stage {
                    Stage::Bound(bound) if bound.session.available.get() => {
                        let stream = &mut self.stream;
                        bound.complete(stream, Deferred::FlushOffline).await
                    }
                    _ => Ok(()),
                },
                Wake::Deadline => {
                    if let Stage::Bound(Bound { sm: Some(sm), .. }) = &mut self.stage {
                        sm.request_if_due(&mut self.stream.out, Instant::now());
                    }
                    self.on_deadline(auth_deadline)
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn on_deadline(&mut self, auth_deadline: Instant) -> Result<(), End> {
        let stage = &self.stage;
        let who = stage.who(self.stream.peer);
        (self.stream).on_deadline(auth_deadline, stage.authenticated(), who, |speaks_ping| {
            stage.probe(speaks_ping)
        })
    }

    fn charge_input(&mut self, bytes: usize) -> Result<(), End> {
        let stage = &self.stage;
        let who = stage.who(self.stream.peer);
        (self.stream).charge_input(bytes, stage.authenticated(), who, stage.jid())
    }

    fn charge_stanza(&mut self) -> Result<(), End> {
        let who = self.stage.who(self.stream.peer);
        self.stream.charge_stanza(who, self.stage.jid())
    }

    fn on_resume(&mut self) -> Result<(), End> {
        let who = self.stage.who(self.stream.peer);
        self.stream.on_resume(who, self.stage.jid())
    }

    /// Handles every complete event the framer holds.
    async fn process_input(&mut self) -> Result<(), End> {
        loop {
            // A held login failure or a rate-limit pause: the rest waits. A close is queued
            // (conflict, account deleted, shutdown): the rest is not acted on. Replies not
            // yet written fill the session's budget: the rest waits until they are.
            let guard = &self.stream.guard;
            if guard.hold_until.is_some()
                || guard.paused_until.is_some()
                || self.stream.mailbox.is_closing()
                || self.output_backlog()
            {
                self.stream.guard.input_waiting = true;
                return Ok(());
            }
            let wrapped = match self.stream.next_input()? {
                None => {
                    self.stream.guard.input_waiting = false;
                    return Ok(());
                }
                Some(Input::Open(header)) => {
                    self.on_stream_open(header)?;
                    continue;
                }
                Some(Input::Element(wrapped)) => wrapped,
            };
            self.charge_stanza()?;
            self.on_element(&wrapped).await?;
            // STARTTLS and SASL success restart the stream: anything the
            // client pipelined behind them belongs to the old one.
            if self.stream.header.is_none() {
                return Ok(());
            }
        }
    }

    fn output_backlog(&mut self) -> bool {
        let who = self.stage.who(self.stream.peer);
        self.stream.output_backlog(self.stage.unacked(), who)
    }

    fn on_stream_open(&mut self, header: StreamHeader) -> Result<(), End> {
        let ours = &self.stream.server.config().domain;
        let result = check_header(&header, ours);
        self.legacy_stream = header.version.is_none();
        self.stream.header = Some(header);
        self.write_stream_header();
        result?;
        if !self.legacy_stream {
            self.write_features();
        }
        Ok(())
    }

    fn write_stream_header(&mut self) {
        let stream = &mut self.stream;
        let id = stream.server.random_id();
        let _ = write!(
            stream.out,
            "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{}' id='{id}' from='{}'",
            xml::NS_STREAMS,
            Esc(&stream.server.config().domain)
        );
        if let Some(from) = stream.header.as_ref().and_then(|h| h.from.as_deref()) {
            if Jid::parse(from).is_ok() {
                let _ = write!(stream.out, " to='{}'", Esc(from));
            }
        }
        if !self.legacy_stream {
            stream.out.push_str(" version='1.0'");
        }
        stream.out.push_str(" xml:lang='en'>");
        stream.header_sent = true;
    }

    /// RFC 6120 §4.3.2: what this stage offers.
    fn write_features(&mut self) {
        let config = self.stream.server.config();
        let auth = &config.auth;
        self.stream.out.push_str("<stream:features>");
        match &self.stage {
            Stage::Plain(_) => {
                let _ = write!(self.stream.out, "<starttls xmlns='{NS_TLS}'>");
                if auth.require_encryption {
                    self.stream.out.push_str("<required/></starttls>");
                } else {
                    self.stream.out.push_str("</starttls>");
                    self.write_mechanisms();
                }
            }
            Stage::Secured(_) => {
                self.write_mechanisms();
                self.write_feature_declarations(StreamStage::Secured);
            }
            Stage::Authenticated(_) => {
                let _ = write!(
                    self.stream.out,
                    "<bind xmlns='{NS_BIND}'/><session xmlns='{NS_SESSION}'><optional/></session>"
                );
                self.write_feature_declarations(StreamStage::Authenticated);
                // XEP-0478: the stanza limit, and how long silence lasts
                // before the keepalive ping.
                let _ = write!(
                    self.stream.out,
                    "<limits xmlns='{NS_LIMITS}'><max-bytes>{}</max-bytes><idle-seconds>{}</idle-seconds></limits>",
                    config.limits.max_stanza_bytes,
                    config.keepalive.idle_secs
                );
            }
            Stage::Bound(_) => {}
        }
        self.stream.out.push_str("</stream:features>");
    }

    /// The stream features the features declare for this stage, in their order.
    fn write_feature_declarations(&mut self, stage: StreamStage) {
        let stream = &mut self.stream;
        let config = stream.server.config();
        for write in crate::feature::enabled(stream.server.features(), &config)
            .filter_map(|f| f.stream_features)
        {
            write(&stream.server, stage, &mut stream.out);
        }
    }

    fn write_mechanisms(&mut self) {
        let stream = &mut self.stream;
        let auth = &stream.server.config().auth;
        let _ = write!(stream.out, "<mechanisms xmlns='{NS_SASL}'>");
        let binds = stream.transport.channel_binding().is_some();
        for mechanism in auth::offered_mechanisms(auth, stream.transport.is_tls(), binds) {
            let _ = write!(stream.out, "<mechanism>{}</mechanism>", mechanism.name());
        }
        stream.out.push_str("</mechanisms>");
        if binds {
            // XEP-0440 §2: which channel-binding types the -PLUS mechanisms accept.
            let _ = write!(
                stream.out,
                "<sasl-channel-binding xmlns='{NS_SASL_CB}'>\
                 <channel-binding type='{CHANNEL_BINDING_TYPE}'/></sasl-channel-binding>"
            );
        }
        if auth::legacy_auth_allowed(auth, stream.transport.is_tls()) {
            (stream.out).push_str("<auth xmlns='http://jabber.org/features/iq-auth'/>");
        }
    }

    /// Starts a fresh stream: the client sends a new header next.
    fn restart_stream(&mut self) {
        self.stream.restart(self.stanza_limit());
    }

    fn set_stanza_limit(&mut self) {
        self.stream.framer.set_max_stanza(self.stanza_limit());
    }

    /// RFC 6120 §13.12: an unauthenticated peer gets the small stanza
    /// limit, so what it can make the parser chew on stays small.
    fn stanza_limit(&self) -> usize {
        let limits = &self.stream.server.config().limits;
        if self.stage.authenticated() {
            limits.max_stanza_bytes as usize
        } else {
            preauth_stanza_bytes(limits)
        }
    }

    /// RFC 6120 §5.4.2.3: `<proceed/>`, then the handshake, then a new stream.
    async fn on_starttls(&mut self) -> Result<(), End> {
        let _ = write!(self.stream.out, "<proceed xmlns='{NS_TLS}'/>");
        let proceed = std::mem::take(&mut self.stream.out);
        if self.write_raw(proceed.as_bytes()).await.is_err() {
            return Err(End::Gone);
        }
        self.stream.start_tls().await?;
        self.secured();
        self.restart_stream();
        Ok(())
    }

    async fn on_element(&mut self, wrapped: &str) -> Result<(), End> {
        let doc = xml::parse_stanza(wrapped).map_err(framer_end)?;
        let node = xml::stanza_element(&doc).map_err(framer_end)?;
        let ns = node.tag_name().namespace();
        let name = node.tag_name().name();
        let config = self.stream.server.config();
        let secured = matches!(self.stage, Stage::Secured(_));
        match &mut self.stage {
            Stage::Plain(_) if ns == Some(NS_TLS) && name == "starttls" => self.on_starttls().await,
            Stage::Plain(login) if ns == Some(NS_SASL) && config.auth.require_encryption => {
                // RFC 6120 §6.5.6: refuse, the client may still STARTTLS.
                // Counted like any failure, so repeating it is slowed.
                let _ = write!(
                    self.stream.out,
                    "<failure xmlns='{NS_SASL}'><encryption-required/></failure>"
                );
                self.stream.delay_login_failure(None);
                login.count_failure(self.stream.peer)
            }
            Stage::Plain(login) | Stage::Secured(login) if ns == Some(NS_SASL) => {
                if let Some(user) = login.on_sasl(&mut self.stream, node)? {
                    self.authenticated(user);
                }
                Ok(())
            }
            // XEP-0198 §3: `<enable/>` before authentication is answered
            // with `<failed/>` (by `on_enable`), not a stream error.
            Stage::Plain(_) | Stage::Secured(_)
                if ns == Some(crate::sm::NS) && name == "enable" && config.sm.enabled =>
            {
                self.on_sm(node).await
            }
            Stage::Plain(login) | Stage::Secured(login) => match Stanza::parse(node) {
                Ok(iq) if auth::is_legacy_auth(&iq) => {
                    if !auth::legacy_auth_allowed(&config.auth, self.stream.transport.is_tls()) {
                        return Err(End::Error(StreamCondition::NotAuthorized, None));
                    }
                    if let Some((user, resource)) = login.on_legacy_auth(&mut self.stream, &iq)? {
                        let bound = bind_session(&self.stream, &user, Some(resource))
                            .map(|session| self.bound(session));
                        auth::legacy_reply(&mut self.stream.out, &iq, &config.domain, bound);
                    }
                    Ok(())
                }
                Ok(iq) if secured && register::is_register(&iq) => {
                    let stream = &mut self.stream;
                    register::before_auth(&stream.server, stream.peer.ip(), &iq, &mut stream.out)
                        .await;
                    Ok(())
                }
                _ => Err(End::Error(StreamCondition::NotAuthorized, None)),
            },
            Stage::Authenticated(_) | Stage::Bound(_)
                if ns == Some(crate::sm::NS) && config.sm.enabled =>
            {
                self.on_sm(node).await
            }
            Stage::Authenticated(authenticated) => match Stanza::parse(node) {
                Ok(iq) if iq.kind == Kind::Iq && iq.child("bind", NS_BIND).is_some() => {
                    let resource = iq
                        .child("bind", NS_BIND)
                        .and_then(|bind| stanza::child_text(bind, "resource", NS_BIND));
                    match bind_session(&self.stream, &authenticated.user, resource) {
                        Ok(session) => {
                            let out = &mut self.stream.out;
                            stanza::open_reply(out, Kind::Iq, "result", iq.id, "", "");
                            let _ = write!(
                                out,
                                "><bind xmlns='{NS_BIND}'><jid>{}</jid></bind></iq>",
                                Esc(session.jid.as_str())
                            );
                            self.bound(session);
                        }
                        Err(condition) => stanza::write_error_reply(
                            &mut self.stream.out,
                            Kind::Iq,
                            iq.id,
                            &config.domain,
                            "",
                            &StanzaError::new(condition),
                        ),
                    }
                    Ok(())
                }
                _ => Err(End::Error(StreamCondition::NotAuthorized, None)),
            },
            Stage::Bound(bound) if ns == Some(csi::NS) && matches!(name, "active" | "inactive") => {
                bound.csi.set_active(name == "active", &mut self.stream.out);
                Ok(())
            }
            Stage::Bound(bound) => {
                bound.on_stanza(&mut self.stream, node).await?;
                // XEP-0198 §4: handled, and durable or delivered, by now.
                if let Some(sm) = &mut bound.sm {
                    sm.handled = sm.handled.wrapping_add(1);
                }
                Ok(())
            }
        }
    }

    /// Ends the connection: stream error or close, then the no-loss rule
    /// for anything still queued, then the registry. A resumable session
    /// (XEP-0198) whose connection was lost is returned to be parked instead.
    async fn finish(mut self, end: End) -> Option<Parkable> {
        let lost = matches!(
            end,
            End::Gone | End::Error(StreamCondition::ConnectionTimeout, _)
        );
        if let Stage::Bound(bound @ Bound { sm: Some(_), .. }) = &mut self.stage {
            // Unacknowledged from here on, whether the write below works or not.
            let out = std::mem::take(&mut self.stream.out);
            let _ = bound.record_sent(&self.stream, out.as_bytes());
            self.stream.out = out;
            self.stream.guard.unwritten.clear();
        }
        match end {
            End::Error(condition, text) => {
                if !self.stream.header_sent {
                    self.write_stream_header();
                }
                info!("{}: stream error {}", self.stream.peer, condition.name());
                condition.write_close(text, &mut self.stream.out);
            }
            End::PeerClosed => {
                if !self.stream.header_sent {
                    self.write_stream_header();
                }
                self.stream.out.push_str("</stream:stream>");
            }
            End::Gone => self.stream.out.clear(),
        }
        self.stream.close().await;
        let unwritten = std::mem::take(&mut self.stream.guard.unwritten);
        let Stage::Bound(bound) = self.stage else {
            return None;
        };
        bound.end(&self.stream.server, unwritten, lost).await
    }
}

impl Bound {
    /// A session, fresh from binding or taken over from a parked one with
    /// what its `csi` buffer held.
    fn new(session: Rc<Session>, csi: csi::Buffer) -> Bound {
        Bound {
            session,
            sm: None,
            csi,
            offline_pending: false,
        }
    }

    fn who(&self, peer: SocketAddr) -> Who<'_> {
        Who {
            peer,
            name: Some(&self.session.jid),
        }
    }

    fn unacked(&self) -> usize {
        self.sm.as_ref().map_or(0, |sm| sm.unacked_bytes())
    }

    /// Writes stanzas to the client, counting them for stream management.
    async fn write_bytes(&mut self, stream: &mut Stream, bytes: &[u8]) -> Result<(), End> {
        self.record_sent(stream, bytes)?;
        (stream.write_raw(bytes, self.unacked(), self.who(stream.peer))).await
    }

    /// A stanza from the client, for [`crate::dispatch`].
    async fn on_stanza(
        &mut self,
        stream: &mut Stream,
        node: roxmltree::Node<'_, '_>,
    ) -> Result<(), End> {
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
                    let domain = &stream.server.config().domain;
                    stanza::write_error_reply(
                        &mut stream.out,
                        kind,
                        id,
                        domain,
                        self.session.jid.as_str(),
                        &StanzaError::new(condition),
                    );
                }
                return Ok(());
            }
        };
        stream.note_keepalive_support(&stanza);
        // RFC 6120 §8.1.2.1: a client may only name itself as sender.
        let jid = &self.session.jid;
        if let Some(from) = &stanza.from {
            if *from != *jid && *from != jid.bare() {
                return Err(End::Error(StreamCondition::InvalidFrom, None));
            }
        }
        let deferred = dispatch::handle(&stream.server, &self.session, &stanza, &mut stream.out);
        match deferred {
            Deferred::None => Ok(()),
            Deferred::CloseStream(condition) => Err(End::Error(condition, None)),
            deferred => {
                // Replies so far go out first: they answer earlier stanzas.
                if !stream.out.is_empty() {
                    let out = std::mem::take(&mut stream.out);
                    if self.write_bytes(stream, out.as_bytes()).await.is_err() {
                        return Err(End::Gone);
                    }
                }
                self.complete(stream, deferred).await
            }
        }
    }

    /// Finishes work that waits for the disk, keeping the stream's order.
    async fn complete(&mut self, stream: &mut Stream, deferred: Deferred) -> Result<(), End> {
        match deferred {
            Deferred::None => Ok(()),
            Deferred::CloseStream(condition) => Err(End::Error(condition, None)),
            Deferred::Reply(task) => {
                let reply = task.await;
                stream.out.push_str(&reply);
                Ok(())
            }
            Deferred::StoreOffline(pending) => {
                pending.store(&stream.server, &mut stream.out).await;
                Ok(())
            }
            Deferred::FlushOffline => {
                let session = self.session.clone();
                let user = session.jid.user();
                // Batches leave the budget room: with XEP-0198 at most half of it waits for
                // acks, and the next batch waits for the client's ack when it would not fit.
                let room = (stream.budget() / 2).saturating_sub(self.unacked());
                if room == 0 {
                    self.offline_pending = true;
                    return Ok(());
                }
                let Some(batch) = offline::take(&stream.server, user, room) else {
                    return Ok(());
                };
                // Removed from the store only once written to this session.
                if self
                    .write_bytes(stream, batch.xml.as_bytes())
                    .await
                    .is_err()
                {
                    offline::release(&stream.server, user);
                    return Err(End::Gone);
                }
                offline::acknowledge(&stream.server, batch).await;
                Ok(())
            }
        }
    }

    /// An ack made room: offline messages that waited for it follow.
    fn offline_after_ack(&mut self, stream: &Stream) {
        if self.offline_pending && self.unacked() < stream.budget() / 2 {
            self.offline_pending = false;
            stream.mailbox.offline_waiting();
        }
    }

    /// The connection is gone: stanzas a failed write was carrying go
    /// offline (the no-loss rule), then the session is returned to be parked
    /// if it was `lost` and can be resumed, or ended.
    async fn end(
        self,
        server: &Rc<Server>,
        unwritten: Vec<Rc<str>>,
        lost: bool,
    ) -> Option<Parkable> {
        let Bound {
            session,
            mut sm,
            csi,
            ..
        } = self;
        let user = session.jid.user();
        for xml in unwritten {
            let _ = offline::keep(server, user, xml.as_bytes().to_vec()).await;
        }
        if let Some(state) = sm.take_if(|state| lost && state.id.is_some()) {
            return Some((session, state, csi));
        }
        if let Some(state) = &mut sm {
            if let Some(id) = &state.id {
                server.state::<crate::sm::Parking>().forget(id);
            }
            state.keep_unacked(server, &session).await;
        }
        server.protection.unbind_account(user);
        dispatch::session_ended(server, &session).await;
        None
    }
}

/// Binds a resource for `user` (a random one if the client named none),
/// replacing an older session of the same full JID (RFC 6120 §7.7.2.2).
fn bind_session(
    stream: &Stream,
    user: &str,
    resource: Option<&str>,
) -> Result<Rc<Session>, stanza::StanzaCondition> {
    let server = &stream.server;
    let resource = match resource.map(str::trim) {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => server.random_id(),
    };
    let jid = Jid::from_parts(Some(user), &server.config().domain, Some(&resource))
        .ok()
        .and_then(SessionJid::new)
        .ok_or(stanza::StanzaCondition::BadRequest)?;
    let session = Rc::new(Session {
        id: server.next_id(),
        jid,
        mailbox: stream.mailbox.clone(),
        available: Cell::new(false),
        priority: Cell::new(0),
        interested: Cell::new(false),
        presence: Default::default(),
        carbons: Cell::new(false),
        remote: false,
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
    info!("{}: session bound from {}", session.jid, stream.peer);
    Ok(session)
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
