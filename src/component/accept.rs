//! One component's stream (XEP-0114 §3, `jabber:component:accept`): its header names the
//! domain it serves (one of `[[components]]`, else `host-unknown`), its `<handshake/>`
//! proves the shared secret (hex SHA-1 of our stream id and the secret, compared in
//! constant time; else `not-authorized`), then stanzas flow both ways. Each stanza it sends
//! must come from its own domain (`invalid-from`) and name a recipient
//! (`improper-addressing`); it is handed to the dispatcher from a remote session standing
//! for its sender, paced to the component's `stanzas_per_sec`.

use super::{components, NS_ACCEPT};
use crate::config::Component;
use crate::router::{Mailbox, Outbound, Session};
use crate::server::Server;
use crate::stanza::{IqType, Rejection, Stanza, StanzaType, StreamCondition};
use crate::stream::pace::Pacer;
use crate::stream::transport::ReadError;
use crate::stream::{framer_end, End, Input, Stream, Wake};
use crate::xml::{Esc, StreamHeader, NS_CLIENT, NS_STREAMS};
use log::{debug, info};
use smol::net::TcpStream;
use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// Entities a component sent from that are kept beyond the ones anything else holds: past
/// this, those nobody holds and that are not available are dropped.
const ENTITIES_KEPT: usize = 1024;

/// Where one component stream is.
enum Stage {
    /// Before its header.
    Opening,
    /// Its header named `domain`; the handshake is next.
    Handshake { domain: Box<str> },
    /// Authenticated: `domain` routes here.
    Connected(Connected),
}

struct Connected {
    domain: Box<str>,
    pacer: Pacer,
    /// Its reading was paused for its rate once already (logged once).
    paced: bool,
    /// The entities it sent from, as remote sessions (rooms and presence keep them).
    entities: HashMap<Box<str>, Rc<Session>>,
    /// The id of our disco#info query about it (its answer names it in disco#items).
    disco_id: String,
}

pub async fn serve(server: Rc<Server>, tcp: TcpStream, peer: SocketAddr) {
    let config = server.config();
    let mailbox: Rc<Mailbox> = Rc::default();
    let conn_id = server.register_connection(mailbox.clone());
    let max_stanza = config.component.max_stanza_bytes as usize;
    let mut stream = Stream::new(server.clone(), tcp, peer, conn_id, mailbox, max_stanza);
    let id = server.random_id();
    let mut stage = Stage::Opening;
    let end = run(&server, &mut stream, &id, &mut stage).await;
    match &end {
        End::Error(condition, _) => info!("component {peer}: stream error {}", condition.name()),
        End::Gone => debug!("component {peer}: connection lost"),
        End::PeerClosed => {}
    }
    let domain = match &stage {
        Stage::Opening => None,
        Stage::Handshake { domain } => Some(domain.clone()),
        Stage::Connected(connected) => Some(connected.domain.clone()),
    };
    finish(&mut stream, end, domain.as_deref(), &id).await;
    if let Stage::Connected(connected) = stage {
        disconnected(&server, &stream.mailbox, connected);
    }
    server.unregister_connection(conn_id);
}

/// The component is gone: its domain no longer routes here, what was queued for it
/// bounces, and its entities are unavailable to whoever had their presence.
fn disconnected(server: &Rc<Server>, mailbox: &Rc<Mailbox>, connected: Connected) {
    let domain = &connected.domain;
    components(server).disconnected(domain, mailbox);
    info!("component {domain}: disconnected");
    for item in mailbox.drain() {
        if let Outbound::Stanza { xml, .. } = item {
            crate::route::bounce(
                server,
                &xml,
                crate::stanza::StanzaCondition::ServiceUnavailable,
            );
        }
    }
    let entities: Vec<Rc<Session>> = connected.entities.into_values().collect();
    crate::s2s::entities_lost(server, &entities);
    for entity in &entities {
        crate::s2s::end_remote(server, entity);
    }
}

