//! One outgoing server-to-server stream from a local domain to a peer domain, opened on
//! demand: the peer is found (static route, SRV, A/AAAA), the stream secured with STARTTLS
//! and authenticated with SASL EXTERNAL when the peer accepts our certificate, else with
//! dialback. The link's queue (bounded in bytes) holds what waits for the peer; what cannot
//! reach it within `s2s.queue_timeout_secs`, after bounded and backed-off attempts,
//! bounces to its sender. An idle stream is closed; the link (and its task) ends once it
//! is idle and nothing refers to its queue.

use super::negotiate::{self, Offered, NS_SASL, NS_TLS};
use super::{certs, dialback, resolve};
use crate::router::{Mailbox, Outbound};
use crate::server::Server;
use crate::stanza::{StanzaCondition, StreamCondition};
use crate::stream::transport::ReadError;
use crate::stream::{framer_end, End, Input, Stream, Wake};
use log::{debug, info, warn};
use smol::net::TcpStream;
use smol::{future, Timer};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// First wait between attempts; it doubles each time.
const FIRST_RETRY: Duration = Duration::from_secs(1);

pub struct Link {
    pub local: Box<str>,
    pub remote: Box<str>,
    /// What waits for the peer's users, until the stream is authenticated.
    pub mailbox: Rc<Mailbox>,
    /// Dialback verification requests to write: they go out as soon as the stream is
    /// secured, before it is authenticated, since the peer's own authentication on its
    /// stream to us may wait for them (XEP-0220 §2.3).
    requests: (
        smol::channel::Sender<String>,
        smol::channel::Receiver<String>,
    ),
    /// Dialback verifications asked of the peer (as authoritative server), by stream id.
    verifications: RefCell<HashMap<String, smol::channel::Sender<bool>>>,
}

impl Link {
    pub fn new(local: &str, remote: &str) -> Link {
        Link {
            local: local.into(),
            remote: remote.into(),
            mailbox: Rc::default(),
            requests: smol::channel::unbounded(),
            verifications: RefCell::default(),
        }
    }

    /// XEP-0220 §2.3: asks the peer whether `key` is the one it gave for its stream `id` to
    /// us; false when it says no or cannot be asked.
    pub async fn verify(&self, id: &str, key: &str) -> bool {
        let (tx, rx) = smol::channel::bounded(1);
        self.verifications.borrow_mut().insert(id.to_owned(), tx);
        let mut request = String::new();
        dialback::write_verify_request(&mut request, &self.local, &self.remote, id, key);
        if self.requests.0.try_send(request).is_err() {
            self.verifications.borrow_mut().remove(id);
            return false;
        }
        rx.recv().await.unwrap_or(false)
    }

    /// Writes the verification requests waiting.
    fn write_requests(&self, out: &mut String) {
        while let Ok(request) = self.requests.1.try_recv() {
            out.push_str(&request);
        }
    }

    fn answer_verification(&self, id: &str, valid: bool) {
        if let Some(tx) = self.verifications.borrow_mut().remove(id) {
            let _ = tx.try_send(valid);
        }
    }
}

/// The link's task: waits for something to send, connects, writes, and starts over.
pub async fn run(server: Rc<Server>, link: Rc<Link>) {
    loop {
        let idle = Duration::from_secs(server.config().s2s.idle_timeout_secs.into());
        let first = future::or(
            async { Some(Some(future::poll_fn(|cx| link.mailbox.poll_recv(cx)).await)) },
            future::or(
                async {
                    // A verification request: put back, it is written after STARTTLS.
                    let request = link.requests.1.recv().await.ok()?;
                    let _ = link.requests.0.try_send(request);
                    Some(None)
                },
                async {
                    Timer::after(idle).await;
                    None
                },
            ),
        )
        .await;
        let first = match first {
            None if Rc::strong_count(&link.mailbox) == 1 => break,
            None => continue,
            Some(Some(Outbound::Close(_))) => break,
            Some(Some(Outbound::OfflineWaiting)) => continue,
            Some(first) => first,
        };
        let Some((stream, how)) = connect(&server, &link).await else {
            give_up(&server, &link, first, StanzaCondition::RemoteServerTimeout);
            super::peer_lost(&server, &link.remote);
            continue;
        };
        info!(
            "s2s {} → {}: connected to {} ({how})",
            link.local, link.remote, stream.peer
        );
        if serve(&server, &link, stream, first).await {
            break;
        }
    }
    give_up(&server, &link, None, StanzaCondition::RemoteServerNotFound);
    super::federation(&server).forget_link(&server, &link);
    debug!("s2s {} → {}: link ended", link.local, link.remote);
}

