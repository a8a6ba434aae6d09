//! Limits on logging in that only show across connections and restarts: a failed-login
//! budget per account over every address, the share of connections that may sit before
//! login, taken names in in-band registration answered as slowly as wrong passwords, and
//! SCRAM decoy salts for unknown users that stay the same across a restart.

mod common;

use common::*;
use hearth::sasl::client::ScramClient;
use hearth::sasl::{base64, Mechanism};
use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A full SCRAM-SHA-256 login attempt from `from`; true on success.
fn try_login_from(server: &TestServer, from: Ipv4Addr, user: &str, password: &str) -> bool {
    let mut client = Client::connect_from(server, from);
    client.starttls();
    client.scram(Mechanism::ScramSha256, user, password)
}

/// The `s=` of the server-first message for `user`, after STARTTLS.
fn server_salt(server: &TestServer, user: &str) -> String {
    let mut client = Client::connect(server);
    client.starttls();
    let mut scram = ScramClient::new(Mechanism::ScramSha256, user, "any").unwrap();
    client.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
        base64::encode(&scram.first())
    ));
    let challenge = client.stanza();
    let payload = with_doc(&challenge, |node| {
        assert_eq!(node.tag_name().name(), "challenge", "{challenge}");
        node.text().unwrap_or_default().to_string()
    });
    let server_first = String::from_utf8(base64::decode(&payload).unwrap()).unwrap();
    let _ = scram.handle_server_first(server_first.as_bytes());
    server_first
        .split(',')
        .find_map(|part| part.strip_prefix("s="))
        .expect("a salt")
        .to_string()
}

/// Audit finding: guesses spread over 8 addresses reached ~12/s at one account. Past
/// `limits.auth_attempts_per_account_per_min` failures, attempts fail without a password
/// check (even the right password), while the owner's open session stays and other
/// accounts are untouched.
#[test]
fn guesses_from_many_addresses_are_capped_per_account() {
    let server = TestServer::start(
        "[limits]\nauth_attempts_per_account_per_min = 3\nauth_failure_delay_ms = 0\n",
    );
    server.add_user("alice");
    server.add_user("bob");
    let mut open = Client::online(&server, "alice", "home");
    for n in 0..6 {
        assert!(!try_login_from(&server, loopback(10 + n), "alice", "guess"));
    }
    assert!(
        !try_login_from(&server, loopback(20), "alice", PASSWORD),
        "the right password got in past the budget"
    );
    open.sync();
    assert!(try_login_from(&server, loopback(21), "bob", PASSWORD));
    server.wait_for_log("auth_attempts_per_account_per_min");
    let warnings = server
        .log()
        .matches("auth_attempts_per_account_per_min")
        .count();
    assert_eq!(warnings, 1, "{}", server.log());
}

/// Audit finding: one host with many addresses could fill `limits.max_connections` with
/// streams that never log in. They may use only `max_unauthenticated_percent` of it; a
/// new connection past that closes the oldest, so a login still gets in.
#[test]
fn a_pre_auth_flood_from_many_addresses_leaves_logins_working() {
    let server = TestServer::start(
        "[limits]\nmax_connections = 20\nmax_unauthenticated_percent = 50\nmax_unauthenticated_per_ip = 2\n",
    );
    server.add_user("alice");
    let flood: Vec<TcpStream> = (30..50)
        .flat_map(|n| [loopback(n), loopback(n)])
        .filter_map(|from| common::net::connect_from(from, server.starttls).ok())
        .collect();
    // Let the server take them all in.
    std::thread::sleep(patience(Duration::from_millis(300)));
    let mut alice = Client::connect_from(&server, loopback(60));
    alice.starttls();
    assert!(alice.scram(Mechanism::ScramSha256, "alice", PASSWORD));
    alice.bind("pc");
    alice.sync();
    // At most half of the capacity is still held by the flood.
    let still_open = flood
        .into_iter()
        .filter(|tcp| {
            let mut tcp = tcp;
            tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let mut buf = [0u8; 256];
            matches!(tcp.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        })
        .count();
    assert!(still_open <= 10, "{still_open} flood connections open");
    server.wait_for_log("max_unauthenticated_percent");
}

/// Audit finding: with open registration, `conflict` for a taken name came at full
/// speed (account enumeration). It now waits like a failed login from that address.
#[test]
fn taken_names_are_answered_ever_more_slowly() {
    let server = TestServer::start(
        "[registration]\nmode = \"open\"\n[limits]\nauth_failure_delay_ms = 100\n",
    );
    server.add_user("alice");
    let mut client = Client::connect(&server);
    client.starttls();
    let mut times = Vec::new();
    for n in 0..4 {
        let started = Instant::now();
        client.send(&format!(
            "<iq type='set' id='r{n}'><query xmlns='jabber:iq:register'>\
             <username>alice</username><password>pw</password></query></iq>"
        ));
        let reply = client.expect(&format!("id='r{n}'"));
        times.push(started.elapsed());
        let condition = with_doc(&reply, |iq| {
            assert_eq!(iq.attribute("type"), Some("error"), "{reply}");
            let error = iq.children().find(|c| c.has_tag_name("error")).unwrap();
            error
                .first_element_child()
                .unwrap()
                .tag_name()
                .name()
                .to_string()
        });
        assert_eq!(condition, "conflict");
    }
    // 100, 200, 400, 800 ms.
    assert!(times[0] >= Duration::from_millis(90), "{times:?}");
    assert!(times[3] >= Duration::from_millis(700), "{times:?}");
}

/// Audit finding: the decoy salt for an unknown user changed at every restart while
/// real salts never do, which told the two apart. It now comes from a server secret
/// kept in the data dir.
#[test]
fn decoy_salts_survive_a_restart() {
    let mut server = TestServer::start("");
    server.add_user("alice");
    let (ghost, real) = (server_salt(&server, "ghost"), server_salt(&server, "alice"));
    assert_eq!(server_salt(&server, "ghost"), ghost);
    assert_ne!(server_salt(&server, "phantom"), ghost);
    server.stop();
    server.spawn();
    assert_eq!(server_salt(&server, "alice"), real);
    assert_eq!(server_salt(&server, "ghost"), ghost);
}
