//! Incoming server-to-server streams (RFC 6120, the receiving side): STARTTLS, then the
//! peer authenticates each domain it sends from, by SASL EXTERNAL (a certificate that
//! verifies or is pinned) or by dialback (XEP-0220: we ask the domain's authoritative
//! server, over our own link to it, whether the key is its). Stanzas then go to the
//! dispatcher from a remote session, after the checks that keep a peer to its own
//! domains: `from` must be a domain it authenticated (`invalid-from`), `to` one of ours
//! (`host-unknown`: no relaying).

use super::negotiate::{self, NS_SASL, NS_TLS};
use super::{certs, dialback};
use crate::router::{Hold, Mailbox, Outbound};
use crate::server::Server;
use crate::stanza::{Rejection, Stanza, StreamCondition};
use crate::stream::pace::Pacer;
use crate::stream::transport::ReadError;
use crate::stream::{framer_end, End, Input, Stream, Wake};
use log::{debug, info};
use smol::net::TcpStream;
use smol::Timer;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One incoming stream's negotiated state.
struct Incoming {
    /// The domain of ours the peer addressed (its header's `to`).
    local: String,
    /// The domain the peer named in its header's `from`.
    peer: Option<String>,
    /// Our stream id, which dialback keys are bound to.
    id: String,
    /// Peer domains authenticated on this stream (counted in the federation's table).
    domains: Rc<RefCell<Vec<Box<str>>>>,
    /// Authenticated by SASL EXTERNAL: the stream restarted without dialback.
    sasl: bool,
    /// Stanza allowance: `s2s.stanzas_per_sec`, bursts of `s2s.stanza_burst`.
    pacer: Pacer,
    /// Dialback verifications this stream is waiting for: each makes us ask (and perhaps
    /// connect to) the claimed domain's server, so a peer gets only a few at a time.
    verifying: Rc<std::cell::Cell<u32>>,
}

/// Dialback verifications one incoming stream may have in flight.
const MAX_VERIFYING: u32 = 4;

pub async fn serve(server: Rc<Server>, tcp: TcpStream, peer: SocketAddr) {
    let config = server.config();
    let mailbox: Rc<Mailbox> = Rc::default();
    let conn_id = server.register_connection(mailbox.clone());
    let max_stanza = config.s2s.max_stanza_bytes as usize;
    let mut stream = Stream::new(server.clone(), tcp, peer, conn_id, mailbox, max_stanza);
    let mut incoming = Incoming {
        local: config.domain.clone(),
        peer: None,
        id: String::new(),
        domains: Rc::default(),
        sasl: false,
        pacer: Pacer::new(config.s2s.stanza_burst),
        verifying: Rc::default(),
    };
    let end = run(&server, &mut stream, &mut incoming).await;
    // The peer vanished rather than closing: its users' presence is stale.
    if matches!(
        end,
        End::Gone | End::Error(StreamCondition::ConnectionTimeout, _)
    ) {
        for domain in incoming.domains.borrow().iter() {
            super::peer_lost(&server, domain);
        }
    }
    match &end {
        End::Error(condition, _) => info!("s2s {peer}: stream error {}", condition.name()),
        End::Gone => debug!("s2s {peer}: connection lost"),
        End::PeerClosed => {}
    }
    let (local, from) = (incoming.local.clone(), incoming.peer.clone());
    negotiate::finish(&mut stream, end, &local, from.as_deref()).await;
    server.unregister_connection(conn_id);
    for domain in incoming.domains.borrow().iter() {
        super::federation(&server).remove_incoming(domain);
        info!("s2s {domain} → {local}: incoming stream closed");
    }
}

async fn run(server: &Rc<Server>, stream: &mut Stream, incoming: &mut Incoming) -> End {
    let config = server.config();
    let auth_deadline = Instant::now() + Duration::from_secs(config.s2s.auth_timeout_secs.into());
    let idle = Duration::from_secs(config.s2s.idle_timeout_secs.into());
    let mut quiet_since = Instant::now();
    loop {
        if let Err(end) = negotiate::flush(stream).await {
            return end;
        }
        let authenticated = !incoming.domains.borrow().is_empty();
        let deadline = if authenticated {
            quiet_since + idle
        } else {
            auth_deadline
        };
        match stream.wait(deadline).await {
            Wake::Mail(Outbound::Stanza { xml, .. }) => stream.out.push_str(&xml),
            Wake::Mail(Outbound::Close(condition)) => return End::Error(condition, None),
            Wake::Mail(Outbound::OfflineWaiting) => {}
            Wake::Read(Ok(0)) => return End::Gone,
            Wake::Read(Err(ReadError::Io(_))) => return End::Gone,
            Wake::Read(Err(ReadError::Xml(e))) => return framer_end(e),
            Wake::Read(Ok(_)) | Wake::Resume => {
                quiet_since = Instant::now();
                loop {
                    match stream.next_input() {
                        Ok(Some(input)) => {
                            if let Err(end) = on_input(server, stream, incoming, input).await {
                                return end;
                            }
                        }
                        Ok(None) => break,
                        Err(end) => return end,
                    }
                }
            }
            Wake::Deadline if authenticated => return End::PeerClosed,
            Wake::Deadline => return End::Error(StreamCondition::ConnectionTimeout, None),
        }
    }
}

