//! XEP-0065 SOCKS5 Bytestreams proxy as two local users see it: discovery, the streamhost,
//! both ends connecting with the DST.ADDR hash, activation by the initiator only, and bytes
//! flowing both ways only after it.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;
use std::time::Instant;

const PROXY: &str = "proxy.localhost";
const NS: &str = "http://jabber.org/protocol/bytestreams";

fn proxy_addr(server: &TestServer) -> SocketAddr {
    let log = server.log();
    let line = log
        .lines()
        .find_map(|l| l.split("listening for proxy on ").nth(1))
        .expect("proxy port in the log");
    line.trim().parse().unwrap()
}

/// SHA-1 of SID + initiator + target, lowercase hex (XEP-0065 §5.3.2).
fn hash(sid: &str, initiator: &str, target: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{sid}{initiator}{target}").as_bytes(),
    );
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects and runs the SOCKS5 handshake (no auth, CONNECT to the hash); returns the
/// stream and the reply code.
fn socks(server: &TestServer, hash: &str) -> (TcpStream, u8) {
    try_socks_from(server, Ipv4Addr::LOCALHOST, hash).expect("SOCKS5 handshake")
}

/// The SOCKS5 handshake from a chosen loopback address; `Err` when the proxy closes the
/// connection instead of answering (over a connection cap).
fn try_socks_from(
    server: &TestServer,
    from: Ipv4Addr,
    hash: &str,
) -> std::io::Result<(TcpStream, u8)> {
    let mut tcp = common::net::connect_from(from, proxy_addr(server))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    tcp.read_exact(&mut choice)?;
    assert_eq!(choice, [5, 0]);
    let mut request = vec![5, 1, 0, 3, hash.len() as u8];
    request.extend_from_slice(hash.as_bytes());
    request.extend_from_slice(&[0, 0]);
    tcp.write_all(&request)?;
    let mut reply = vec![0u8; 5 + hash.len() + 2];
    tcp.read_exact(&mut reply)?;
    assert_eq!(&reply[..1], &[5]);
    if reply[1] == 0 {
        assert_eq!(&reply[5..5 + hash.len()], hash.as_bytes());
    }
    Ok((tcp, reply[1]))
}

fn activate(client: &mut Client, sid: &str, target: &str) -> String {
    client.send(&format!(
        "<iq type='set' id='act' to='{PROXY}'><query xmlns='{NS}' sid='{sid}'>\
         <activate>{target}</activate></query></iq>"
    ));
    client.expect("id='act'")
}

fn read_exactly(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tcp.read_exact(&mut buf).unwrap();
    buf
}

fn setup() -> (TestServer, Client, Client) {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let alice = Client::online(&server, "alice", "pc");
    let bob = Client::online(&server, "bob", "phone");
    (server, alice, bob)
}

