//! The built-in STUN server: answers RFC 8489 (RFC 5389) Binding requests on UDP with the
//! sender's address as seen from here (XOR-MAPPED-ADDRESS), so that phones on the LAN can
//! find their candidates for calls without an outside server. It owns the STUN codec and the
//! UDP loop; it never authenticates, relays (no TURN) or answers anything but a well-formed
//! Binding request, and it never sends more than one small packet per packet received: at
//! most 44 bytes for a request of at least 20, within per-source and overall budgets, so a
//! spoofed source gains little by reflecting off it.

use crate::feature::Feature;
use crate::limits::bucket::{Bucket, Refill};
use log::{info, warn};
use smol::net::UdpSocket;
use smol::LocalExecutor;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// RFC 8489 §5: the fixed value that tells STUN apart from other traffic on the port.
const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER_BYTES: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// The largest answer: a header and an IPv6 XOR-MAPPED-ADDRESS.
pub const MAX_RESPONSE_BYTES: usize = HEADER_BYTES + 4 + 20;
/// RFC 8489 §6.1: 576 bytes fit any IPv4 path; longer requests are not ones we answer
/// (a datagram cut at the buffer's end fails the length check and is dropped).
const MAX_REQUEST_BYTES: usize = 576;

/// Answers per second (and burst) for one source address, and for all of them together:
/// a client gathers candidates with a handful of requests, and a spoofed flood cannot
/// turn the board into a reflector of more than this.
const PER_SOURCE: Refill = Refill {
    rate: 10.0,
    burst: 20.0,
};
const OVERALL: Refill = Refill {
    rate: 200.0,
    burst: 400.0,
};
/// Sources remembered; past it the table starts over (a flood from this many sources is
/// held by the overall bucket anyway).
const MAX_SOURCES: usize = 1024;

/// The STUN server runs beside the streams: its state is where it answers (for XEP-0215).
pub const FEATURE: Feature = Feature {
    name: "stun",
    state: Some(crate::feature::init::<Stun>),
    listen: Some(|config| {
        let sockets = bind(config)?;
        Ok(Box::new(move |ex, server| {
            start(ex, &server.state::<Stun>(), sockets)
        }))
    }),
    ..Feature::NONE
};

/// The STUN server's state the rest of the server reads: where it answers.
#[derive(Default)]
pub struct Stun {
    port: OnceCell<u16>,
}

impl Stun {
    /// The UDP port of the first STUN socket, once it is listening.
    pub fn port(&self) -> Option<u16> {
        self.port.get().copied()
    }
}

/// Writes the Binding success response to `request` from `peer` into `out` and returns its
/// length, or `None` when `request` is not a well-formed Binding request (RFC 8489 §6.3:
/// such packets are silently discarded). Attributes of the request are checked for framing
/// and otherwise ignored: the response needs none of them.
pub fn answer(
    request: &[u8],
    peer: SocketAddr,
    out: &mut [u8; MAX_RESPONSE_BYTES],
) -> Option<usize> {
    let (header, body) = request.split_first_chunk::<HEADER_BYTES>()?;
    let [k0, k1, l0, l1, c0, c1, c2, c3, transaction @ ..] = *header;
    let kind = u16::from_be_bytes([k0, k1]);
    let length = usize::from(u16::from_be_bytes([l0, l1]));
    let cookie = u32::from_be_bytes([c0, c1, c2, c3]);
    if kind != BINDING_REQUEST
        || cookie != MAGIC_COOKIE
        || length % 4 != 0
        || body.len() != length
        || !attributes_fit(body)
    {
        return None;
    }
    // An IPv4 client reaching a dual-stack socket is an IPv4 client.
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    // RFC 8489 §14.2: port and address XORed with the cookie (and, for IPv6, the
    // transaction id), so that middleboxes rewriting addresses in payloads leave it alone.
    let mask = MAGIC_COOKIE.to_be_bytes().into_iter().chain(transaction);
    let (family, address): (u8, &[u8]) = match ip {
        IpAddr::V4(v4) => (0x01, &v4.octets()[..]),
        IpAddr::V6(ref v6) => (0x02, &v6.octets()[..]),
    };
    let port = peer.port() ^ (MAGIC_COOKIE >> 16) as u16;
    // At most 20 bytes: the casts below cannot truncate.
    let value_len = 4 + address.len();
    // Each write fails only past the end of `out`, which MAX_RESPONSE_BYTES rules out.
    let mut free: &mut [u8] = out;
    let mut put = |bytes: &[u8]| free.write_all(bytes).ok();
    put(&BINDING_SUCCESS.to_be_bytes())?;
    put(&((4 + value_len) as u16).to_be_bytes())?;
    put(&MAGIC_COOKIE.to_be_bytes())?;
    put(&transaction)?;
    put(&XOR_MAPPED_ADDRESS.to_be_bytes())?;
    put(&(value_len as u16).to_be_bytes())?;
    put(&[0, family])?;
    put(&port.to_be_bytes())?;
    for (byte, mask) in address.iter().zip(mask) {
        put(&[byte ^ mask])?;
    }
    let unused = free.len();
    Some(MAX_RESPONSE_BYTES - unused)
}

