//! Two federating servers for the s2s tests: `a.test` on 127.0.0.2 and `b.test` on
//! 127.0.0.3 (loopback aliases, no DNS), each with its own self-signed certificate and a
//! static route (`[s2s.routes]`) to the other's ephemeral federation port.

use super::*;

pub const A: &str = "a.test";
pub const B: &str = "b.test";

/// `[s2s]` on an ephemeral port of `ip`, plus `extra` (more `[s2s]` keys).
fn s2s_table(ip: &str, extra: &str) -> String {
    format!("[s2s]\nenabled = true\nlisten = [\"{ip}:0\"]\nqueue_timeout_secs = 5\n{extra}\n")
}

/// Starts both servers with `extra_a`/`extra_b` appended to their configs (tables; their
/// `[s2s]` keys go in `s2s_a`/`s2s_b`), then routes each to the other. A learns B's port
/// through a reload (SIGHUP), as an admin adding a route would.
pub fn pair(s2s_a: &str, s2s_b: &str) -> (TestServer, TestServer) {
    let a = TestServer::start_domain(A, "127.0.0.2", &s2s_table("127.0.0.2", s2s_a));
    let a_port = a.s2s.expect("a listens for s2s");
    let b = TestServer::start_domain(
        B,
        "127.0.0.3",
        &format!(
            "{}[s2s.routes]\n\"{A}\" = \"{a_port}\"\n",
            s2s_table("127.0.0.3", s2s_b)
        ),
    );
    route(&a, B, b.s2s.expect("b listens for s2s"));
    (a, b)
}

/// Adds `[s2s.routes] domain = addr` to `server`'s config and reloads it.
pub fn route(server: &TestServer, domain: &str, addr: SocketAddr) {
    add_table(server, "routes", domain, &addr.to_string());
}

/// Adds `[s2s.TABLE] "domain" = "value"` to `server`'s config and reloads it (routes and
/// pins change live).
pub fn add_table(server: &TestServer, table: &str, domain: &str, value: &str) {
    let mut text = std::fs::read_to_string(&server.config).unwrap();
    text.push_str(&format!("\n[s2s.{table}]\n\"{domain}\" = \"{value}\"\n"));
    std::fs::write(&server.config, text).unwrap();
    Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    server.wait_for_log(&format!("s2s.{table}.\"{domain}\""));
}

/// The SHA-256 fingerprint `server` logged for its certificate (`AB:CD:…`).
pub fn fingerprint(server: &TestServer) -> String {
    server
        .log()
        .lines()
        .find_map(|l| l.split("TLS certificate SHA-256 fingerprint: ").nth(1))
        .map(|f| f.trim().to_owned())
        .expect("fingerprint logged")
}

/// The test as a peer server toward `server`, claiming to be `from`: an incoming stream,
/// secured with STARTTLS, not yet authenticated. Returns it and the stream id the server
/// gave (dialback keys are bound to it).
pub fn fake_peer(server: &TestServer, from: &str) -> (Client, String) {
    let (mut peer, features) = plain_peer(server, from);
    assert!(features.find("starttls", TLS_NS).is_some(), "{features}");
    peer.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    let proceed = peer.receive();
    assert!(proceed.is("proceed", TLS_NS), "{proceed}");
    peer.tls_handshake();
    let features = open(&mut peer, server, from);
    assert!(
        features
            .find("dialback", "urn:xmpp:features:dialback")
            .is_some(),
        "{features}"
    );
    let id = peer
        .header
        .as_ref()
        .and_then(|h| h.id.clone())
        .expect("stream id");
    (peer, id)
}

/// A plain (not yet secured) s2s stream to `server` claiming `from`, and the features it
/// offered.
pub fn plain_peer(server: &TestServer, from: &str) -> (Client, Element) {
    let mut peer = Client::connect_to(server.s2s.expect("s2s port"), server.tls_client_config());
    peer.domain.clone_from(&server.domain);
    let features = open(&mut peer, server, from);
    (peer, features)
}

/// Sends a server-to-server stream header and reads the answer's header and features.
fn open(peer: &mut Client, server: &TestServer, from: &str) -> Element {
    peer.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='{}' version='1.0'>",
        server.domain
    ));
    peer.header();
    let features = peer.receive();
    assert!(features.is("features", STREAM_NS), "{features}");
    features
}

/// The dialback key `authority` (a running server) would give on a stream to `receiving`
/// with this id: the test can then speak for that server's domain.
pub fn dialback_key(authority: &TestServer, receiving: &str, id: &str) -> String {
    let secret = std::fs::read(authority.data_dir().join("server-secret")).unwrap();
    hearth::s2s::dialback::Secret::new(&secret).key(receiving, &authority.domain, id)
}

/// [`fake_peer`] authenticated by dialback as `authority`'s domain with its real key
/// (the server verifies it with `authority` itself).
pub fn authenticated_peer(server: &TestServer, authority: &TestServer) -> Client {
    let (mut peer, id) = fake_peer(server, &authority.domain);
    let key = dialback_key(authority, &server.domain, &id);
    peer.send(&format!(
        "<db:result from='{}' to='{}'>{key}</db:result>",
        authority.domain, server.domain
    ));
    let answer = peer.receive();
    assert!(answer.is("result", "jabber:server:dialback"), "{answer}");
    assert_eq!(answer.attr("type"), Some("valid"), "{answer}");
    peer
}