/// Bounces everything queued (and `first`), and fails the verifications waiting.
fn give_up(server: &Server, link: &Link, first: Option<Outbound>, condition: StanzaCondition) {
    let mut bounced = 0;
    for item in first.into_iter().chain(link.mailbox.drain()) {
        if let Outbound::Stanza { xml, .. } = item {
            super::bounce(server, &xml, condition);
            bounced += 1;
        }
    }
    while link.requests.1.try_recv().is_ok() {}
    link.verifications.borrow_mut().clear();
    if bounced > 0 {
        warn!(
            "s2s {} → {}: unreachable, {bounced} queued stanzas bounced ({})",
            link.local,
            link.remote,
            condition.name()
        );
    }
}

/// Tries the peer's addresses, again with growing pauses, until `queue_timeout_secs`.
async fn connect(server: &Rc<Server>, link: &Link) -> Option<(Stream, &'static str)> {
    let config = server.config();
    let give_up_at = Instant::now() + Duration::from_secs(config.s2s.queue_timeout_secs.into());
    let mut pause = FIRST_RETRY;
    loop {
        match attempt(server, link).await {
            Ok(connected) => return Some(connected),
            Err(why) => info!("s2s {} → {}: {why}", link.local, link.remote),
        }
        if link.mailbox.is_closing() || Instant::now() + pause >= give_up_at {
            return None;
        }
        Timer::after(pause).await;
        pause *= 2;
    }
}

