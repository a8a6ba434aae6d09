//! Finding a peer domain's servers: static routes, DNS SRV (RFC 6120 §3.2, XEP-0368), A/AAAA.
//!
//! The system resolver (getaddrinfo) cannot ask for SRV records, so this module owns a
//! minimal DNS client for that one question: a pure codec (`encode_query`,
//! `parse_srv_answer`) and a thin UDP exchange (TCP when the answer is truncated) with the
//! nameservers of `/etc/resolv.conf`. It never blocks the event loop (smol sockets and
//! timers; A/AAAA lookups go through smol's blocking pool), never panics on what a
//! nameserver sends, never caches and never follows CNAMEs. It decides where to connect,
//! not whether: the allow and deny lists and the connection itself belong to the caller.

use log::debug;
use ring::rand::{SecureRandom, SystemRandom};
use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpStream, UdpSocket};
use smol::Timer;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// RFC 6120 §3.2.2 and §14.7: the registered port of `xmpp-server`, used when DNS has no
/// SRV record for the domain.
pub const XMPP_SERVER_PORT: u16 = 5269;
/// XEP-0368 §3: the service whose targets take TLS from the first byte.
const DIRECT_TLS_SERVICE: &str = "_xmpps-server._tcp.";
/// RFC 6120 §3.2.1: the service of ordinary (STARTTLS) server-to-server streams.
const STARTTLS_SERVICE: &str = "_xmpp-server._tcp.";

const RESOLV_CONF: &str = "/etc/resolv.conf";
/// resolv.conf(5): the resolver reads at most this many `nameserver` lines (MAXNS).
const MAX_NAMESERVERS: usize = 3;
const DNS_PORT: u16 = 53;
/// Each nameserver gets this long to answer (over UDP, and TCP after a truncated answer)
/// before the next one is asked; a lookup therefore ends within `MAX_NAMESERVERS` times
/// this, and the two services are asked at the same time. The caller's
/// `connect_timeout_secs` bounds the whole connection attempt anyway.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 6891 §6.2.5 and the DNS flag day 2020 advice: the UDP payload we accept, small
/// enough to cross any path without fragments.
const UDP_PAYLOAD_BYTES: u16 = 1232;
/// SRV records kept from one answer: a real domain has a handful, and a hostile or broken
/// nameserver cannot make the caller try thousands of targets.
const MAX_RECORDS: usize = 32;

const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const HEADER_BYTES: usize = 12;
/// RFC 1035 §2.3.4: a name's wire form, length octets included.
const MAX_NAME_BYTES: usize = 255;
const MAX_LABEL_BYTES: usize = 63;
/// RFC 1035 §4.1.1 header flags.
const FLAG_RESPONSE: u16 = 0x8000;
const FLAG_TRUNCATED: u16 = 0x0200;
const FLAG_RECURSION_DESIRED: u16 = 0x0100;
const RCODE_NAME_ERROR: u8 = 3;

/// One place to try, in order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub port: u16,
    /// XEP-0368: TLS from the first byte (an `_xmpps-server` target), not STARTTLS.
    pub direct_tls: bool,
}

/// The data of one SRV resource record (RFC 2782).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// A host name without its final dot, or "." (RFC 2782: the service is decidedly not
    /// available at this domain).
    pub target: String,
}

/// Why bytes are not the answer to our SRV question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// The name cannot be asked: an empty label, a label over 63 bytes, a name over 255
    /// bytes, or a character that is not ASCII (an IDN needs its A-label form).
    BadName,
    /// Not a response to this query (another id, not a response, another question): a
    /// stray or forged datagram, to be ignored while the real answer may still come.
    NotOurs,
    /// The server cut the answer to fit (TC): ask again over TCP.
    Truncated,
    /// The server answered with this error code (RFC 1035 §4.1.1: 2 SERVFAIL, 5 REFUSED, …).
    Rcode(u8),
    /// Not a DNS message: cut short, a compression pointer that loops or points past the
    /// end, a name over 255 bytes, a record longer than the message.
    Malformed,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::BadName => f.write_str("not a name DNS can carry"),
            DnsError::NotOurs => f.write_str("not an answer to the question asked"),
            DnsError::Truncated => f.write_str("answer truncated"),
            DnsError::Rcode(code) => write!(f, "server error (rcode {code})"),
            DnsError::Malformed => f.write_str("malformed DNS message"),
        }
    }
}

impl std::error::Error for DnsError {}

/// Where to connect for `domain`, best first.
///
/// - A static route from `config.routes` (the domain's, or a parent domain's) is the only
///   candidate (RFC 6120 §3.2.3: a configured association is used instead of SRV).
/// - A domain that is an IP address needs no lookup: that address, port 5269.
/// - Otherwise DNS SRV `_xmpps-server._tcp.<domain>` (direct TLS) and
///   `_xmpp-server._tcp.<domain>` merged and ordered by priority then weight (RFC 2782;
///   XEP-0368 §3 mixes both services' priorities and weights as one set).
/// - No SRV record at all: `<domain>:5269` with STARTTLS (RFC 6120 §3.2.2 fallback).
/// - An `_xmpp-server` answer of a single record with target "." means the service is
///   decidedly not available (RFC 6120 §3.2.1): empty list, no fallback. A "." for
///   `_xmpps-server` only says there is no direct TLS (XEP-0368 §5).
pub async fn candidates(config: &crate::config::S2s, domain: &str) -> Vec<Candidate> {
    if let Some(route) = route_for(config, domain) {
        return route_candidate(route).into_iter().collect();
    }
    if let Some(ip) = ip_literal(domain) {
        return vec![Candidate {
            host: ip.to_string(),
            port: XMPP_SERVER_PORT,
            direct_tls: false,
        }];
    }
    let resolv_conf = smol::fs::read_to_string(RESOLV_CONF)
        .await
        .unwrap_or_default();
    srv_candidates(&nameservers(&resolv_conf), domain).await
}