async fn on_input(
    server: &Rc<Server>,
    stream: &mut Stream,
    incoming: &mut Incoming,
    input: Input,
) -> Result<(), End> {
    let text = match input {
        Input::Open(header) => return on_header(server, stream, incoming, header),
        Input::Element(text) => text,
    };
    let doc = crate::xml::parse_stanza(&text)
        .map_err(|_| End::Error(StreamCondition::NotWellFormed, None))?;
    let node = crate::xml::stanza_element(&doc)
        .map_err(|_| End::Error(StreamCondition::NotWellFormed, None))?;
    let name = node.tag_name();
    match (name.namespace(), name.name()) {
        (Some(NS_TLS), "starttls") if !stream.transport.is_tls() => {
            stream.out.push_str(&format!("<proceed xmlns='{NS_TLS}'/>"));
            negotiate::flush(stream).await?;
            let tls = super::federation(server).tls().ok_or(End::Gone)?;
            stream.start_tls_with(tls.server).await?;
            stream.restart(server.config().s2s.max_stanza_bytes as usize);
            Ok(())
        }
        (Some(NS_SASL), "auth") => on_external(server, stream, incoming, node),
        (Some(dialback::NS), _) => {
            pace(server, incoming).await;
            on_dialback(server, stream, incoming, node)
        }
        (Some(crate::xml::NS_CLIENT), "message" | "presence" | "iq") => {
            if incoming.domains.borrow().is_empty() {
                return Err(End::Error(StreamCondition::NotAuthorized, None));
            }
            pace(server, incoming).await;
            on_stanza(server, incoming, node).await
        }
        _ => Err(End::Error(StreamCondition::UnsupportedStanzaType, None)),
    }
}

/// The peer opened (or reopened) its stream: our header and the features for this stage.
fn on_header(
    server: &Server,
    stream: &mut Stream,
    incoming: &mut Incoming,
    header: crate::xml::StreamHeader,
) -> Result<(), End> {
    let config = server.config();
    let header = negotiate::accept_header(header).map_err(|c| End::Error(c, None))?;
    let to = header.to.clone().unwrap_or_else(|| config.domain.clone());
    if !super::is_ours(server, &to) {
        return Err(End::Error(StreamCondition::HostUnknown, None));
    }
    incoming.local = to;
    incoming.peer = header.from.clone();
    incoming.id = server.random_id();
    stream.header = Some(header);
    negotiate::write_header(
        &mut stream.out,
        &incoming.local,
        incoming.peer.as_deref(),
        Some(&incoming.id),
    );
    stream.header_sent = true;
    let tls = stream.transport.is_tls();
    let external =
        tls && !incoming.sasl && certificate_proves(server, stream, incoming.peer.as_deref());
    let out = &mut stream.out;
    out.push_str("<stream:features>");
    if !tls {
        out.push_str(&format!("<starttls xmlns='{NS_TLS}'>"));
        if config.s2s.require_encryption {
            out.push_str("<required/>");
        }
        out.push_str("</starttls>");
    } else if external {
        out.push_str(&format!(
            "<mechanisms xmlns='{NS_SASL}'><mechanism>EXTERNAL</mechanism></mechanisms>"
        ));
    }
    if tls || !config.s2s.require_encryption {
        out.push_str(&format!(
            "<dialback xmlns='{}'><errors/></dialback>",
            dialback::NS_FEATURE
        ));
    }
    out.push_str("</stream:features>");
    Ok(())
}

/// What the peer's certificate proves for `domain`.
fn trust(server: &Server, stream: &Stream, domain: &str) -> certs::Trust {
    let config = server.config();
    let pin = config.s2s.pins.get(domain).map(String::as_str);
    certs::assess(
        stream.transport.peer_certificates(),
        domain,
        pin,
        certs::Roots::system(),
    )
}