/// One round over the peer's candidates.
async fn attempt(server: &Rc<Server>, link: &Link) -> Result<(Stream, &'static str), String> {
    let config = server.config();
    let timeout = Duration::from_secs(config.s2s.connect_timeout_secs.into());
    let candidates = resolve::candidates(&config.s2s, &link.remote).await;
    if candidates.is_empty() {
        return Err("no address found".into());
    }
    let mut last = String::from("no address found");
    for candidate in candidates {
        for addr in resolve::addresses(&candidate).await {
            let deadline = Instant::now() + timeout;
            let connected = future::or(async { Some(TcpStream::connect(addr).await) }, async {
                Timer::at(deadline).await;
                None
            })
            .await;
            let tcp = match connected {
                Some(Ok(tcp)) => tcp,
                Some(Err(e)) => {
                    last = format!("cannot connect to {addr}: {e}");
                    continue;
                }
                None => {
                    last = format!("connecting to {addr} timed out");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match negotiate_out(server, link, tcp, addr, candidate.direct_tls, deadline).await {
                Ok(connected) => return Ok(connected),
                Err(why) => last = format!("{addr}: {why}"),
            }
        }
    }
    Err(last)
}

/// The initiating side's negotiation (RFC 6120 §4–§6, XEP-0220 §2.1).
async fn negotiate_out(
    server: &Rc<Server>,
    link: &Link,
    tcp: TcpStream,
    addr: SocketAddr,
    direct_tls: bool,
    deadline: Instant,
) -> Result<(Stream, &'static str), String> {
    let config = server.config();
    let max_stanza = config.s2s.max_stanza_bytes as usize;
    // Until it is authenticated the stream reads no mail: a mailbox of its own.
    let mut stream = Stream::new(server.clone(), tcp, addr, 0, Rc::default(), max_stanza);
    let fail = |end: End| match end {
        End::Error(condition, _) => format!("stream error {}", condition.name()),
        End::PeerClosed => "the peer closed the stream".to_owned(),
        End::Gone => "connection lost".to_owned(),
    };
    let (local, remote) = (&*link.local, &*link.remote);
    let tls = super::federation(server).tls().ok_or("no TLS settings")?;
    if direct_tls {
        secure(&mut stream, &tls, remote).await?;
    }
    let (mut id, mut offered) = open(&mut stream, local, remote, deadline)
        .await
        .map_err(fail)?;
    if !stream.transport.is_tls() {
        if !offered.starttls {
            if config.s2s.require_encryption {
                return Err("the peer offers no STARTTLS (s2s.require_encryption)".into());
            }
        } else {
            stream
                .out
                .push_str(&format!("<starttls xmlns='{NS_TLS}'/>"));
            match negotiate::next(&mut stream, deadline).await.map_err(fail)? {
                Input::Element(text) if element_is(&text, NS_TLS, "proceed") => {}
                _ => return Err("STARTTLS refused".into()),
            }
            secure(&mut stream, &tls, remote).await?;
            (id, offered) = open(&mut stream, local, remote, deadline)
                .await
                .map_err(fail)?;
        }
    }
    link.write_requests(&mut stream.out);
    let pin = config.s2s.pins.get(remote).map(String::as_str);
    let roots = certs::Roots::system();
    let trust = certs::assess(stream.transport.peer_certificates(), remote, pin, roots);
    match &trust {
        certs::Trust::PinMismatch => {
            return Err("its certificate is not the one pinned in [s2s.pins]".into())
        }
        certs::Trust::Unverified(why) if config.s2s.require_valid_certs => {
            return Err(format!(
                "its certificate does not verify ({why}) and s2s.require_valid_certs is set"
            ))
        }
        _ => {}
    }
    if offered.external {
        stream.out.push_str(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{}</auth>",
            crate::sasl::base64::encode(local.as_bytes())
        ));
        // Answers to our verification requests may come first.
        let answer = loop {
            match negotiate::next(&mut stream, deadline).await.map_err(fail)? {
                Input::Element(text) if !took_verification(link, &text) => break Some(text),
                Input::Element(_) => {}
                Input::Open(_) => break None,
            }
        };
        match answer {
            Some(text) if element_is(&text, NS_SASL, "success") => {
                stream.restart(max_stanza);
                open(&mut stream, local, remote, deadline)
                    .await
                    .map_err(fail)?;
                return Ok((stream, "SASL EXTERNAL"));
            }
            _ => debug!("s2s {local} → {remote}: SASL EXTERNAL refused, trying dialback"),
        }
    }
    let secret = super::federation(server)
        .secret()
        .ok_or("federation not started")?;
    let key = secret.key(remote, local, &id);
    dialback::write_result_request(&mut stream.out, local, remote, &key);
    loop {
        // Verification requests keep going out while we wait for our own answer: the peer
        // may need ours answered before it can answer us.
        link.write_requests(&mut stream.out);
        negotiate::flush(&mut stream).await.map_err(fail)?;
        let Some(input) = stream.next_input().map_err(fail)? else {
            // Only reads and the request queue are raced: no write is ever cut short.
            let woke = future::or(async { Some(stream.wait_input(deadline).await) }, async {
                let request = link.requests.1.recv().await.ok()?;
                let _ = link.requests.0.try_send(request);
                None
            })
            .await;
            match woke {
                Some(Wake::Read(Ok(0))) => return Err(fail(End::Gone)),
                Some(Wake::Read(Err(ReadError::Io(_)))) => return Err(fail(End::Gone)),
                Some(Wake::Read(Err(ReadError::Xml(e)))) => return Err(fail(framer_end(e))),
                Some(Wake::Deadline) => return Err("dialback timed out".into()),
                Some(_) | None => {}
            }
            continue;
        };
        let Input::Element(text) = input else {
            return Err("unexpected stream restart".into());
        };
        if took_verification(link, &text) {
            continue;
        }
        // Our own answer: `db:result` with a type.
        let verdict = crate::xml::parse_stanza(&text).ok().and_then(|doc| {
            let request = dialback::Request::parse(doc.root_element().first_element_child()?)?;
            (!request.verify).then(|| request.ty.map(|ty| ty == "valid"))?
        });
        match verdict {
            Some(true) => {
                let how = match trust {
                    certs::Trust::Pinned => "dialback, pinned certificate",
                    certs::Trust::Verified => "dialback, verified certificate",
                    _ => "dialback",
                };
                return Ok((stream, how));
            }
            Some(false) => return Err("dialback refused by the peer".into()),
            None => {}
        }
    }
}

/// Whether the element in `wrapped` answered one of our verification requests (then handed
/// to its waiter).
fn took_verification(link: &Link, wrapped: &str) -> bool {
    let Ok(doc) = crate::xml::parse_stanza(wrapped) else {
        return false;
    };
    let answer = doc
        .root_element()
        .first_element_child()
        .and_then(dialback::Request::parse);
    match answer {
        Some(dialback::Request {
            verify: true,
            id: Some(id),
            ty: Some(ty),
            ..
        }) => {
            link.answer_verification(id, ty == "valid");
            true
        }
        _ => false,
    }
}

/// Whether the element in `wrapped` is `name` in `ns`.
fn element_is(wrapped: &str, ns: &str, name: &str) -> bool {
    crate::xml::parse_stanza(wrapped)
        .ok()
        .and_then(|doc| {
            let node = doc.root_element().first_element_child()?;
            Some(node.has_tag_name((ns, name)))
        })
        .unwrap_or(false)
}

/// The TLS client handshake, naming the peer's domain.
async fn secure(stream: &mut Stream, tls: &super::Tls, remote: &str) -> Result<(), String> {
    negotiate::flush(stream)
        .await
        .map_err(|_| "connection lost before TLS".to_owned())?;
    let name = certs::server_name(remote, stream.peer.ip());
    stream
        .transport
        .connect_tls(tls.client.clone(), name)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))
}