/// Whether `body` is a sequence of whole attributes (type, length, value padded to 4 bytes).
fn attributes_fit(mut body: &[u8]) -> bool {
    while !body.is_empty() {
        let Some(&[_, _, high, low]) = body.get(..4) else {
            return false;
        };
        let padded = usize::from(u16::from_be_bytes([high, low])).div_ceil(4) * 4;
        match body.get(4 + padded..) {
            Some(rest) => body = rest,
            None => return false,
        }
    }
    true
}

/// Per-source and overall answer budgets.
struct Limiter {
    sources: HashMap<IpAddr, Bucket>,
    overall: Bucket,
}

impl Limiter {
    fn new(now: Instant) -> Limiter {
        Limiter {
            sources: HashMap::new(),
            overall: Bucket::full(OVERALL, now),
        }
    }

    /// Whether a packet from `ip` may be answered now. A refused packet costs nothing: the
    /// token taken is given back (a take of -1), so a flood does not push a bucket into debt.
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&ip) {
            self.sources.clear();
        }
        let source = self
            .sources
            .entry(ip)
            .or_insert_with(|| Bucket::full(PER_SOURCE, now));
        if source.take(PER_SOURCE, 1.0, now) > Duration::ZERO {
            source.take(PER_SOURCE, -1.0, now);
            return false;
        }
        if self.overall.take(OVERALL, 1.0, now) > Duration::ZERO {
            self.overall.take(OVERALL, -1.0, now);
            source.take(PER_SOURCE, -1.0, now);
            return false;
        }
        true
    }
}

/// Binds the STUN sockets when the server is enabled, so errors come out at start.
fn bind(config: &crate::config::Config) -> Result<Vec<UdpSocket>, String> {
    if !config.stun.enabled {
        return Ok(Vec::new());
    }
    config
        .stun
        .listen
        .iter()
        .map(|addr| {
            std::net::UdpSocket::bind(addr)
                .and_then(UdpSocket::try_from)
                .map_err(|e| format!("cannot listen for STUN on {addr}: {e}"))
        })
        .collect()
}

/// Records the advertised port (the first socket's) and answers on every socket.
fn start(ex: &LocalExecutor<'static>, stun: &Stun, sockets: Vec<UdpSocket>) {
    if let Some(port) = sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .map(|a| a.port())
    {
        let _ = stun.port.set(port);
    }
    let limiter = Rc::new(RefCell::new(Limiter::new(Instant::now())));
    for socket in sockets {
        if let Ok(addr) = socket.local_addr() {
            info!("listening for stun on {addr}");
        }
        ex.spawn(serve(socket, limiter.clone())).detach();
    }
}