fn certificate_proves(server: &Server, stream: &Stream, domain: Option<&str>) -> bool {
    domain.is_some_and(|domain| {
        matches!(
            trust(server, stream, domain),
            certs::Trust::Verified | certs::Trust::Pinned
        )
    })
}

/// Whether federation with `domain` may begin: allowed by the lists and under the
/// per-domain connection cap (then counted).
fn admit(server: &Server, incoming: &Incoming, domain: &str) -> bool {
    let config = server.config();
    if !config.s2s.allows(domain) {
        info!("s2s {domain}: refused by s2s.allow/s2s.deny");
        return false;
    }
    if incoming.domains.borrow().iter().any(|d| &**d == domain) {
        return true;
    }
    if !super::federation(server).add_incoming(domain, config.s2s.max_connections_per_domain) {
        info!("s2s {domain}: refused, s2s.max_connections_per_domain reached");
        return false;
    }
    incoming.domains.borrow_mut().push(domain.into());
    true
}

/// RFC 6120 §6.4 with XEP-0178: SASL EXTERNAL, the certificate vouching for the domain.
fn on_external(
    server: &Server,
    stream: &mut Stream,
    incoming: &mut Incoming,
    node: roxmltree::Node,
) -> Result<(), End> {
    let authzid = node.text().map(str::trim).unwrap_or_default();
    let claimed = match authzid {
        "" | "=" => incoming.peer.clone(),
        text => crate::sasl::base64::decode(text).and_then(|b| String::from_utf8(b).ok()),
    };
    let ok = node.attribute("mechanism") == Some("EXTERNAL")
        && stream.transport.is_tls()
        && !incoming.sasl
        && claimed.as_deref().is_some_and(|domain| {
            certificate_proves(server, stream, Some(domain)) && admit(server, incoming, domain)
        });
    if !ok {
        stream.out.push_str(&format!(
            "<failure xmlns='{NS_SASL}'><not-authorized/></failure>"
        ));
        return Ok(());
    }
    let domain = claimed.unwrap_or_default();
    info!(
        "s2s {domain} → {}: incoming stream authenticated (SASL EXTERNAL, {:?})",
        incoming.local,
        trust(server, stream, &domain)
    );
    stream
        .out
        .push_str(&format!("<success xmlns='{NS_SASL}'/>"));
    incoming.sasl = true;
    stream.restart(server.config().s2s.max_stanza_bytes as usize);
    Ok(())
}