/// Opens (or reopens) our stream and reads the peer's header and features: the stream id
/// it gave and what it offered.
async fn open(
    stream: &mut Stream,
    local: &str,
    remote: &str,
    deadline: Instant,
) -> Result<(String, Offered), End> {
    stream.framer.reset();
    stream.header = None;
    negotiate::write_header(&mut stream.out, local, Some(remote), None);
    stream.header_sent = true;
    let header = match negotiate::next(stream, deadline).await? {
        Input::Open(header) => header,
        Input::Element(_) => return Err(End::Error(StreamCondition::BadFormat, None)),
    };
    let header = negotiate::accept_header(header).map_err(|c| End::Error(c, None))?;
    let id = header.id.clone().unwrap_or_default();
    stream.header = Some(header);
    match negotiate::next(stream, deadline).await? {
        Input::Element(text) => {
            let offered = crate::xml::parse_stanza(&text)
                .ok()
                .and_then(|doc| Offered::parse(doc.root_element().first_element_child()?));
            offered
                .map(|offered| (id, offered))
                .ok_or(End::Error(StreamCondition::BadFormat, None))
        }
        Input::Open(_) => Err(End::Error(StreamCondition::BadFormat, None)),
    }
}

/// Writes the link's queue to the authenticated stream until it is idle, lost or told to
/// close; true when the link must end (the server stops, or its queue overflowed).
async fn serve(
    server: &Rc<Server>,
    link: &Link,
    mut stream: Stream,
    first: Option<Outbound>,
) -> bool {
    let conn_id = server.register_connection(link.mailbox.clone());
    stream.conn_id = conn_id;
    stream.mailbox = link.mailbox.clone();
    let idle = Duration::from_secs(server.config().s2s.idle_timeout_secs.into());
    let mut pending = first;
    let mut quiet_since = Instant::now();
    let (end, ends_link) = loop {
        let item = match pending.take() {
            Some(item) => Some(item),
            None => {
                // What negotiation read past its last element is handled first.
                if let Err(end) = read_answers(&mut stream, link) {
                    break (end, false);
                }
                link.write_requests(&mut stream.out);
                if let Err(end) = negotiate::flush(&mut stream).await {
                    break (end, false);
                }
                let wake = future::or(
                    async { Some(stream.wait(quiet_since + idle).await) },
                    async {
                        let request = link.requests.1.recv().await.ok()?;
                        let _ = link.requests.0.try_send(request);
                        None
                    },
                )
                .await;
                let Some(wake) = wake else { continue };
                match wake {
                    Wake::Mail(item) => Some(item),
                    Wake::Read(Ok(0)) => break (End::Gone, false),
                    Wake::Read(Ok(_)) | Wake::Resume => {
                        quiet_since = Instant::now();
                        if let Err(end) = read_answers(&mut stream, link) {
                            break (end, false);
                        }
                        None
                    }
                    Wake::Read(Err(ReadError::Io(_))) => break (End::Gone, false),
                    Wake::Read(Err(ReadError::Xml(e))) => break (framer_end(e), false),
                    Wake::Deadline => {
                        debug!("s2s {} → {}: idle, closing", link.local, link.remote);
                        break (End::PeerClosed, false);
                    }
                }
            }
        };
        match item {
            Some(Outbound::Stanza {
                xml,
                storable,
                hold,
            }) => {
                quiet_since = Instant::now();
                stream.take_mail(xml, storable, hold, |xml, _, out| out.push_str(&xml));
            }
            Some(Outbound::Close(condition)) => {
                let ends =
                    condition == StreamCondition::SystemShutdown || link.mailbox.is_closing();
                break (End::PeerClosed, ends);
            }
            Some(Outbound::OfflineWaiting) | None => {}
        }
    };
    let unwritten = std::mem::take(&mut stream.guard.unwritten);
    if matches!(end, End::Gone) {
        info!("s2s {} → {}: connection lost", link.local, link.remote);
        super::peer_lost(server, &link.remote);
    }
    negotiate::finish(&mut stream, end, &link.local, Some(&link.remote)).await;
    server.unregister_connection(conn_id);
    for xml in unwritten {
        super::bounce(server, &xml, StanzaCondition::RemoteServerTimeout);
    }
    ends_link
}

