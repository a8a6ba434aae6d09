//! XEP-0065 SOCKS5 Bytestreams proxy for local users, on `proxy.<domain>`: the XMPP side
//! tells a user where the streamhost is and activates a pair; the SOCKS5 side accepts
//! connections, pairs the two ends of a bytestream by their DST.ADDR (SHA-1 of session id,
//! initiator and target JIDs) and, only once the initiator has activated the pair, copies
//! bytes both ways through small fixed buffers. It must never relay before activation or
//! for an activation that does not come from the initiator named in the hash.

use crate::disco;
use crate::dispatch::Deferred;
use crate::jid::Jid;
use crate::listener::{self, timed};
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, Stanza, StanzaCondition, StanzaError, StanzaType};
use crate::xml::Esc;
use log::{info, warn};
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{Shutdown, TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt::Write;
use std::io;
use std::rc::Rc;
use std::time::Duration;

pub const NS: &str = "http://jabber.org/protocol/bytestreams";

/// The SOCKS5 handshake must be over within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A pair not activated within this is closed.
const UNPAIRED_TIMEOUT: Duration = Duration::from_secs(60);
/// DST.ADDR is a hex SHA-1.
const HASH_LEN: usize = 40;

/// One bytestream waiting for its second end or its activation.
struct Pair {
    streams: Vec<TcpStream>,
    /// Wakes the task of the first end, which then runs the relay.
    activate: Sender<()>,
}

/// The proxy: its domain, advertised address and the pairs waiting.
pub struct Proxy {
    domain: Option<Box<str>>,
    /// `host` and port of the `<streamhost/>`, set once the port is bound.
    streamhost: OnceCell<(Box<str>, u16)>,
    pairs: RefCell<HashMap<Box<str>, Pair>>,
    /// Relays running now.
    relays: Cell<u32>,
}

impl Proxy {
    pub fn new(config: &crate::config::Config) -> Proxy {
        Proxy {
            domain: config.proxy_domain().map(String::into_boxed_str),
            streamhost: OnceCell::new(),
            pairs: RefCell::default(),
            relays: Cell::new(0),
        }
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

/// Every stanza whose `to` is on the proxy's domain.
pub fn handle(server: &Server, session: &Session, stanza: &Stanza, out: &mut String) -> Deferred {
    let proxy = &server.proxy;
    let from = proxy.domain().unwrap_or_default();
    let to = session.jid.as_str();
    let answered = disco::service_query(out, stanza, from, to, |out| {
        out.push_str("<identity category='proxy' type='bytestreams' name='SOCKS5 Bytestreams'/>");
        for feature in [NS, disco::NS_INFO, disco::NS_ITEMS] {
            let _ = write!(out, "<feature var='{feature}'/>");
        }
    });
    if answered {
        return Deferred::None;
    }
    let query = stanza
        .payload()
        .filter(|q| q.has_tag_name((NS, "query")))
        .filter(|_| stanza.to.as_ref().is_some_and(|j| j.local().is_none()));
    let reply = match (stanza.ty, query) {
        (StanzaType::Iq(IqType::Get), Some(_)) => match proxy.streamhost.get() {
            Some((host, port)) => {
                stanza::open_reply(out, stanza.kind, "result", stanza.id, from, to);
                let _ = write!(
                    out,
                    "><query xmlns='{NS}'><streamhost jid='{}' host='{}' port='{port}'/></query></iq>",
                    Esc(from),
                    Esc(host)
                );
                return Deferred::None;
            }
            None => Err(StanzaCondition::ServiceUnavailable),
        },
        (StanzaType::Iq(IqType::Set), Some(query)) => activate(proxy, session, query),
        (StanzaType::Iq(IqType::Result | IqType::Error), _) => return Deferred::None,
        (StanzaType::Message(_), _) if stanza.node.attribute("type") == Some("error") => {
            return Deferred::None
        }
        (StanzaType::Presence(_), _) => return Deferred::None,
        _ => Err(StanzaCondition::ServiceUnavailable),
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
    proxy: &Proxy,
    session: &Session,
    query: roxmltree::Node,
) -> Result<(), StanzaCondition> {
    let sid = query.attribute("sid").ok_or(StanzaCondition::BadRequest)?;
    let target = stanza::child_text(query, "activate", NS).ok_or(StanzaCondition::BadRequest)?;
    let target = Jid::parse(target.trim()).map_err(|_| StanzaCondition::JidMalformed)?;
    let hash = dst_addr(sid, session.jid.as_str(), target.as_str());
    let pairs = proxy.pairs.borrow();
    match pairs.get(hash.as_str()) {
        Some(pair) if pair.streams.len() == 2 => pair
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
    let _ = server.proxy.streamhost.set((host.into(), port));
    // A task per relay or waiting pair, twice over for handshakes and second ends.
    let max = config.proxy.max_relays.saturating_mul(2).saturating_add(16);
    let server = server.clone();
    listener::spawn_accept(ex, listeners, "proxy", max, move |tcp| {
        serve(server.clone(), tcp)
    });
}

/// One SOCKS5 connection: handshake, then park it in its pair. The first end's task
/// waits for activation and runs the relay; an unactivated pair is dropped in time.
async fn serve(server: Rc<Server>, mut tcp: TcpStream) {
    let Ok(Some(hash)) = timed(HANDSHAKE_TIMEOUT, handshake(&mut tcp)).await else {
        return;
    };
    let proxy = &server.proxy;
    // Where this end goes: `Ok(Some)` opens a pair, `Ok(None)` completes one, `Err` refuses.
    let placed: Result<Option<Receiver<()>>, ()> = {
        let mut pairs = proxy.pairs.borrow_mut();
        let busy = pairs.len() as u32 + proxy.relays.get();
        match pairs.get_mut(hash.as_str()) {
            Some(pair) if pair.streams.len() == 1 => {
                pair.streams.push(tcp.clone());
                Ok(None)
            }
            Some(_) => Err(()),
            None if busy >= server.config().proxy.max_relays => {
                warn!("proxy: relay limit reached, a bytestream refused");
                Err(())
            }
            None => {
                let (activate, waiting) = smol::channel::bounded(1);
                let streams = vec![tcp.clone()];
                pairs.insert(hash.as_str().into(), Pair { streams, activate });
                Ok(Some(waiting))
            }
        }
    };
    // 0x02: connection not allowed by ruleset.
    let code = if placed.is_ok() { 0x00 } else { 0x02 };
    // A failed reply leaves a dead end that relays nothing and times out.
    let _ = reply(&mut tcp, code, &hash).await;
    let Ok(Some(waiting)) = placed else {
        return;
    };
    drop(tcp);
    let activated = smol::future::or(async { waiting.recv().await.is_ok() }, async {
        Timer::after(UNPAIRED_TIMEOUT).await;
        false
    })
    .await;
    let Some(pair) = proxy.pairs.borrow_mut().remove(hash.as_str()) else {
        return;
    };
    let mut streams = pair.streams.into_iter();
    let (Some(a), Some(b), true) = (streams.next(), streams.next(), activated) else {
        info!("proxy: bytestream {hash} not activated in time");
        return;
    };
    proxy.relays.set(proxy.relays.get() + 1);
    info!("proxy: bytestream {hash} activated");
    smol::future::zip(pump(a.clone(), b.clone()), pump(b, a)).await;
    proxy.relays.set(proxy.relays.get() - 1);
    info!("proxy: bytestream {hash} ended");
}

/// Copies one direction until end of stream, then passes the end on.
async fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 8 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
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
    timed(HANDSHAKE_TIMEOUT, tcp.write_all(&out)).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