/// XEP-0220: a `db:verify` asks us, as authoritative server, about a key we gave; a
/// `db:result` asks us, as receiving server, to accept the peer for a domain.
fn on_dialback(
    server: &Rc<Server>,
    stream: &mut Stream,
    incoming: &mut Incoming,
    node: roxmltree::Node,
) -> Result<(), End> {
    let Some(request) = dialback::Request::parse(node) else {
        return Err(End::Error(StreamCondition::UnsupportedStanzaType, None));
    };
    if request.ty.is_some() {
        // Answers never come to the receiving side of a stream.
        return Ok(());
    }
    let config = server.config();
    if config.s2s.require_encryption && !stream.transport.is_tls() {
        return Err(End::Error(StreamCondition::PolicyViolation, None));
    }
    let secret = super::federation(server).secret().ok_or(End::Gone)?;
    if request.verify {
        // The peer received `key` on our outgoing stream with id `id`.
        let valid = super::is_ours(server, request.to)
            && request
                .id
                .is_some_and(|id| secret.verify(request.key, request.from, request.to, id));
        dialback::write_verify_answer(
            &mut stream.out,
            request.to,
            request.from,
            request.id.unwrap_or_default(),
            valid,
        );
        return Ok(());
    }
    let (from, to) = (request.from.to_owned(), request.to.to_owned());
    if !super::is_ours(server, &to) {
        return Err(End::Error(StreamCondition::HostUnknown, None));
    }
    let refuse = |stream: &mut Stream, why: &str| {
        info!("s2s {from} → {to}: dialback refused: {why}");
        dialback::write_result_answer(&mut stream.out, &to, &from, false);
        Ok(())
    };
    if super::is_ours(server, &from) {
        return refuse(stream, "it claims one of our own domains");
    }
    match trust(server, stream, &from) {
        certs::Trust::PinMismatch => {
            return refuse(
                stream,
                "its certificate is not the one pinned in [s2s.pins]",
            )
        }
        certs::Trust::Unverified(why) if config.s2s.require_valid_certs => {
            return refuse(
                stream,
                &format!("its certificate does not verify ({why}), s2s.require_valid_certs"),
            )
        }
        certs::Trust::Verified | certs::Trust::Pinned => {
            // The certificate already proves the domain (XEP-0344 §2.4): no round trip.
            if !admit(server, incoming, &from) {
                return refuse(stream, "not admitted");
            }
            info!("s2s {from} → {to}: incoming stream authenticated (dialback, certificate)");
            dialback::write_result_answer(&mut stream.out, &to, &from, true);
            return Ok(());
        }
        certs::Trust::Unverified(_) => {}
    }
    if !config.s2s.allows(&from) {
        return refuse(stream, "s2s.allow/s2s.deny");
    }
    if incoming.verifying.get() >= MAX_VERIFYING {
        return refuse(stream, "too many verifications at once on one stream");
    }
    // Ask the authoritative server over our link to it; answer when it has.
    let Some(link) = super::federation(server).link(&to, &from) else {
        return refuse(stream, "federation is stopping");
    };
    let (key, id) = (request.key.to_owned(), incoming.id.clone());
    let (domains, replies) = (incoming.domains.clone(), stream.mailbox.clone());
    let verifying = incoming.verifying.clone();
    verifying.set(verifying.get() + 1);
    let owner = server.clone();
    let timeout = Duration::from_secs(config.s2s.connect_timeout_secs.into()) * 2;
    let ask = async move {
        let valid = smol::future::or(link.verify(&id, &key), async {
            Timer::after(timeout).await;
            false
        })
        .await;
        let mut admitted = false;
        if valid {
            let config = owner.config();
            let counted = domains.borrow().iter().any(|d| **d == *from)
                || super::federation(&owner)
                    .add_incoming(&from, config.s2s.max_connections_per_domain);
            if counted {
                if !domains.borrow().iter().any(|d| **d == *from) {
                    domains.borrow_mut().push(from.as_str().into());
                }
                admitted = true;
                info!("s2s {from} → {to}: incoming stream authenticated (dialback)");
            }
        } else {
            info!("s2s {from} → {to}: dialback failed: the key did not verify");
        }
        verifying.set(verifying.get().saturating_sub(1));
        let mut answer = String::new();
        dialback::write_result_answer(&mut answer, &to, &from, admitted);
        let _ = replies.push_stanza(answer.into(), false, Hold::Urgent, usize::MAX);
    };
    if !super::federation(server).spawn(ask) {
        return Err(End::Gone);
    }
    Ok(())
}

/// Keeps a peer to `s2s.stanzas_per_sec` (bursts of `s2s.stanza_burst`) by reading it
/// no faster: the peer's TCP window fills, nobody else waits.
async fn pace(server: &Server, incoming: &mut Incoming) {
    let config = server.config();
    let (rate, burst) = (config.s2s.stanzas_per_sec, config.s2s.stanza_burst);
    incoming.pacer.take(rate, burst).await;
}

/// A stanza from the peer, checked and handed to the dispatcher from a remote session.
async fn on_stanza(
    server: &Rc<Server>,
    incoming: &Incoming,
    node: roxmltree::Node<'_, '_>,
) -> Result<(), End> {
    let stanza = match Stanza::parse(node) {
        Ok(stanza) => stanza,
        Err(Rejection::Stream(condition)) => return Err(End::Error(condition, None)),
        Err(Rejection::Stanza { .. }) => {
            debug!("s2s: dropped a malformed stanza from {:?}", incoming.peer);
            return Ok(());
        }
    };
    // RFC 6120 §8.1.1.1 and §8.1.2.1: both addresses, the sender's a domain this stream
    // authenticated, the recipient's one of ours.
    let (Some(from), Some(to)) = (&stanza.from, &stanza.to) else {
        return Err(End::Error(StreamCondition::ImproperAddressing, None));
    };
    if !incoming
        .domains
        .borrow()
        .iter()
        .any(|d| **d == *from.domain())
    {
        info!(
            "s2s {:?}: stanza from unauthenticated domain {}",
            incoming.peer,
            from.domain()
        );
        return Err(End::Error(StreamCondition::InvalidFrom, None));
    }
    if !super::is_ours(server, to.domain()) {
        info!(
            "s2s {}: refused to relay a stanza to {}",
            from.domain(),
            to.domain()
        );
        return Err(End::Error(StreamCondition::HostUnknown, None));
    }
    let Some(session) = super::federation(server).remote(server, to.domain(), from) else {
        return Ok(());
    };
    super::note_presence(&session, &stanza);
    let cap = server.config().s2s.max_queue_bytes as usize;
    crate::dispatch::handle_remote(server, &session, &stanza, cap).await;
    Ok(())
}