#[test]
fn discovery_and_streamhost() {
    let (server, mut alice, _bob) = setup();
    alice.send(
        "<iq type='get' id='items'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert!(alice
        .expect("id='items'")
        .contains(&format!("<item jid='{PROXY}'")));
    alice.send(&format!(
        "<iq type='get' id='info' to='{PROXY}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    let info = alice.expect("id='info'");
    assert!(
        info.contains("<identity category='proxy' type='bytestreams'"),
        "{info}"
    );
    assert!(info.contains(&format!("<feature var='{NS}'/>")), "{info}");
    alice.send(&format!(
        "<iq type='get' id='sh' to='{PROXY}'><query xmlns='{NS}'/></iq>"
    ));
    let host = alice.expect("id='sh'");
    let port = proxy_addr(&server).port();
    assert!(
        host.contains(&format!(
            "<streamhost jid='{PROXY}' host='localhost' port='{port}'/>"
        )),
        "{host}"
    );
}

#[test]
fn activated_pair_relays_both_ways() {
    let (server, mut alice, mut bob) = setup();
    let (initiator, target) = (alice.jid.clone(), bob.jid.clone());
    let h = hash("s1", &initiator, &target);
    // Activation before both ends are there finds nothing.
    assert!(activate(&mut alice, "s1", &target).contains("<item-not-found"));
    let (mut t, code) = socks(&server, &h);
    assert_eq!(code, 0);
    assert!(activate(&mut alice, "s1", &target).contains("<item-not-found"));
    let (mut i, code) = socks(&server, &h);
    assert_eq!(code, 0);
    // A third end for the same hash is refused.
    assert_eq!(socks(&server, &h).1, 2);
    // Only the initiator named in the hash can activate.
    assert!(activate(&mut bob, "s1", &initiator).contains("<item-not-found"));
    let result = activate(&mut alice, "s1", &target);
    assert!(result.contains("type='result'"), "{result}");

    let big: Vec<u8> = (0..300_000u32).map(|n| (n % 253) as u8).collect();
    let writer = {
        let mut i = i.try_clone().unwrap();
        let big = big.clone();
        std::thread::spawn(move || i.write_all(&big).unwrap())
    };
    assert!(read_exactly(&mut t, big.len()) == big);
    writer.join().unwrap();
    t.write_all(b"thanks").unwrap();
    assert_eq!(read_exactly(&mut i, 6), b"thanks");
    // The end of one side reaches the other.
    t.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    i.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(i);
    server.wait_for_log(&format!("bytestream {h} ended"));
}

#[test]
fn nothing_flows_before_activation() {
    let (server, mut alice, bob) = setup();
    let target = bob.jid.clone();
    let h = hash("s2", &alice.jid, &target);
    let (mut t, _) = socks(&server, &h);
    let (mut i, _) = socks(&server, &h);
    i.write_all(b"early").unwrap();
    t.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 16];
    let err = t.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    // Another session id is another pair.
    assert!(activate(&mut alice, "other", &target).contains("<item-not-found"));
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(activate(&mut alice, "s2", &target).contains("type='result'"));
    assert_eq!(read_exactly(&mut t, 5), b"early");
}

#[test]
fn relay_limit_and_bad_handshakes() {
    let server = TestServer::start("[proxy]\nlisten = [\"127.0.0.1:0\"]\nmax_relays = 1\n");
    let (_a, code) = socks(&server, &hash("x", "a@localhost/r", "b@localhost/r"));
    assert_eq!(code, 0);
    assert_eq!(
        socks(&server, &hash("y", "a@localhost/r", "b@localhost/r")).1,
        2
    );
    // Only the no-authentication method is offered.
    let mut tcp = TcpStream::connect(proxy_addr(&server)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&[5, 1, 2]).unwrap();
    assert_eq!(read_exactly(&mut tcp, 2), [5, 0xff]);
}

/// Runs a whole transfer between two online users and checks the bytes arrive.
fn transfer(server: &TestServer, alice: &mut Client, bob: &Client, sid: &str) {
    let target = bob.jid.clone();
    let h = hash(sid, &alice.jid, &target);
    let (mut t, code) = socks(server, &h);
    assert_eq!(code, 0, "target end refused");
    let (mut i, code) = socks(server, &h);
    assert_eq!(code, 0, "initiator end refused");
    let result = activate(alice, sid, &target);
    assert!(
        with_doc(&result, |iq| iq.attribute("type") == Some("result")),
        "{result}"
    );
    i.write_all(b"the file").unwrap();
    assert_eq!(read_exactly(&mut t, 8), b"the file");
}

/// Audit finding: CONNECTs with random hashes from anyone held every `max_relays` slot
/// (60 s each, even after the socket closed), so real transfers were refused. An address
/// with nobody logged in now gets `max_waiting_per_stranger` waiting connections.
#[test]
fn a_strangers_flood_leaves_real_transfers_working() {
    let server = TestServer::start("[proxy]\nlisten = [\"127.0.0.1:0\"]\nmax_relays = 4\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "pc");
    let bob = Client::online(&server, "bob", "phone");
    let stranger = Ipv4Addr::new(127, 0, 0, 3);
    let mut held = Vec::new();
    for n in 0..30 {
        let h = hash(&format!("junk{n}"), "x@y/z", "w@v/u");
        // Past the per-address connection cap the proxy hangs up at once.
        if let Ok((tcp, _)) = try_socks_from(&server, stranger, &h) {
            if n % 2 == 0 {
                held.push(tcp);
            }
        }
    }
    transfer(&server, &mut alice, &bob, "real1");
    // And again while the stranger keeps at it.
    for n in 30..40 {
        let h = hash(&format!("junk{n}"), "x@y/z", "w@v/u");
        if let Ok((tcp, _)) = try_socks_from(&server, stranger, &h) {
            held.push(tcp);
        }
    }
    transfer(&server, &mut alice, &bob, "real2");
    server.wait_for_log("connections waiting, one refused");
}

/// A waiting end that hangs up frees its slot at once, and one that waits too long is
/// closed after `proxy.wait_secs`.
#[test]
fn a_closed_waiting_socket_frees_its_slot_at_once() {
    let server =
        TestServer::start("[proxy]\nlisten = [\"127.0.0.1:0\"]\nmax_relays = 1\nwait_secs = 2\n");
    let (first, code) = socks(&server, &hash("a", "a@localhost/r", "b@localhost/r"));
    assert_eq!(code, 0);
    assert_eq!(
        socks(&server, &hash("b", "a@localhost/r", "b@localhost/r")).1,
        2
    );
    drop(first);
    // The proxy notices the hang-up in a moment; before, the slot stayed taken 60 s.
    let until = Instant::now() + patience(Duration::from_secs(1));
    let (mut second, code) = loop {
        let (tcp, code) = socks(&server, &hash("c", "a@localhost/r", "b@localhost/r"));
        if code == 0 || Instant::now() > until {
            break (tcp, code);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 0, "the closed end still holds the only slot");
    // Nobody comes for the second one: it is closed at wait_secs.
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = second.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < patience(Duration::from_secs(6)),
        "{waited:?}"
    );
}

/// XEP-0065 §6.3.3: the proxy relays between local users only; a relay is cut at
/// `proxy.max_relay_bytes`.
#[test]
fn activation_needs_a_local_target_and_relays_are_bounded() {
    let server = TestServer::start("[proxy]\nlisten = [\"127.0.0.1:0\"]\nmax_relay_bytes = 1000\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "pc");
    let bob = Client::online(&server, "bob", "phone");
    for target in [
        "mallory@elsewhere.example/x",
        "nobody@localhost/x",
        "localhost",
    ] {
        let reply = activate(&mut alice, "s", target);
        assert_eq!(iq_error(&reply).1, "not-allowed", "{target}");
    }
    let h = hash("big", &alice.jid, &bob.jid);
    let (mut t, _) = socks(&server, &h);
    let (mut i, _) = socks(&server, &h);
    let result = activate(&mut alice, "big", &bob.jid);
    assert!(
        with_doc(&result, |iq| iq.attribute("type") == Some("result")),
        "{result}"
    );
    let writer = std::thread::spawn(move || {
        for _ in 0..50 {
            if i.write_all(&[7u8; 1000]).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let _ = t.read_to_end(&mut got);
    assert!(got.len() <= 1000, "{} bytes relayed", got.len());
    writer.join().unwrap();
    server.wait_for_log("cut after 1000 bytes");
}