async fn serve(socket: UdpSocket, limiter: Rc<RefCell<Limiter>>) {
    let mut request = [0u8; MAX_REQUEST_BYTES];
    let mut response = [0u8; MAX_RESPONSE_BYTES];
    loop {
        let (len, peer) = match socket.recv_from(&mut request).await {
            Ok(received) => received,
            // An ICMP error for an earlier answer (its sender is gone): nothing went wrong here.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                continue
            }
            Err(e) => {
                // Out of buffers and the like: back off, keep serving.
                warn!("stun: receive failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        // `recv_from` never reports more than the buffer holds.
        let Some(packet) = request.get(..len) else {
            continue;
        };
        let Some(reply) = answer(packet, peer, &mut response).and_then(|n| response.get(..n))
        else {
            continue;
        };
        if limiter.borrow_mut().allow(peer.ip(), Instant::now()) {
            // A lost answer is retransmitted by the client; nothing to do on failure.
            let _ = socket.send_to(reply, peer).await;
        }
    }
}

impl crate::feature::State for Stun {
    fn new(_config: &crate::config::Config, _store: &crate::store::Store) -> Self {
        Stun::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.1's request, stripped to a bare Binding request with its transaction id.
    fn request(attributes: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x00, 0x01];
        packet.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        packet.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        packet.extend_from_slice(&[
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ]);
        packet.extend_from_slice(attributes);
        packet
    }

    /// RFC 5769 §2.2 and §2.3: the XOR-MAPPED-ADDRESS of 192.0.2.1:32853 and of
    /// [2001:db8:1234:5678:11:2233:4455:6677]:32853 for that transaction.
    #[test]
    fn answers_with_the_test_vectors_addresses() {
        let mut out = [0u8; MAX_RESPONSE_BYTES];
        let len = answer(&request(&[]), "192.0.2.1:32853".parse().unwrap(), &mut out).unwrap();
        assert_eq!(len, 32);
        assert_eq!(&out[..4], &[0x01, 0x01, 0x00, 0x0c]);
        assert_eq!(&out[4..20], &request(&[])[4..20]);
        assert_eq!(
            &out[20..32],
            &[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]
        );

        let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let len = answer(&request(&[]), v6, &mut out).unwrap();
        assert_eq!(len, 44);
        assert_eq!(&out[2..4], &[0x00, 0x18]);
        assert_eq!(
            &out[20..44],
            &[
                0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3,
                0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
            ]
        );

        // An IPv4 client seen through a dual-stack socket.
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:32853".parse().unwrap();
        assert_eq!(answer(&request(&[]), mapped, &mut out), Some(32));
    }

    #[test]
    fn ignores_attributes_but_checks_their_framing() {
        let mut out = [0u8; MAX_RESPONSE_BYTES];
        let peer: SocketAddr = "192.0.2.1:1".parse().unwrap();
        // SOFTWARE with 5 bytes of value padded to 8, then a 4-byte attribute.
        let attributes = [
            0x80, 0x22, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0, 0, 0, 0x80, 0x28, 0x00, 0x04,
            1, 2, 3, 4,
        ];
        assert_eq!(answer(&request(&attributes), peer, &mut out), Some(32));
        // An attribute running past the message.
        let long = [
            0x80, 0x22, 0x00, 0x09, b'h', b'e', b'l', b'l', b'o', 0, 0, 0,
        ];
        assert_eq!(answer(&request(&long), peer, &mut out), None);
    }

    #[test]
    fn drops_everything_else() {
        let mut out = [0u8; MAX_RESPONSE_BYTES];
        let peer: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let good = request(&[]);
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            good[..19].to_vec(),
            [good.as_slice(), &[0, 0, 0, 0]].concat(), // longer than its length field
        ];
        for (at, value) in [
            (0, 0x01), // a Binding success response, not a request
            (1, 0x11), // a Binding indication
            (0, 0x40), // not STUN: the top bits must be zero
            (4, 0x00), // wrong magic cookie (RFC 3489 style)
            (3, 0x02), // length not a multiple of 4
        ] {
            let mut bad = good.clone();
            bad[at] = value;
            cases.push(bad);
        }
        for case in cases {
            assert_eq!(answer(&case, peer, &mut out), None, "{case:02x?}");
        }
    }

    #[test]
    fn limits_each_source_and_all_together() {
        let now = Instant::now();
        let mut limiter = Limiter::new(now);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let burst = PER_SOURCE.burst as usize;
        assert_eq!(
            (0..burst * 2).filter(|_| limiter.allow(a, now)).count(),
            burst
        );
        assert!(limiter.allow(b, now));
        assert!(limiter.allow(a, now + Duration::from_secs(1)));
        let mut limiter = Limiter::new(now);
        let answered = (0..2000u32)
            .filter(|i| limiter.allow(IpAddr::from(i.to_be_bytes()), now))
            .count();
        assert_eq!(answered, OVERALL.burst as usize);
    }
}