/// The static route for `domain`, or else for the nearest parent domain that has one: a
/// peer's services (`rooms.office.lan`) run on its server (`office.lan`), so on a LAN one
/// route covers them all.
fn route_for<'a>(config: &'a crate::config::S2s, domain: &str) -> Option<&'a String> {
    let mut name = domain;
    loop {
        if let Some(route) = config.routes.get(name) {
            return Some(route);
        }
        name = name.split_once('.')?.1;
    }
}

/// The addresses of one candidate: A/AAAA through the system resolver on smol's blocking
/// pool (so /etc/hosts and nsswitch apply), or the host itself when it is an IP address.
/// Empty when the name does not resolve.
pub async fn addresses(candidate: &Candidate) -> Vec<SocketAddr> {
    if let Some(ip) = ip_literal(&candidate.host) {
        return vec![SocketAddr::new(ip, candidate.port)];
    }
    match smol::net::resolve((candidate.host.as_str(), candidate.port)).await {
        Ok(addresses) => addresses,
        Err(error) => {
            debug!("s2s: {} does not resolve: {error}", candidate.host);
            Vec::new()
        }
    }
}

/// `host:port` of a validated route (the host may be a bracketed IPv6 address).
fn route_candidate(route: &str) -> Option<Candidate> {
    let (host, port) = route.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(Candidate {
        host: host.to_string(),
        port: port.parse().ok()?,
        direct_tls: false,
    })
}

/// An IPv4 address, or an IPv6 one with or without the brackets of a JID domainpart.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The `nameserver` lines of resolv.conf(5), at most three, port 53; without any, the
/// resolver's own default: the local host.
fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    let servers: Vec<SocketAddr> = resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            // A link-local address with a `%zone` does not parse and is skipped.
            words.next()?.parse::<IpAddr>().ok()
        })
        .take(MAX_NAMESERVERS)
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect();
    if servers.is_empty() {
        vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DNS_PORT)]
    } else {
        servers
    }
}

/// Both SRV lookups for `domain` at once, then [`merge`].
async fn srv_candidates(servers: &[SocketAddr], domain: &str) -> Vec<Candidate> {
    let (direct_tls, starttls) = future::zip(
        srv_lookup(servers, &format!("{DIRECT_TLS_SERVICE}{domain}")),
        srv_lookup(servers, &format!("{STARTTLS_SERVICE}{domain}")),
    )
    .await;
    merge(domain, direct_tls, starttls, &mut system_random)
}

/// The candidates from the two services' records (see [`candidates`]); `random(n)` gives
/// a number in `0..=n` for RFC 2782's weighted selection.
fn merge(
    domain: &str,
    direct_tls: Vec<SrvRecord>,
    starttls: Vec<SrvRecord>,
    random: &mut impl FnMut(u32) -> u32,
) -> Vec<Candidate> {
    if direct_tls.is_empty() && starttls.is_empty() {
        return vec![Candidate {
            host: domain.to_string(),
            port: XMPP_SERVER_PORT,
            direct_tls: false,
        }];
    }
    // A "." target is no place to connect to; a single one for `_xmpp-server` leaves
    // nothing (and no fallback, since the domain answered), one for `_xmpps-server`
    // leaves the STARTTLS records (XEP-0368 §5).
    let offers = direct_tls
        .into_iter()
        .map(|record| (record, true))
        .chain(starttls.into_iter().map(|record| (record, false)))
        .filter(|(record, _)| record.target != "." && record.port != 0)
        .collect();
    order(offers, random)
}

/// RFC 2782 "Usage rules": lowest priority first; within one priority, repeatedly pick a
/// record at random with probability proportional to its weight (zero-weight records
/// first in the running sum, so they are picked rarely but can be).
fn order(
    mut offers: Vec<(SrvRecord, bool)>,
    random: &mut impl FnMut(u32) -> u32,
) -> Vec<Candidate> {
    offers.sort_by_key(|(record, _)| (record.priority, record.weight != 0));
    let mut ordered = Vec::with_capacity(offers.len());
    while let Some((first, _)) = offers.first() {
        let priority = first.priority;
        let end = offers
            .iter()
            .position(|(record, _)| record.priority != priority)
            .unwrap_or(offers.len());
        let mut group: Vec<_> = offers.drain(..end).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|(r, _)| u32::from(r.weight)).sum();
            let pick = random(total);
            let mut running = 0;
            let chosen = group
                .iter()
                .position(|(record, _)| {
                    running += u32::from(record.weight);
                    running >= pick
                })
                .unwrap_or(group.len() - 1);
            let (record, direct_tls) = group.remove(chosen);
            ordered.push(Candidate {
                host: record.target,
                port: record.port,
                direct_tls,
            });
        }
    }
    ordered
}

/// A number in `0..=bound` from the system's generator (0 if it fails: the order then
/// is still by priority, only the weights are not honoured).
fn system_random(bound: u32) -> u32 {
    let mut bytes = [0; 4];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0;
    }
    let value = u32::from_be_bytes(bytes);
    bound.checked_add(1).map_or(value, |range| value % range)
}

