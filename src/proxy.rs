//! XEP-0065 SOCKS5 Bytestreams proxy for local users, on `proxy.<domain>`: the XMPP side
//! tells a user where the streamhost is and activates a pair; the SOCKS5 side accepts
//! connections, pairs the two ends of a bytestream by their DST.ADDR (SHA-1 of session id,
//! initiator and target JIDs) and, only once the initiator has activated the pair, copies
//! bytes both ways through small fixed buffers, up to a byte and time budget. Anyone can
//! connect to the port, so waiting connections are capped per address (least for an
//! address with nobody logged in), leave after a short wait, and free their slot at once
//! when they hang up. It must never relay before activation, for an activation that does
//! not come from the initiator named in the hash, or to a target that is not a local user.

use crate::disco;
use crate::feature::Deferred;
use crate::feature::{Feature, Service};
use crate::jid::Jid;
use crate::listener::{self, timed, RefusalLog};
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, Stanza, StanzaCondition, StanzaError, StanzaType};
use crate::xml::build::Element;
use log::{info, warn};
use roxmltree::Node;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{Shutdown, TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt::Write;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

pub const NS: &str = "http://jabber.org/protocol/bytestreams";

/// Writing the CONNECT reply must be over within this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// DST.ADDR is a hex SHA-1.
const HASH_LEN: usize = 40;

pub const FEATURE: Feature = Feature {
    name: "proxy",
    listen: Some(|config| {
        let listeners = bind(config)?;
        Ok(Box::new(move |ex, server| start(ex, server, listeners)))
    }),
    state: Some(crate::feature::init::<Proxy>),
    service: Some(Service {
        serves: |server, domain| server.state::<Proxy>().serves(domain),
        domain: |server| server.state::<Proxy>().domain().map(str::to_owned),
        name: "SOCKS5 Bytestreams",
        federated: false,
        handle: |server, session, stanza, out| handle(server, session, stanza, out),
    }),
    ..Feature::NONE
};

/// One bytestream waiting for its second end or its activation.
struct Pair {
    /// The ends connected so far and their addresses.
    ends: Vec<(TcpStream, IpAddr)>,
    /// Wakes the task of the first end, which then runs the relay; dropped with the pair,
    /// which wakes it to give up.
    activate: Sender<()>,
    /// Never sent on: dropped with the pair, which tells the second end's task to stop
    /// watching its socket.
    _left: Sender<()>,
    left: Receiver<()>,
}

/// The proxy: its domain, advertised address and the pairs waiting.
pub struct Proxy {
    domain: Option<Box<str>>,
    /// `host` and port of the `<streamhost/>`, set once the port is bound.
    streamhost: OnceCell<(Box<str>, u16)>,
    pairs: RefCell<HashMap<Box<str>, Pair>>,
    /// Connections waiting in a pair, by address (entries only while non-zero).
    waiting: RefCell<HashMap<IpAddr, u32>>,
    /// Relays running now.
    relays: Cell<u32>,
    refusals: RefusalLog,
}

impl Proxy {
    pub fn new(config: &crate::config::Config) -> Proxy {
        Proxy {
            domain: config.proxy_domain().map(String::into_boxed_str),
            streamhost: OnceCell::new(),
            pairs: RefCell::default(),
            waiting: RefCell::default(),
            relays: Cell::new(0),
            refusals: RefusalLog::default(),
        }
    }

    /// Takes a pair out of the waiting table; its ends no longer count as waiting.
    fn take_pair(&self, hash: &str) -> Option<Pair> {
        let pair = self.pairs.borrow_mut().remove(hash)?;
        let mut waiting = self.waiting.borrow_mut();
        for (_, ip) in &pair.ends {
            if let Some(count) = waiting.get_mut(ip) {
                *count -= 1;
                if *count == 0 {
                    waiting.remove(ip);
                }
            }
        }
        crate::memory::shrink_sparse(&mut waiting);
        Some(pair)
    }

    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Whether stanzas to `domain` belong to this service.
    pub fn serves(&self, domain: &str) -> bool {
        self.domain.as_deref() == Some(domain)
    }
}

/// DST.ADDR for a bytestream (XEP-0065 §5.3.2): hex SHA-1 of SID + initiator + target.
pub fn dst_addr(sid: &str, initiator: &str, target: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    for part in [sid, initiator, target] {
        context.update(part.as_bytes());
    }
    let mut hex = String::with_capacity(HASH_LEN);
    for byte in context.finish().as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// A bytestreams request to the proxy's own JID (XEP-0065 §6.3).
#[derive(Debug, PartialEq)]
enum Request<'a> {
    /// A get of `<query/>`: where the streamhost is (§6.3.2).
    Streamhost,
    /// A set: relay the pair of session `sid` from the asker to `target` (§6.3.4).
    Activate { sid: &'a str, target: Jid },
}

impl<'a> Request<'a> {
    /// `None` when the payload is not a `<query/>` (or there is none): the proxy answers
    /// such an iq `service-unavailable`. An activation without `sid` or `<activate/>` is
    /// `bad-request`, with a target that is not a JID `jid-malformed`.
    fn parse(ty: IqType, query: Node<'a, '_>) -> Option<Result<Self, StanzaCondition>> {
        if !query.has_tag_name((NS, "query")) {
            return None;
        }
        match ty {
            IqType::Get => Some(Ok(Request::Streamhost)),
            IqType::Set => Some(Request::activation(query)),
            IqType::Result | IqType::Error => None,
        }
    }

    fn activation(query: Node<'a, '_>) -> Result<Self, StanzaCondition> {
        let sid = query.attribute("sid").ok_or(StanzaCondition::BadRequest)?;
        let target =
            stanza::child_text(query, "activate", NS).ok_or(StanzaCondition::BadRequest)?;
        let target = Jid::parse(target.trim()).map_err(|_| StanzaCondition::JidMalformed)?;
        Ok(Request::Activate { sid, target })
    }
}

/// Every stanza whose `to` is on the proxy's domain.
pub fn handle(server: &Server, session: &Session, stanza: &Stanza, out: &mut String) -> Deferred {
    let proxy = &server.state::<Proxy>();
    let from = proxy.domain().unwrap_or_default();
    let to = session.jid.as_str();
    let answered = disco::service_query(out, stanza, from, to, |out| {
        Element::new("identity")
            .attr("category", "proxy")
            .attr("type", "bytestreams")
            .attr("name", "SOCKS5 Bytestreams")
            .empty(out);
        for feature in [NS, disco::NS_INFO, disco::NS_ITEMS] {
            Element::new("feature").attr("var", feature).empty(out);
        }
    });
    if answered {
        return Deferred::None;
    }
    let for_service = stanza.to.as_ref().is_some_and(|j| j.local().is_none());
    let request = match stanza.ty {
        StanzaType::Iq(ty @ (IqType::Get | IqType::Set)) => stanza
            .payload()
            .filter(|_| for_service)
            .and_then(|query| Request::parse(ty, query)),
        StanzaType::Iq(IqType::Result | IqType::Error) => return Deferred::None,
        StanzaType::Message(_) if stanza.is_error() => return Deferred::None,
        StanzaType::Presence(_) => return Deferred::None,
        StanzaType::Message(_) => None,
    };
    let reply = match request {
        Some(Ok(Request::Streamhost)) => match proxy.streamhost.get() {
            Some((host, port)) => {
                let port = port.to_string();
                stanza::reply(stanza.kind, "result", stanza.id, from, to).children(out, |out| {
                    Element::new("query").ns(NS).children(out, |out| {
                        Element::new("streamhost")
                            .attr("jid", from)
                            .attr("host", host)
                            .attr("port", &port)
                            .empty(out);
                    });
                });
                return Deferred::None;
            }
            None => Err(StanzaCondition::ServiceUnavailable),
        },
        Some(Ok(Request::Activate { sid, target })) => activate(server, session, sid, &target),
        Some(Err(condition)) => Err(condition),
        None => Err(StanzaCondition::ServiceUnavailable),
    };
    match reply {
        Ok(()) => stanza::write_iq_result(out, stanza.id, from, to),
        Err(condition) => {
            let error = StanzaError::new(condition);
            stanza::write_error_reply(out, stanza.kind, stanza.id, from, to, &error);
        }
    }
    Deferred::None
}

/// XEP-0065 §6.3.4: the initiator asks for the relay of a pair with both ends connected.
fn activate(
    server: &Server,
    session: &Session,
    sid: &str,
    target: &Jid,
) -> Result<(), StanzaCondition> {
    let proxy = &server.state::<Proxy>();
    // §6.3.3: a proxy that will not act for this request says `not-allowed`. It relays
    // between local users only, so strangers cannot use it to reach anyone else.
    let local = target.domain() == server.config().domain
        && target.local().is_some_and(|user| {
            !server.is_retired(user) && server.store.user_exists(user).unwrap_or(false)
        });
    if !local {
        return Err(StanzaCondition::NotAllowed);
    }
    let hash = dst_addr(sid, session.jid.as_str(), target.as_str());
    let pairs = proxy.pairs.borrow();
    match pairs.get(hash.as_str()) {
        Some(pair) if pair.ends.len() == 2 => pair
            .activate
            .try_send(())
            .map_err(|_| StanzaCondition::NotAllowed),
        _ => Err(StanzaCondition::ItemNotFound),
    }
}

/// Binds the configured ports, so errors come out before the loop starts.
pub fn bind(config: &crate::config::Config) -> Result<Vec<TcpListener>, String> {
    listener::bind(config.proxy_domain().is_some(), &config.proxy.listen)
}

/// Sets the advertised streamhost from the first port, then serves every listener.
pub fn start(ex: &Rc<LocalExecutor<'static>>, server: &Rc<Server>, listeners: Vec<TcpListener>) {
    let Some(port) = listener::first_port(&listeners) else {
        return;
    };
    let config = &server.config();
    let host = config.proxy.host.as_deref().unwrap_or(&config.domain);
    let _ = server.state::<Proxy>().streamhost.set((host.into(), port));
    // A task per relay or waiting pair, twice over for handshakes and second ends.
    let caps = listener::Caps {
        total: config.proxy.max_relays.saturating_mul(2).saturating_add(16),
        per_ip: config.proxy.max_connections_per_ip,
    };
    let server = server.clone();
    listener::spawn_accept(ex, listeners, "proxy", caps, move |tcp, peer| {
        serve(server.clone(), tcp, peer)
    });
}

/// Where a connection that finished its handshake goes.
enum Placed {
    /// The first end of a new pair: waits for activation, then relays.
    First(Receiver<()>),
    /// The second end: waits until its pair leaves the table.
    Second(Receiver<()>),
    /// Refused (0x02, connection not allowed by ruleset).
    Refused,
}

/// One SOCKS5 connection: handshake, then park it in its pair. The first end's task
/// waits for activation and runs the relay; every end watches its socket while it waits,
/// so a hang-up frees the pair at once; an unactivated pair is dropped in time.
async fn serve(server: Rc<Server>, mut tcp: TcpStream, peer: SocketAddr) {
    let config = server.config();
    let handshake_time = Duration::from_secs(config.proxy.first_byte_secs.into());
    let Ok(Some(hash)) = timed(handshake_time, handshake(&mut tcp)).await else {
        return;
    };
    let placed = place(&server, &hash, &tcp, peer.ip());
    let code = if matches!(placed, Placed::Refused) {
        0x02
    } else {
        0x00
    };
    // A failed reply leaves a dead end: it hangs up, and its watch frees the pair.
    let _ = reply(&mut tcp, code, &hash).await;
    let proxy = &server.state::<Proxy>();
    let wait = Duration::from_secs(config.proxy.wait_secs.into());
    let waiting = match placed {
        Placed::Refused => return,
        Placed::Second(left) => {
            // Nothing is ever sent on `left`: it ends when the pair leaves the table.
            let pair_left = async {
                let _ = left.recv().await;
                false
            };
            if smol::future::or(hung_up(&tcp), pair_left).await {
                // The pair cannot be used any more: its slot and the first end go now.
                proxy.take_pair(&hash);
            }
            return;
        }
        Placed::First(waiting) => waiting,
    };
    let activated = smol::future::or(
        async { waiting.recv().await.is_ok() },
        smol::future::or(async { !hung_up(&tcp).await }, async {
            Timer::after(wait).await;
            false
        }),
    )
    .await;
    drop(tcp);
    let Some(Pair {
        ends,
        activate,
        _left,
        left,
    }) = proxy.take_pair(&hash)
    else {
        return;
    };
    // The second end's task stops watching its socket before the relay reads it.
    drop((activate, _left, left));
    let mut ends = ends.into_iter().map(|(stream, _)| stream);
    let (Some(a), Some(b), true) = (ends.next(), ends.next(), activated) else {
        info!("proxy: bytestream {hash} not activated (an end hung up, or proxy.wait_secs passed)");
        return;
    };
    proxy.relays.set(proxy.relays.get() + 1);
    info!("proxy: bytestream {hash} activated");
    let budget = Cell::new(config.proxy.max_relay_bytes);
    let lifetime = Duration::from_secs(config.proxy.max_relay_secs.into());
    let relay = smol::future::zip(pump(a.clone(), b.clone(), &budget), pump(b, a, &budget));
    let finished = smol::future::or(
        async {
            match relay.await {
                (Ended::OverBudget, _) | (_, Ended::OverBudget) => Ended::OverBudget,
                _ => Ended::Done,
            }
        },
        async {
            Timer::after(lifetime).await;
            Ended::TimeUp
        },
    )
    .await;
    proxy.relays.set(proxy.relays.get() - 1);
    match finished {
        Ended::Done => info!("proxy: bytestream {hash} ended"),
        Ended::OverBudget => warn!(
            "proxy: bytestream {hash} cut after {} bytes (proxy.max_relay_bytes)",
            config.proxy.max_relay_bytes
        ),
        Ended::TimeUp => warn!(
            "proxy: bytestream {hash} cut after {} s (proxy.max_relay_secs)",
            config.proxy.max_relay_secs
        ),
    }
}

/// Puts a connection into the pair its hash names, under the relay cap and the waiting
/// cap of its address.
fn place(server: &Server, hash: &str, tcp: &TcpStream, ip: IpAddr) -> Placed {
    let proxy = &server.state::<Proxy>();
    let config = &server.config().proxy;
    let waiting_here = proxy.waiting.borrow().get(&ip).copied().unwrap_or(0);
    // Someone logged in from this address is probably a user; anyone else gets less.
    let allowed = if server.protection.has_authenticated(ip) {
        config.max_waiting_per_ip
    } else {
        config.max_waiting_per_stranger
    };
    if waiting_here >= allowed {
        proxy.refusals.note(|unlogged| {
            format!(
                "proxy: {ip} has {waiting_here} connections waiting, one refused \
                 ({unlogged} more refused since the last warning)"
            )
        });
        return Placed::Refused;
    }
    let mut pairs = proxy.pairs.borrow_mut();
    let busy = pairs.len() as u32 + proxy.relays.get();
    let placed = match pairs.get_mut(hash) {
        Some(pair) if pair.ends.len() == 1 => {
            pair.ends.push((tcp.clone(), ip));
            Placed::Second(pair.left.clone())
        }
        Some(_) => Placed::Refused,
        None if busy >= config.max_relays => {
            proxy.refusals.note(|unlogged| {
                format!(
                    "proxy: relay limit reached, a bytestream refused \
                     ({unlogged} more refused since the last warning)"
                )
            });
            Placed::Refused
        }
        None => {
            let (activate, waiting) = smol::channel::bounded(1);
            let (_left, left) = smol::channel::bounded(1);
            let ends = vec![(tcp.clone(), ip)];
            pairs.insert(
                hash.into(),
                Pair {
                    ends,
                    activate,
                    _left,
                    left,
                },
            );
            Placed::First(waiting)
        }
    };
    if !matches!(placed, Placed::Refused) {
        *proxy.waiting.borrow_mut().entry(ip).or_default() += 1;
    }
    placed
}

/// Resolves to true once the peer hangs up (or the socket fails). A peer that sends
/// before activation is early, not gone: it is then left to the waiting time.
async fn hung_up(tcp: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await {
        Ok(0) | Err(_) => true,
        Ok(_) => smol::future::pending().await,
    }
}

/// How a relay ended.
enum Ended {
    Done,
    OverBudget,
    TimeUp,
}

/// Copies one direction until end of stream or until the shared byte budget is spent,
/// then passes the end on.
async fn pump(mut from: TcpStream, mut to: TcpStream, budget: &Cell<u64>) -> Ended {
    let mut buf = [0u8; 8 * 1024];
    let ended = loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break Ended::Done,
            Ok(n) => {
                let Some(left) = budget.get().checked_sub(n as u64) else {
                    break Ended::OverBudget;
                };
                budget.set(left);
                // A read never reports more than the buffer holds.
                let Some(read) = buf.get(..n) else {
                    break Ended::Done;
                };
                if to.write_all(read).await.is_err() {
                    break Ended::Done;
                }
            }
        }
    };
    if matches!(ended, Ended::OverBudget) {
        // Both directions stop: the other pump sees its reads end.
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    } else {
        let _ = to.shutdown(Shutdown::Write);
    }
    ended
}