async fn run(server: &Rc<Server>, stream: &mut Stream, id: &str, stage: &mut Stage) -> End {
    let config = server.config();
    let auth_deadline =
        Instant::now() + Duration::from_secs(config.component.auth_timeout_secs.into());
    loop {
        if let Err(end) = stream.flush_out().await {
            return end;
        }
        // A connected component may stay quiet for as long as it likes.
        let deadline = match stage {
            Stage::Connected(_) => Instant::now() + Duration::from_secs(3600),
            _ => auth_deadline,
        };
        match stream.wait(deadline).await {
            Wake::Mail(Outbound::Stanza { xml, .. }) => stream.out.push_str(&xml),
            Wake::Mail(Outbound::Close(condition)) => return End::Error(condition, None),
            Wake::Mail(Outbound::OfflineWaiting) => {}
            Wake::Read(Ok(0)) | Wake::Read(Err(ReadError::Io(_))) => return End::Gone,
            Wake::Read(Err(ReadError::Xml(e))) => return framer_end(e),
            Wake::Read(Ok(_)) | Wake::Resume => loop {
                match stream.next_input() {
                    Ok(Some(input)) => {
                        if let Err(end) = on_input(server, stream, id, stage, input).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(end) => return end,
                }
            },
            Wake::Deadline if matches!(stage, Stage::Connected(_)) => {}
            Wake::Deadline => return End::Error(StreamCondition::ConnectionTimeout, None),
        }
    }
}

async fn on_input(
    server: &Rc<Server>,
    stream: &mut Stream,
    id: &str,
    stage: &mut Stage,
    input: Input,
) -> Result<(), End> {
    let text = match input {
        Input::Open(header) => {
            let domain = on_header(server, stream, id, stage, header)?;
            *stage = Stage::Handshake { domain };
            return Ok(());
        }
        Input::Element(text) => text,
    };
    let text = in_client_namespace(text)?;
    let doc = crate::xml::parse_stanza(&text)
        .map_err(|_| End::Error(StreamCondition::NotWellFormed, None))?;
    let node = crate::xml::stanza_element(&doc)
        .map_err(|_| End::Error(StreamCondition::NotWellFormed, None))?;
    let name = node.tag_name();
    // The header's namespace was read as the client one (see `on_header`); a component
    // may also name its own on the handshake (biboumi does).
    match (&mut *stage, name.namespace(), name.name()) {
        (Stage::Handshake { domain }, Some(NS_CLIENT | NS_ACCEPT), "handshake") => {
            let connected = on_handshake(server, stream, id, domain, node)?;
            *stage = Stage::Connected(connected);
            Ok(())
        }
        (Stage::Connected(connected), Some(NS_CLIENT), "message" | "presence" | "iq") => {
            let config = server.config();
            let Some(component) = config.component_for(&connected.domain) else {
                info!(
                    "component {}: no longer configured, closing",
                    connected.domain
                );
                return Err(End::Error(StreamCondition::NotAuthorized, None));
            };
            let (rate, burst) = (component.stanzas_per_sec, component.stanza_burst);
            if connected.pacer.take(rate, burst).await && !connected.paced {
                connected.paced = true;
                info!(
                    "component {}: sending faster than its stanzas_per_sec ({rate}), reading paused",
                    connected.domain
                );
            }
            on_stanza(server, &stream.mailbox, connected, node).await
        }
        (Stage::Connected(_), ..) => Err(End::Error(StreamCondition::UnsupportedStanzaType, None)),
        _ => Err(End::Error(StreamCondition::NotAuthorized, None)),
    }
}

/// A stanza that declares the component namespace itself (`<message
/// xmlns='jabber:component:accept'>`, as some component libraries write it) without that
/// declaration, so it and its children are read in the client namespace like the others
/// and reach users as theirs. Any other element unchanged.
fn in_client_namespace(text: String) -> Result<String, End> {
    // The usual stanza never names it: parsed once, by the caller.
    if !text.contains(NS_ACCEPT) {
        return Ok(text);
    }
    let rewritten = {
        let doc = crate::xml::parse_stanza(&text)
            .map_err(|_| End::Error(StreamCondition::NotWellFormed, None))?;
        let node = crate::xml::stanza_element(&doc)
            .map_err(|_| End::Error(StreamCondition::NotWellFormed, None))?;
        if node.tag_name().namespace() != Some(NS_ACCEPT) {
            return Ok(text);
        }
        let start = node.range().start;
        let element = text.get(start..).unwrap_or_default();
        [
            format!(" xmlns='{NS_ACCEPT}'"),
            format!(" xmlns=\"{NS_ACCEPT}\""),
        ]
        .iter()
        .find_map(|declaration| {
            let at = start + element.find(declaration.as_str())?;
            let rest = text.get(at + declaration.len()..)?;
            Some(format!("{}{rest}", text.get(..at)?))
        })
    };
    // Not found (a declaration written otherwise): the element stays in the component
    // namespace and is refused as an unknown kind.
    Ok(rewritten.unwrap_or(text))
}

/// The component opened its stream: the domain it names must be one of `[[components]]`.
/// Our header answers with the stream id its handshake is bound to.
fn on_header(
    server: &Server,
    stream: &mut Stream,
    id: &str,
    stage: &Stage,
    mut header: StreamHeader,
) -> Result<Box<str>, End> {
    if !matches!(stage, Stage::Opening) {
        // XEP-0114 has no stream restarts.
        return Err(End::Error(StreamCondition::BadFormat, None));
    }
    if header.default_ns.as_deref() != Some(NS_ACCEPT) {
        return Err(End::Error(StreamCondition::InvalidNamespace, None));
    }
    let config = server.config();
    let domain: Box<str> = header.to.clone().unwrap_or_default().into();
    write_header(&mut stream.out, Some(&domain), id);
    stream.header_sent = true;
    if config.component_for(&domain).is_none() {
        info!("component {}: unknown domain {domain:?}", stream.peer);
        return Err(End::Error(StreamCondition::HostUnknown, None));
    }
    // Stanzas are read as the rest of the server reads them (the content namespaces
    // differ only in name, as for servers, RFC 6120 §4.8.3).
    header.default_ns = Some(NS_CLIENT.into());
    stream.header = Some(header);
    Ok(domain)
}

/// Our stream header (XEP-0114 §3: `from` the component's domain, our stream `id`).
fn write_header(out: &mut String, domain: Option<&str>, id: &str) {
    let _ = write!(
        out,
        "<?xml version='1.0'?><stream:stream xmlns:stream='{NS_STREAMS}' xmlns='{NS_ACCEPT}' \
         id='{}'",
        Esc(id)
    );
    if let Some(domain) = domain {
        let _ = write!(out, " from='{}'", Esc(domain));
    }
    out.push('>');
}

/// XEP-0114 §3: the handshake is the hex SHA-1 of our stream id and the secret. Right, the
/// domain routes to this stream (unless another stream serves it and may not be replaced).
fn on_handshake(
    server: &Server,
    stream: &mut Stream,
    id: &str,
    domain: &str,
    node: roxmltree::Node,
) -> Result<Connected, End> {
    let config = server.config();
    let component = config.component_for(domain).ok_or(End::Gone)?;
    let given = node.text().unwrap_or_default().trim().to_ascii_lowercase();
    if !crate::sasl::constant_time_eq(
        given.as_bytes(),
        expected_handshake(id, component).as_bytes(),
    ) {
        info!("component {domain}: wrong secret from {}", stream.peer);
        return Err(End::Error(StreamCondition::NotAuthorized, None));
    }
    if !components(server).connect(domain, &stream.mailbox, config.component.replace) {
        info!("component {domain}: already connected, a second connection refused");
        return Err(End::Error(StreamCondition::Conflict, None));
    }
    info!("component {domain}: connected from {}", stream.peer);
    stream.out.push_str("<handshake/>");
    // What it is, for the server's disco#items.
    let disco_id = format!("component-{}", server.random_id());
    crate::xml::build::Element::new("iq")
        .attr("type", "get")
        .attr("id", &disco_id)
        .attr("from", &config.domain)
        .attr("to", domain)
        .children(&mut stream.out, |out| {
            crate::xml::build::Element::new("query")
                .ns(NS_DISCO_INFO)
                .empty(out);
        });
    Ok(Connected {
        domain: domain.into(),
        pacer: Pacer::new(component.stanza_burst),
        paced: false,
        entities: HashMap::new(),
        disco_id,
    })
}

fn expected_handshake(id: &str, component: &Component) -> String {
    let mut input = id.as_bytes().to_vec();
    input.extend_from_slice(component.secret.expose());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A stanza from the component: from its own domain, to someone; then the dispatcher's.
async fn on_stanza(
    server: &Rc<Server>,
    mailbox: &Rc<Mailbox>,
    connected: &mut Connected,
    node: roxmltree::Node<'_, '_>,
) -> Result<(), End> {
    let stanza = match Stanza::parse(node) {
        Ok(stanza) => stanza,
        Err(Rejection::Stream(condition)) => return Err(End::Error(condition, None)),
        Err(Rejection::Stanza { .. }) => {
            debug!("component {}: dropped a malformed stanza", connected.domain);
            return Ok(());
        }
    };
    let domain = &*connected.domain;
    let Some(from) = stanza.from.as_ref().filter(|from| from.domain() == domain) else {
        info!("component {domain}: a stanza not from its domain, closing");
        return Err(End::Error(StreamCondition::InvalidFrom, None));
    };
    if stanza.to.is_none() {
        return Err(End::Error(StreamCondition::ImproperAddressing, None));
    }
    if is_disco_answer(&stanza, &connected.disco_id) {
        note_identity(server, mailbox, domain, &stanza);
        return Ok(());
    }
    let session = entity(server, mailbox, connected, from);
    crate::s2s::note_presence(&session, &stanza);
    let cap = server.config().component.max_queue_bytes as usize;
    crate::dispatch::handle_remote(server, &session, &stanza, cap).await;
    Ok(())
}

fn is_disco_answer(stanza: &Stanza, disco_id: &str) -> bool {
    matches!(stanza.ty, StanzaType::Iq(IqType::Result | IqType::Error))
        && stanza.id == Some(disco_id)
}

/// The component's disco#info answer: the name of its first identity, if it gave one.
fn note_identity(server: &Server, mailbox: &Rc<Mailbox>, domain: &str, stanza: &Stanza) {
    let name = stanza
        .payload()
        .filter(|query| query.has_tag_name((NS_DISCO_INFO, "query")))
        .and_then(|query| {
            query
                .children()
                .find(|c| c.has_tag_name((NS_DISCO_INFO, "identity")))
        })
        .and_then(|identity| identity.attribute("name"));
    if let Some(name) = name {
        components(server).set_name(domain, mailbox, name);
    }
}

/// The remote session standing for `from`, one of the component's entities.
fn entity(
    server: &Server,
    mailbox: &Rc<Mailbox>,
    connected: &mut Connected,
    from: &crate::jid::Jid,
) -> Rc<Session> {
    if let Some(session) = connected.entities.get(from.as_str()) {
        return session.clone();
    }
    let entities = &mut connected.entities;
    if entities.len() >= ENTITIES_KEPT {
        entities.retain(|_, s| Rc::strong_count(s) > 1 || s.available.get());
    }
    let session = Rc::new(Session::remote_entity(
        server.next_id(),
        from.clone(),
        mailbox.clone(),
    ));
    entities.insert(from.as_str().into(), session.clone());
    session
}

/// Ends the stream: a stream error (after our header, if none went out yet) or our close.
async fn finish(stream: &mut Stream, end: End, domain: Option<&str>, id: &str) {
    match end {
        End::Error(condition, text) => {
            if !stream.header_sent {
                write_header(&mut stream.out, domain, id);
                stream.header_sent = true;
            }
            condition.write_close(text, &mut stream.out);
        }
        End::PeerClosed => stream.out.push_str("</stream:stream>"),
        End::Gone => stream.out.clear(),
    }
    stream.close().await;
}
