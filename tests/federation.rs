//! Federation (RFC 6120 server-to-server streams, XEP-0220 dialback): two real servers,
//! `a.test` on 127.0.0.2 and `b.test` on 127.0.0.3, each with a self-signed certificate and
//! a static route to the other, and clients on each.

mod common;

use common::federation::{pair, A, B};
use common::*;

const NS_PING: &str = "urn:xmpp:ping";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// RFC 6120 §2.5 / §10.4: a message to a user of another domain reaches that user with
/// the sender's full JID, both ways, over dialback-authenticated streams.
#[test]
fn messages_cross_both_ways() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    b.add_user("bob");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut bob = Client::online(&b, "bob", "desk");
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='m1'><body>hi bob</body></message>"
    ));
    let got = bob.expect_message_from(&alice.jid);
    assert_eq!(got.attr("to"), Some(format!("bob@{B}").as_str()));
    assert_eq!(got.child_text("body", "jabber:client"), Some("hi bob"));
    bob.send(&format!(
        "<message to='{}' type='chat' id='m2'><body>hi alice</body></message>",
        alice.jid
    ));
    let got = alice.expect_message_from(&bob.jid);
    assert_eq!(got.child_text("body", "jabber:client"), Some("hi alice"));
    a.wait_for_log(&format!("s2s {A} → {B}: connected"));
    b.wait_for_log(&format!(
        "s2s {A} → {B}: incoming stream authenticated (dialback)"
    ));
}

/// An iq to the other server (XEP-0199 ping, XEP-0030 disco#info) is answered by it.
#[test]
fn iq_to_the_other_server_is_answered() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    alice.send(&format!(
        "<iq type='get' id='p1' to='{B}'><ping xmlns='{NS_PING}'/></iq>"
    ));
    let result = alice.expect_iq_result("p1");
    assert!(result.is_from(B), "{result}");
    alice.send(&format!(
        "<iq type='get' id='d1' to='{B}'><query xmlns='{NS_DISCO_INFO}'/></iq>"
    ));
    let info = alice.expect_iq_result("d1");
    let query = info.child("query", NS_DISCO_INFO);
    assert!(
        query
            .children()
            .iter()
            .any(|c| c.name() == "feature" && c.attr("var") == Some(NS_PING)),
        "{info}"
    );
    drop(b);
}

/// A remote user may not read a local account's private data: a roster request from
/// another server gets an error, never the roster of a local namesake.
#[test]
fn a_remote_user_gets_no_local_namesakes_roster() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    b.add_user("alice");
    let mut local_alice = Client::online(&a, "alice", "phone");
    local_alice.send("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='secret@x.test'/></query></iq>");
    local_alice.expect_iq_result("r1");
    let mut remote_alice = Client::online(&b, "alice", "desk");
    remote_alice.send(&format!(
        "<iq type='get' id='r2' to='alice@{A}'><query xmlns='jabber:iq:roster'/></iq>"
    ));
    let answer = remote_alice.expect_iq("r2");
    assert_eq!(answer.attr("type"), Some("error"), "{answer}");
    assert!(!answer.xml().contains("secret@x.test"), "{answer}");
}

/// A server that cannot be reached: the message bounces to its sender with
/// `remote-server-timeout` (RFC 6120 §8.3.3.17) instead of vanishing.
#[test]
fn an_unreachable_peer_bounces_messages() {
    // A route to a port nobody listens on (bound and closed here).
    let dead = std::net::TcpListener::bind("127.0.0.4:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let a = TestServer::start_domain(
        A,
        "127.0.0.2",
        &format!(
            "[s2s]\nenabled = true\nlisten = [\"127.0.0.2:0\"]\nqueue_timeout_secs = 2\n\
             [s2s.routes]\n\"gone.test\" = \"127.0.0.4:{port}\"\n"
        ),
    );
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    alice.send("<message to='bob@gone.test' type='chat' id='lost'><body>anyone?</body></message>");
    let error = alice.expect_where(|e| e.name() == "message" && e.attr("id") == Some("lost"));
    error.assert_error("wait", "remote-server-timeout");
    assert!(error.is_from("bob@gone.test"), "{error}");
}