/// The SRV records of `name`, asking each nameserver in turn until one answers. Empty
/// when the name has none or no nameserver answered (the caller falls back either way).
async fn srv_lookup(servers: &[SocketAddr], name: &str) -> Vec<SrvRecord> {
    for server in servers {
        let attempt = async { Some(ask(*server, name).await) };
        let timeout = async {
            Timer::after(QUERY_TIMEOUT).await;
            None
        };
        match future::or(attempt, timeout).await {
            Some(Ok(records)) => return records,
            Some(Err(error)) => debug!("s2s: DNS {server} on SRV {name}: {error}"),
            None => debug!("s2s: DNS {server} on SRV {name}: no answer"),
        }
    }
    Vec::new()
}

/// One SRV question to one nameserver over UDP, and over TCP if the answer is truncated.
async fn ask(server: SocketAddr, name: &str) -> io::Result<Vec<SrvRecord>> {
    let mut id = [0; 2];
    SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| io::Error::other("no random query id"))?;
    let id = u16::from_be_bytes(id);
    let query = encode_query(id, name, TYPE_SRV).map_err(io::Error::other)?;
    let any: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    // A connected socket receives only from the server asked: a forged answer must also
    // come from its address, besides guessing the id and the ephemeral port.
    socket.connect(server).await?;
    socket.send(&query).await?;
    let mut buffer = vec![0; usize::from(UDP_PAYLOAD_BYTES)];
    loop {
        let received = socket.recv(&mut buffer).await?;
        let reply = buffer.get(..received).unwrap_or_default();
        match parse_srv_answer(id, name, reply) {
            Ok(records) => return Ok(records),
            Err(DnsError::Truncated) => return ask_over_tcp(server, id, name, &query).await,
            Err(error @ DnsError::Rcode(_)) => return Err(io::Error::other(error)),
            // Not (yet) the answer: keep listening until the timeout.
            Err(_) => continue,
        }
    }
}

/// RFC 1035 §4.2.2 / RFC 7766: the same query over TCP, each message after its length.
async fn ask_over_tcp(
    server: SocketAddr,
    id: u16,
    name: &str,
    query: &[u8],
) -> io::Result<Vec<SrvRecord>> {
    let mut stream = TcpStream::connect(server).await?;
    let length = u16::try_from(query.len()).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut length = [0; 2];
    stream.read_exact(&mut length).await?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut reply).await?;
    parse_srv_answer(id, name, &reply).map_err(io::Error::other)
}

/// A standard query (RFC 1035 §4.1) for `name` and `qtype` in class IN, recursion desired,
/// with an EDNS(0) OPT record offering a 1232-byte UDP payload (RFC 6891 §6.1.2).
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let wire = wire_name(name)?;
    let mut query = Vec::with_capacity(HEADER_BYTES + wire.len() + 4 + 11);
    for field in [id, FLAG_RECURSION_DESIRED, 1, 0, 0, 1] {
        query.extend_from_slice(&field.to_be_bytes());
    }
    query.extend_from_slice(&wire);
    query.extend_from_slice(&qtype.to_be_bytes());
    query.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT: root owner, the payload size in the class field, TTL 0 (no extended rcode,
    // version 0, no DO bit), no options.
    query.push(0);
    query.extend_from_slice(&TYPE_OPT.to_be_bytes());
    query.extend_from_slice(&UDP_PAYLOAD_BYTES.to_be_bytes());
    query.extend_from_slice(&[0; 6]);
    Ok(query)
}

/// The SRV records for `name` in `message`, which must answer query `id` for `name`
/// (type SRV, class IN). Records of other names or types are skipped, as are SRV records
/// whose target is not a host name; at most 32 are kept. A name error (NXDOMAIN) is an
/// answer with no records.
pub fn parse_srv_answer(id: u16, name: &str, message: &[u8]) -> Result<Vec<SrvRecord>, DnsError> {
    let question = wire_name(name)?;
    let mut reader = Reader { message, at: 0 };
    let (message_id, flags) = (reader.u16()?, reader.u16()?);
    let (questions, answers) = (reader.u16()?, reader.u16()?);
    reader.skip(4)?; // authority and additional counts: those sections are not read
    let opcode = (flags >> 11) & 0xF;
    if message_id != id || flags & FLAG_RESPONSE == 0 || opcode != 0 || questions != 1 {
        return Err(DnsError::NotOurs);
    }
    if reader.name()? != question || reader.u16()? != TYPE_SRV || reader.u16()? != CLASS_IN {
        return Err(DnsError::NotOurs);
    }
    if flags & FLAG_TRUNCATED != 0 {
        return Err(DnsError::Truncated);
    }
    match (flags & 0xF) as u8 {
        0 => {}
        RCODE_NAME_ERROR => return Ok(Vec::new()),
        code => return Err(DnsError::Rcode(code)),
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        let owner = reader.name()?;
        let (rtype, class) = (reader.u16()?, reader.u16()?);
        reader.skip(4)?; // TTL: nothing is cached
        let length = usize::from(reader.u16()?);
        let data_end = reader.at + length;
        if data_end > message.len() {
            return Err(DnsError::Malformed);
        }
        if rtype == TYPE_SRV && class == CLASS_IN && owner == question {
            let (priority, weight, port) = (reader.u16()?, reader.u16()?, reader.u16()?);
            let target = reader.name()?;
            if reader.at > data_end {
                return Err(DnsError::Malformed);
            }
            if let (Some(target), true) = (host_name(&target), records.len() < MAX_RECORDS) {
                records.push(SrvRecord {
                    priority,
                    weight,
                    port,
                    target,
                });
            }
        }
        reader.at = data_end;
    }
    Ok(records)
}

/// `name` (dots between labels, an optional final dot) in lowercase wire form.
fn wire_name(name: &str) -> Result<Vec<u8>, DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut wire = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            let length = label.len();
            if length == 0 || length > MAX_LABEL_BYTES || !label.is_ascii() {
                return Err(DnsError::BadName);
            }
            wire.push(length as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    wire.push(0);
    if wire.len() > MAX_NAME_BYTES {
        return Err(DnsError::BadName);
    }
    Ok(wire)
}