/// RFC 1928 greeting (no authentication) and CONNECT to a domain-name address: returns
/// the DST.ADDR, or `None` after telling the client why not.
async fn handshake(tcp: &mut TcpStream) -> io::Result<Option<String>> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await?;
    let mut methods = vec![0u8; usize::from(head[1])];
    tcp.read_exact(&mut methods).await?;
    if head[0] != 5 || !methods.contains(&0) {
        tcp.write_all(&[5, 0xff]).await?;
        return Ok(None);
    }
    tcp.write_all(&[5, 0]).await?;
    let mut request = [0u8; 5];
    tcp.read_exact(&mut request).await?;
    let [version, command, _, kind, len] = request;
    if version != 5 || command != 1 || kind != 3 {
        // 0x07: command not supported; 0x08: address type not supported.
        let code = if command != 1 { 0x07 } else { 0x08 };
        tcp.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(None);
    }
    let mut addr = vec![0u8; usize::from(len) + 2];
    tcp.read_exact(&mut addr).await?;
    addr.truncate(usize::from(len));
    match String::from_utf8(addr) {
        Ok(hash) if hash.len() == HASH_LEN && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(hash.to_ascii_lowercase()))
        }
        _ => {
            tcp.write_all(&[5, 0x04, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            Ok(None)
        }
    }
}