/// What the peer sends on our outgoing stream: answers to our dialback verifications;
/// its stream error or close ends the stream.
fn read_answers(stream: &mut Stream, link: &Link) -> Result<(), End> {
    while let Some(input) = stream.next_input()? {
        let Input::Element(text) = input else {
            return Err(End::Error(StreamCondition::BadFormat, None));
        };
        let Ok(doc) = crate::xml::parse_stanza(&text) else {
            return Err(End::Error(StreamCondition::NotWellFormed, None));
        };
        let Some(node) = doc.root_element().first_element_child() else {
            continue;
        };
        if node.tag_name().name() == "error"
            && node.tag_name().namespace() == Some(negotiate::NS_STREAMS)
        {
            let condition = node
                .first_element_child()
                .map(|c| c.tag_name().name().to_owned())
                .unwrap_or_default();
            info!(
                "s2s {} → {}: the peer sent stream error {condition}",
                link.local, link.remote
            );
            return Err(End::PeerClosed);
        }
        match dialback::Request::parse(node) {
            Some(answer) if answer.verify => {
                if let (Some(id), Some(ty)) = (answer.id, answer.ty) {
                    link.answer_verification(id, ty == "valid");
                }
            }
            _ => debug!(
                "s2s {} → {}: ignored {}",
                link.local,
                link.remote,
                node.tag_name().name()
            ),
        }
    }
    Ok(())
}