/// With federation off (the default) another domain is `remote-server-not-found`.
#[test]
fn without_federation_other_domains_are_not_found() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "phone");
    alice.send("<message to='bob@elsewhere.test' type='chat' id='x'><body>hi</body></message>");
    let error = alice.expect_where(|e| e.name() == "message" && e.attr("id") == Some("x"));
    error.assert_error("cancel", "remote-server-not-found");
}

/// XEP-0220 §2.1: a peer that proves its domain with the key its authoritative server
/// confirms is accepted, and its users' stanzas are delivered.
#[test]
fn a_peer_with_a_verified_key_is_accepted() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut peer = common::federation::authenticated_peer(&a, &b);
    peer.send(&format!(
        "<message from='bob@{B}/x' to='alice@{A}' type='chat' id='f1'><body>via a fake peer</body></message>"
    ));
    let got = alice.expect_message_from(&format!("bob@{B}/x"));
    assert_eq!(
        got.child_text("body", "jabber:client"),
        Some("via a fake peer")
    );
}

/// RFC 6120 §4.9.3.9: a stanza whose `from` is not a domain the stream authenticated
/// ends the stream with `invalid-from`, and nothing reaches the user.
#[test]
fn a_spoofed_from_domain_is_refused() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut peer = common::federation::authenticated_peer(&a, &b);
    peer.send(&format!(
        "<message from='mallory@c.test/x' to='alice@{A}' type='chat'><body>trust me</body></message>"
    ));
    peer.expect_stream_error("invalid-from");
    alice.expect_silence(std::time::Duration::from_millis(300));
}

/// No relaying: a peer's stanza for a domain this server does not serve ends the stream
/// (`host-unknown`, RFC 6120 §4.9.3.6).
#[test]
fn a_relay_attempt_is_refused() {
    let (a, b) = pair("", "");
    let mut peer = common::federation::authenticated_peer(&a, &b);
    peer.send(&format!(
        "<message from='bob@{B}/x' to='carol@c.test' type='chat'><body>pass it on</body></message>"
    ));
    peer.expect_stream_error("host-unknown");
}

/// XEP-0220 §2.4: a key the claimed domain's server does not confirm is answered
/// `invalid`, and the stream stays unauthenticated (stanzas on it are refused).
#[test]
fn a_wrong_dialback_key_is_refused() {
    let (a, _b) = pair("", "");
    let (mut peer, _id) = common::federation::fake_peer(&a, B);
    peer.send(&format!(
        "<db:result from='{B}' to='{A}'>{}</db:result>",
        "0".repeat(64)
    ));
    let answer = peer.receive();
    assert!(answer.is("result", "jabber:server:dialback"), "{answer}");
    assert_eq!(answer.attr("type"), Some("invalid"), "{answer}");
    peer.send(&format!(
        "<message from='bob@{B}/x' to='alice@{A}' type='chat'><body>hi</body></message>"
    ));
    peer.expect_stream_error("not-authorized");
}

/// Dialback for a domain this server does not serve: `host-unknown`.
#[test]
fn dialback_for_an_unknown_domain_is_refused() {
    let (a, b) = pair("", "");
    let (mut peer, id) = common::federation::fake_peer(&a, B);
    let key = common::federation::dialback_key(&b, "nobody.test", &id);
    peer.send(&format!(
        "<db:result from='{B}' to='nobody.test'>{key}</db:result>"
    ));
    peer.expect_stream_error("host-unknown");
}

/// A peer that vanishes (SIGKILL) mid-conversation: later messages to it come back to
/// their sender as errors once it stays unreachable, none vanishes silently.
#[test]
fn a_killed_peer_bounces_messages() {
    let (a, mut b) = pair("", "");
    a.add_user("alice");
    b.add_user("bob");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut bob = Client::online(&b, "bob", "desk");
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='before'><body>one</body></message>"
    ));
    bob.expect_message_from(&alice.jid);
    b.kill();
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='after'><body>two</body></message>"
    ));
    let error = alice.expect_where(|e| e.name() == "message" && e.attr("id") == Some("after"));
    error.assert_error("wait", "remote-server-timeout");
}