/// The CONNECT reply, echoing the address (XEP-0065 §6.3.2).
async fn reply(tcp: &mut TcpStream, code: u8, hash: &str) -> io::Result<()> {
    let mut out = vec![5, code, 0, 3, HASH_LEN as u8];
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(&[0, 0]);
    timed(REPLY_TIMEOUT, tcp.write_all(&out)).await
}

impl crate::feature::State for Proxy {
    fn new(config: &crate::config::Config, _store: &crate::store::Store) -> Self {
        Proxy::new(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ty: IqType, query: &str, expected: Option<Result<Request, StanzaCondition>>) {
        let doc = roxmltree::Document::parse(query).unwrap();
        assert_eq!(Request::parse(ty, doc.root_element()), expected, "{query}");
    }

    const NS_Q: &str = "xmlns='http://jabber.org/protocol/bytestreams'";

    #[test]
    fn a_get_asks_for_the_streamhost_xep_0065_s6_3_2() {
        check(
            IqType::Get,
            &format!("<query {NS_Q}/>"),
            Some(Ok(Request::Streamhost)),
        );
    }

    #[test]
    fn a_set_activates_sid_towards_target_xep_0065_s6_3_4() {
        check(
            IqType::Set,
            &format!("<query {NS_Q} sid='s1'><activate> bob@localhost/r </activate></query>"),
            Some(Ok(Request::Activate {
                sid: "s1",
                target: Jid::parse("bob@localhost/r").unwrap(),
            })),
        );
    }

    #[test]
    fn an_activation_without_sid_or_activate_is_bad_request() {
        for query in [
            format!("<query {NS_Q}><activate>bob@localhost</activate></query>"),
            format!("<query {NS_Q} sid='s1'/>"),
        ] {
            check(IqType::Set, &query, Some(Err(StanzaCondition::BadRequest)));
        }
    }

    #[test]
    fn an_activation_of_a_bad_jid_is_jid_malformed() {
        check(
            IqType::Set,
            &format!("<query {NS_Q} sid='s1'><activate>a@b@c</activate></query>"),
            Some(Err(StanzaCondition::JidMalformed)),
        );
    }

    #[test]
    fn another_payload_is_not_a_request() {
        check(IqType::Get, "<query xmlns='urn:other'/>", None);
        check(IqType::Get, &format!("<streamhost {NS_Q}/>"), None);
    }

    #[test]
    fn dst_addr_is_sha1_of_the_three() {
        // XEP-0065 example: SHA1 of the concatenation, as lowercase hex.
        assert_eq!(
            dst_addr("", "", ""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(dst_addr("a", "b", "c"), dst_addr("abc", "", ""));
    }
}
