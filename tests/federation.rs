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