/// A wire-form name as a host name ("." for the root), or `None` when a label holds
/// anything but letters, digits, '-' and '_'.
fn host_name(wire: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    let mut rest = wire;
    while let Some((&length, tail)) = rest.split_first() {
        if length == 0 {
            break;
        }
        let (label, tail) = tail.split_at_checked(usize::from(length))?;
        let valid = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
        if !label.iter().all(valid) {
            return None;
        }
        labels.push(std::str::from_utf8(label).ok()?);
        rest = tail;
    }
    Some(if labels.is_empty() {
        ".".to_string()
    } else {
        labels.join(".")
    })
}

/// A cursor over a DNS message; every read is checked against the end.
struct Reader<'a> {
    message: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u16(&mut self) -> Result<u16, DnsError> {
        let bytes = self
            .message
            .get(self.at..self.at + 2)
            .ok_or(DnsError::Malformed)?;
        self.at += 2;
        Ok(u16::from_be_bytes([
            *bytes.first().ok_or(DnsError::Malformed)?,
            *bytes.get(1).ok_or(DnsError::Malformed)?,
        ]))
    }

    fn skip(&mut self, count: usize) -> Result<(), DnsError> {
        if self.at + count > self.message.len() {
            return Err(DnsError::Malformed);
        }
        self.at += count;
        Ok(())
    }

    /// The name at the cursor in lowercase wire form, following compression pointers
    /// (RFC 1035 §4.1.4). Each pointer must point before the label run that holds it, so
    /// a chain of them only ever moves backwards and cannot loop; the name may not grow
    /// past 255 bytes. The cursor ends after the name's first pointer or its root label.
    fn name(&mut self) -> Result<Vec<u8>, DnsError> {
        let mut wire = Vec::new();
        let mut at = self.at;
        let mut run_start = self.at;
        let mut resume = None;
        loop {
            let length = *self.message.get(at).ok_or(DnsError::Malformed)?;
            match length & 0xC0 {
                0x00 if length == 0 => {
                    wire.push(0);
                    self.at = resume.unwrap_or(at + 1);
                    return Ok(wire);
                }
                0x00 => {
                    let label = self
                        .message
                        .get(at + 1..at + 1 + usize::from(length))
                        .ok_or(DnsError::Malformed)?;
                    wire.push(length);
                    wire.extend(label.iter().map(u8::to_ascii_lowercase));
                    // Room must remain for the root label.
                    if wire.len() >= MAX_NAME_BYTES {
                        return Err(DnsError::Malformed);
                    }
                    at += 1 + usize::from(length);
                }
                0xC0 => {
                    let low = *self.message.get(at + 1).ok_or(DnsError::Malformed)?;
                    let target = usize::from(u16::from_be_bytes([length & 0x3F, low]));
                    if target >= run_start {
                        return Err(DnsError::Malformed);
                    }
                    resume.get_or_insert(at + 2);
                    run_start = target;
                    at = target;
                }
                // 0x40 and 0x80: extended label types (RFC 6891 §5), not used in answers.
                _ => return Err(DnsError::Malformed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::net::TcpListener;
    use std::collections::BTreeMap;

    const TLS_NAME: &str = "_xmpps-server._tcp.example.net";
    const PLAIN_NAME: &str = "_xmpp-server._tcp.example.net";

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_string(),
        }
    }

    fn candidate(host: &str, port: u16, direct_tls: bool) -> Candidate {
        Candidate {
            host: host.to_string(),
            port,
            direct_tls,
        }
    }

    /// The question section of `query` (from just after the header to after its class).
    fn question_of(query: &[u8]) -> &[u8] {
        let mut reader = Reader {
            message: query,
            at: HEADER_BYTES,
        };
        reader.name().unwrap();
        reader.skip(4).unwrap();
        &query[HEADER_BYTES..reader.at]
    }

    /// A response to `query` the way a resolver writes one: the question copied, each
    /// answer's owner a compression pointer to it, `extra` raw records appended.
    fn response(query: &[u8], flags: u16, records: &[SrvRecord], extra: &[&[u8]]) -> Vec<u8> {
        let id = u16::from_be_bytes([query[0], query[1]]);
        let count = (records.len() + extra.len()) as u16;
        let mut out = Vec::new();
        for field in [id, FLAG_RESPONSE | flags, 1, count, 0, 0] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.extend_from_slice(question_of(query));
        for record in records {
            let target = wire_name(&record.target).unwrap();
            out.extend_from_slice(&[0xC0, 0x0C]);
            out.extend_from_slice(&TYPE_SRV.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&300u32.to_be_bytes());
            out.extend_from_slice(&(6 + target.len() as u16).to_be_bytes());
            for field in [record.priority, record.weight, record.port] {
                out.extend_from_slice(&field.to_be_bytes());
            }
            out.extend_from_slice(&target);
        }
        for raw in extra {
            out.extend_from_slice(raw);
        }
        out
    }

    fn none() -> Vec<Candidate> {
        Vec::new()
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        encode_query(id, name, TYPE_SRV).unwrap()
    }

    #[test]
    fn query_is_a_standard_recursive_question_with_edns() {
        let bytes = query(0xBEEF, "_xmpp-server._tcp.Example.NET.");
        assert_eq!(&bytes[..12], &[0xBE, 0xEF, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
        let mut reader = Reader {
            message: &bytes,
            at: HEADER_BYTES,
        };
        assert_eq!(reader.name().unwrap(), wire_name(PLAIN_NAME).unwrap());
        assert_eq!(reader.u16().unwrap(), TYPE_SRV);
        assert_eq!(reader.u16().unwrap(), CLASS_IN);
        // The OPT pseudo-record: root owner, type 41, 1232 bytes, TTL 0, no data.
        assert_eq!(
            &bytes[reader.at..],
            &[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn names_dns_cannot_carry_are_refused() {
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = ["abcdefghi"; 26].join(".");
        for name in [
            long_label.as_str(),
            long_name.as_str(),
            "a..b",
            ".a",
            "bücher.example",
        ] {
            assert_eq!(encode_query(1, name, TYPE_SRV), Err(DnsError::BadName));
        }
        assert!(encode_query(1, &["abcdefgh"; 28].join("."), TYPE_SRV).is_ok());
    }

    #[test]
    fn answer_round_trip_skips_other_names_and_types() {
        let q = query(7, PLAIN_NAME);
        let records = [
            srv(5, 10, 5269, "xmpp.example.net"),
            srv(10, 0, 5270, "b.example.net"),
        ];
        // An A record for the question's name, and an SRV record for another name.
        let a_record: &[u8] = &[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        let mut other = wire_name("_xmpp-client._tcp.example.net").unwrap();
        other.extend_from_slice(&[0, 33, 0, 1, 0, 0, 0, 60, 0, 7, 0, 1, 0, 1, 0, 1, 0]);
        let reply = response(&q, 0, &records, &[a_record, &other]);
        assert_eq!(parse_srv_answer(7, PLAIN_NAME, &reply).unwrap(), records);
        // Names compare without regard to case (RFC 4343).
        assert_eq!(
            parse_srv_answer(7, "_XMPP-server._tcp.EXAMPLE.net", &reply).unwrap(),
            records
        );
    }

    #[test]
    fn compressed_target_is_followed() {
        let q = query(7, PLAIN_NAME);
        let mut reply = response(&q, 0, &[], &[]);
        reply[7] = 1; // one answer
                      // "xmpp" and a pointer to "example.net" inside the question.
        let example_at = (HEADER_BYTES + 1 + "_xmpp-server".len() + 1 + "_tcp".len()) as u8;
        reply.extend_from_slice(&[0xC0, 0x0C, 0, 33, 0, 1, 0, 0, 0, 60, 0, 13]);
        reply.extend_from_slice(&[0, 1, 0, 2, 0x14, 0x95, 4, b'x', b'm', b'p', b'p']);
        reply.extend_from_slice(&[0xC0, example_at]);
        assert_eq!(
            parse_srv_answer(7, PLAIN_NAME, &reply).unwrap(),
            [srv(1, 2, 5269, "xmpp.example.net")]
        );
    }

    #[test]
    fn replies_to_another_query_are_not_ours() {
        let q = query(7, PLAIN_NAME);
        let reply = response(&q, 0, &[srv(1, 1, 5269, "a.example.net")], &[]);
        assert_eq!(
            parse_srv_answer(8, PLAIN_NAME, &reply),
            Err(DnsError::NotOurs)
        );
        assert_eq!(
            parse_srv_answer(7, TLS_NAME, &reply),
            Err(DnsError::NotOurs)
        );
        // Our own query echoed back is not a response.
        assert_eq!(parse_srv_answer(7, PLAIN_NAME, &q), Err(DnsError::NotOurs));
        // Another type in the question.
        let mut other_type = reply.clone();
        let type_at = HEADER_BYTES + wire_name(PLAIN_NAME).unwrap().len();
        other_type[type_at + 1] = 1;
        assert_eq!(
            parse_srv_answer(7, PLAIN_NAME, &other_type),
            Err(DnsError::NotOurs)
        );
    }

    #[test]
    fn error_codes_truncation_and_name_error() {
        let q = query(7, PLAIN_NAME);
        let nxdomain = response(&q, 3, &[], &[]);
        assert_eq!(parse_srv_answer(7, PLAIN_NAME, &nxdomain), Ok(Vec::new()));
        let servfail = response(&q, 2, &[], &[]);
        assert_eq!(
            parse_srv_answer(7, PLAIN_NAME, &servfail),
            Err(DnsError::Rcode(2))
        );
        let truncated = response(&q, FLAG_TRUNCATED, &[], &[]);
        assert_eq!(
            parse_srv_answer(7, PLAIN_NAME, &truncated),
            Err(DnsError::Truncated)
        );
    }

    #[test]
    fn every_truncation_of_an_answer_is_refused() {
        let q = query(7, PLAIN_NAME);
        let reply = response(&q, 0, &[srv(1, 1, 5269, "a.example.net")], &[]);
        for end in 0..reply.len() {
            let result = parse_srv_answer(7, PLAIN_NAME, &reply[..end]);
            assert!(result.is_err(), "cut at {end}: {result:?}");
        }
    }

    #[test]
    fn compression_loops_and_wild_pointers_are_malformed() {
        let q = query(7, PLAIN_NAME);
        let head = response(&q, 0, &[], &[]);
        let answer_at = head.len() as u8;
        let cases: [&[u8]; 4] = [
            // Owner name pointing at itself.
            &[0xC0, answer_at],
            // Past the end of the message.
            &[0xC0, 0xFF],
            // Forward to a pointer that comes back.
            &[0xC0, answer_at + 2, 0xC0, answer_at],
            // An extended label type.
            &[0x41, 0],
        ];
        for owner in cases {
            let mut reply = head.clone();
            reply[7] = 1;
            reply.extend_from_slice(owner);
            reply.extend_from_slice(&[0, 33, 0, 1, 0, 0, 0, 60, 0, 7, 0, 1, 0, 1, 0, 1, 0]);
            assert_eq!(
                parse_srv_answer(7, PLAIN_NAME, &reply),
                Err(DnsError::Malformed),
                "{owner:?}"
            );
        }
        // A target running past its record's data.
        let mut reply = head.clone();
        reply[7] = 1;
        reply.extend_from_slice(&[0xC0, 0x0C, 0, 33, 0, 1, 0, 0, 0, 60, 0, 6]);
        reply.extend_from_slice(&[0, 1, 0, 1, 0, 1, 1, b'a', 0]);
        assert_eq!(
            parse_srv_answer(7, PLAIN_NAME, &reply),
            Err(DnsError::Malformed)
        );
        // A record claiming more data than the message holds.
        let mut reply = head;
        reply[7] = 1;
        reply.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0xFF, 0xFF, 1]);
        assert_eq!(
            parse_srv_answer(7, PLAIN_NAME, &reply),
            Err(DnsError::Malformed)
        );
    }

    #[test]
    fn a_name_over_255_bytes_through_pointers_is_malformed() {
        // Five runs of one 60-byte label, each ending in a pointer to the run before:
        // every pointer is backwards, but the name they spell is 305 bytes long.
        let mut message = vec![0; HEADER_BYTES];
        let mut previous = None;
        for _ in 0..5 {
            let start = message.len();
            message.push(60);
            message.extend_from_slice(&[b'a'; 60]);
            match previous {
                Some(at) => message.extend_from_slice(&[0xC0, at as u8]),
                None => message.push(0),
            }
            previous = Some(start);
        }
        let mut reader = Reader {
            message: &message,
            at: previous.unwrap(),
        };
        assert_eq!(reader.name(), Err(DnsError::Malformed));
    }

    #[test]
    fn mangled_answers_never_panic() {
        let q = query(7, PLAIN_NAME);
        let reply = response(
            &q,
            0,
            &[
                srv(1, 1, 5269, "a.example.net"),
                srv(2, 1, 5269, "b.example.net"),
            ],
            &[],
        );
        // A small deterministic generator: every byte position, many values.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut mangled = reply.clone();
            let at = (state as usize) % mangled.len();
            mangled[at] = (state >> 32) as u8;
            if state & 1 == 0 {
                mangled.truncate((state >> 40) as usize % (reply.len() + 1));
            }
            let _ = parse_srv_answer(7, PLAIN_NAME, &mangled);
        }
    }

    #[test]
    fn invalid_targets_are_skipped() {
        let q = query(7, PLAIN_NAME);
        let mut reply = response(&q, 0, &[srv(1, 1, 5269, "ok.example.net")], &[]);
        reply[7] = 2;
        reply.extend_from_slice(&[0xC0, 0x0C, 0, 33, 0, 1, 0, 0, 0, 60, 0, 11]);
        reply.extend_from_slice(&[0, 1, 0, 1, 0x14, 0x95, 3, b'a', b'/', b'b', 0]);
        assert_eq!(
            parse_srv_answer(7, PLAIN_NAME, &reply).unwrap(),
            [srv(1, 1, 5269, "ok.example.net")]
        );
    }

    #[test]
    fn at_most_32_records_are_kept() {
        let q = query(7, PLAIN_NAME);
        let records: Vec<_> = (0..40).map(|i| srv(i, 0, 5269, "x.example.net")).collect();
        let reply = response(&q, 0, &records, &[]);
        assert_eq!(
            parse_srv_answer(7, PLAIN_NAME, &reply).unwrap(),
            records[..32]
        );
    }

    #[test]
    fn resolv_conf_nameservers() {
        let conf = "# generated\nsearch lan\nnameserver 192.168.1.1\nnameserver  ::1\n\
                    nameserver fe80::1%eth0\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n";
        assert_eq!(
            nameservers(conf),
            [
                "192.168.1.1:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
            ]
        );
        assert_eq!(
            nameservers("search lan\n"),
            ["127.0.0.1:53".parse().unwrap()]
        );
    }

    /// Always picks the first record of the running sum that reaches `fraction` of it.
    fn fixed(fraction: f64) -> impl FnMut(u32) -> u32 {
        move |total| (f64::from(total) * fraction) as u32
    }

    #[test]
    fn order_is_by_priority_then_weight_mixing_both_services() {
        // XEP-0368 §3: both services' records are one set for RFC 2782 ordering.
        let direct = vec![
            srv(20, 0, 443, "tls.example.net"),
            srv(5, 0, 5223, "fast.example.net"),
        ];
        let plain = vec![srv(10, 0, 5269, "xmpp.example.net")];
        assert_eq!(
            merge("example.net", direct, plain, &mut fixed(0.0)),
            [
                candidate("fast.example.net", 5223, true),
                candidate("xmpp.example.net", 5269, false),
                candidate("tls.example.net", 443, true),
            ]
        );
    }

    #[test]
    fn weights_decide_within_a_priority() {
        let records = || {
            vec![
                srv(1, 10, 1, "light.example.net"),
                srv(1, 0, 2, "zero.example.net"),
                srv(1, 90, 3, "heavy.example.net"),
                srv(0, 5, 4, "first.example.net"),
            ]
        };
        let hosts = |order: Vec<Candidate>| order.into_iter().map(|c| c.host).collect::<Vec<_>>();
        // The top of the range: the last weighted record of the running sum each time;
        // the zero-weight one only when nothing else is left.
        assert_eq!(
            hosts(merge("d", vec![], records(), &mut fixed(1.0))),
            [
                "first.example.net",
                "heavy.example.net",
                "light.example.net",
                "zero.example.net"
            ]
        );
        // 0 selects the zero-weight record, which RFC 2782 puts first in the sum.
        assert_eq!(
            hosts(merge("d", vec![], records(), &mut fixed(0.0))),
            [
                "first.example.net",
                "zero.example.net",
                "light.example.net",
                "heavy.example.net"
            ]
        );
        // With the system's generator, weight 90 against 10 comes first about 9 in 10.
        let heavy_first = (0..1000)
            .filter(|_| {
                let order = merge("d", vec![], records(), &mut system_random);
                order[1].host == "heavy.example.net"
            })
            .count();
        assert!((750..=990).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn no_records_fall_back_to_the_domain_on_5269() {
        // RFC 6120 §3.2.2.
        assert_eq!(
            merge("example.net", vec![], vec![], &mut fixed(0.0)),
            [candidate("example.net", 5269, false)]
        );
    }

    #[test]
    fn a_dot_target_means_not_available() {
        // RFC 6120 §3.2.1: a single "." record, no fallback.
        assert_eq!(
            merge("d", vec![], vec![srv(0, 0, 0, ".")], &mut fixed(0.0)),
            none()
        );
        assert_eq!(
            merge(
                "d",
                vec![srv(0, 0, 0, ".")],
                vec![srv(0, 0, 0, ".")],
                &mut fixed(0.0)
            ),
            []
        );
        // XEP-0368 §5: "." for direct TLS leaves the STARTTLS records, and no fallback.
        assert_eq!(
            merge(
                "d",
                vec![srv(0, 0, 0, ".")],
                vec![srv(1, 0, 5269, "x.d")],
                &mut fixed(0.0)
            ),
            [candidate("x.d", 5269, false)]
        );
        assert_eq!(
            merge("d", vec![srv(0, 0, 0, ".")], vec![], &mut fixed(0.0)),
            none()
        );
    }

    #[test]
    fn a_route_covers_the_domains_services() {
        let config = s2s_with_routes(&[("office.lan", "192.168.1.20:5269")]);
        for domain in ["office.lan", "rooms.office.lan"] {
            assert_eq!(
                route_for(&config, domain).map(String::as_str),
                Some("192.168.1.20:5269")
            );
        }
        assert_eq!(route_for(&config, "other.lan"), None);
        assert_eq!(route_for(&config, "lan"), None);
    }

    fn s2s_with_routes(routes: &[(&str, &str)]) -> crate::config::S2s {
        crate::config::S2s {
            routes: routes
                .iter()
                .map(|(d, r)| (d.to_string(), r.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn a_static_route_is_the_only_candidate() {
        // RFC 6120 §3.2.3: a configured association replaces the SRV lookup.
        let config = s2s_with_routes(&[
            ("peer.example", "192.168.1.20:5270"),
            ("six.example", "[fd00::20]:5269"),
            ("named.example", "server.lan:5269"),
        ]);
        smol::block_on(async {
            assert_eq!(
                candidates(&config, "peer.example").await,
                [candidate("192.168.1.20", 5270, false)]
            );
            assert_eq!(
                candidates(&config, "six.example").await,
                [candidate("fd00::20", 5269, false)]
            );
            assert_eq!(
                candidates(&config, "named.example").await,
                [candidate("server.lan", 5269, false)]
            );
        });
    }

    #[test]
    fn an_ip_domain_needs_no_lookup() {
        let config = s2s_with_routes(&[]);
        smol::block_on(async {
            assert_eq!(
                candidates(&config, "192.0.2.7").await,
                [candidate("192.0.2.7", 5269, false)]
            );
            assert_eq!(
                candidates(&config, "[2001:db8::7]").await,
                [candidate("2001:db8::7", 5269, false)]
            );
        });
    }

    #[test]
    fn addresses_of_literals_and_names() {
        smol::block_on(async {
            assert_eq!(
                addresses(&candidate("192.0.2.7", 5269, false)).await,
                ["192.0.2.7:5269".parse::<SocketAddr>().unwrap()]
            );
            assert_eq!(
                addresses(&candidate("::1", 5270, true)).await,
                ["[::1]:5270".parse::<SocketAddr>().unwrap()]
            );
            // localhost comes from /etc/hosts (or nss-myhostname), not from a DNS server.
            let local = addresses(&candidate("localhost", 5269, false)).await;
            assert!(
                !local.is_empty()
                    && local
                        .iter()
                        .all(|a| a.ip().is_loopback() && a.port() == 5269)
            );
        });
    }

    /// The records a fake nameserver gives for each question name.
    type Zone = BTreeMap<&'static str, Vec<SrvRecord>>;

    fn example_zone() -> Zone {
        BTreeMap::from([
            (
                TLS_NAME,
                vec![
                    srv(5, 0, 443, "tls.example.net"),
                    srv(30, 0, 5223, "slow.example.net"),
                ],
            ),
            (PLAIN_NAME, vec![srv(10, 0, 5269, "xmpp.example.net")]),
        ])
    }

    fn answer_from(zone: &Zone, query: &[u8], flags: u16) -> Vec<u8> {
        let mut reader = Reader {
            message: query,
            at: HEADER_BYTES,
        };
        let name = reader.name().unwrap();
        let records = zone
            .iter()
            .find(|(n, _)| wire_name(n).unwrap() == name)
            .map(|(_, records)| records.clone());
        match records {
            Some(records) => response(query, flags, &records, &[]),
            None => response(query, 3, &[], &[]),
        }
    }

    /// A nameserver on a 127.0.0.1 UDP port, answering from `zone` until dropped; before
    /// each real answer it sends the hostile ones `decoys` makes from the query.
    fn fake_nameserver(
        zone: Zone,
        decoys: fn(&Zone, &[u8]) -> Vec<Vec<u8>>,
    ) -> (SocketAddr, smol::Task<()>) {
        let socket = smol::block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
        let address = socket.local_addr().unwrap();
        let task = smol::spawn(async move {
            let mut buffer = [0; 1500];
            while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
                let query = &buffer[..length];
                for decoy in decoys(&zone, query) {
                    socket.send_to(&decoy, peer).await.unwrap();
                }
                socket
                    .send_to(&answer_from(&zone, query, 0), peer)
                    .await
                    .unwrap();
            }
        });
        (address, task)
    }

    fn no_decoys(_: &Zone, _: &[u8]) -> Vec<Vec<u8>> {
        Vec::new()
    }

    #[test]
    fn lookup_through_a_fake_nameserver() {
        let (server, _task) = fake_nameserver(example_zone(), no_decoys);
        let found = smol::block_on(srv_candidates(&[server], "example.net"));
        assert_eq!(
            found,
            [
                candidate("tls.example.net", 443, true),
                candidate("xmpp.example.net", 5269, false),
                candidate("slow.example.net", 5223, true),
            ]
        );
        // A domain with no records at all: the RFC 6120 §3.2.2 fallback.
        let found = smol::block_on(srv_candidates(&[server], "other.example"));
        assert_eq!(found, [candidate("other.example", 5269, false)]);
    }

    #[test]
    fn lookup_ignores_stray_and_forged_replies() {
        fn decoys(_: &Zone, query: &[u8]) -> Vec<Vec<u8>> {
            let lure = vec![srv(0, 0, 5269, "evil.example")];
            // Another id, and the right id with an answer to another question.
            let mut wrong_id = response(query, 0, &lure, &[]);
            wrong_id[1] ^= 0xFF;
            let other = encode_query(
                u16::from_be_bytes([query[0], query[1]]),
                "evil.example",
                TYPE_SRV,
            );
            let wrong_question = response(&other.unwrap(), 0, &lure, &[]);
            vec![wrong_id, wrong_question, b"garbage".to_vec()]
        }
        let (server, _task) = fake_nameserver(example_zone(), decoys);
        let found = smol::block_on(srv_candidates(&[server], "example.net"));
        assert_eq!(found.len(), 3);
        assert!(
            found.iter().all(|c| c.host.ends_with("example.net")),
            "{found:?}"
        );
    }

    #[test]
    fn a_reply_from_another_address_is_not_accepted() {
        // The forger knows the id and the client's port, but sends from another socket.
        let forger = smol::block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
        let socket = smol::block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
        let server = socket.local_addr().unwrap();
        let zone = example_zone();
        let _task = smol::spawn(async move {
            let mut buffer = [0; 1500];
            while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
                let query = &buffer[..length];
                let lure = response(query, 0, &[srv(0, 0, 5269, "evil.example")], &[]);
                forger.send_to(&lure, peer).await.unwrap();
                Timer::after(Duration::from_millis(50)).await;
                socket
                    .send_to(&answer_from(&zone, query, 0), peer)
                    .await
                    .unwrap();
            }
        });
        let found = smol::block_on(srv_candidates(&[server], "example.net"));
        assert_eq!(
            found.first(),
            Some(&candidate("tls.example.net", 443, true))
        );
        assert!(found.iter().all(|c| c.host != "evil.example"), "{found:?}");
    }

    #[test]
    fn a_silent_nameserver_gives_way_to_the_next() {
        let silent = smol::block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
        let (server, _task) = fake_nameserver(example_zone(), no_decoys);
        let started = std::time::Instant::now();
        let found = smol::block_on(srv_candidates(
            &[silent.local_addr().unwrap(), server],
            "example.net",
        ));
        assert_eq!(found.len(), 3);
        assert!(started.elapsed() >= QUERY_TIMEOUT);
        drop(silent);
    }

    #[test]
    fn a_truncated_answer_is_asked_again_over_tcp() {
        // A UDP port whose number is also free for TCP on 127.0.0.1.
        let (socket, listener) = smol::block_on(async {
            loop {
                let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                if let Ok(listener) = TcpListener::bind(socket.local_addr().unwrap()).await {
                    break (socket, listener);
                }
            }
        });
        let server = socket.local_addr().unwrap();
        let zone = example_zone();
        let tcp_zone = zone.clone();
        let _udp = smol::spawn(async move {
            let mut buffer = [0; 1500];
            while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
                let truncated = answer_from(&zone, &buffer[..length], FLAG_TRUNCATED);
                socket.send_to(&truncated, peer).await.unwrap();
            }
        });
        let _tcp = smol::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut length = [0; 2];
                stream.read_exact(&mut length).await.unwrap();
                let mut query = vec![0; usize::from(u16::from_be_bytes(length))];
                stream.read_exact(&mut query).await.unwrap();
                let answer = answer_from(&tcp_zone, &query, 0);
                stream
                    .write_all(&(answer.len() as u16).to_be_bytes())
                    .await
                    .unwrap();
                stream.write_all(&answer).await.unwrap();
            }
        });
        let found = smol::block_on(srv_candidates(&[server], "example.net"));
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn not_available_through_a_fake_nameserver() {
        let zone = BTreeMap::from([
            (TLS_NAME, vec![srv(0, 0, 0, ".")]),
            (PLAIN_NAME, vec![srv(0, 0, 0, ".")]),
        ]);
        let (server, _task) = fake_nameserver(zone, no_decoys);
        assert_eq!(
            smol::block_on(srv_candidates(&[server], "example.net")),
            none()
        );
    }
}
