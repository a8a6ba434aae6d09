//! Stream Management (XEP-0198) as a client sees it: enabling, acks both
//! ways, resuming after the TCP connection dropped (nothing lost, nothing
//! twice, contacts never see the user go away) and the resumption timeout
//! (contacts see unavailable, unacknowledged messages wait offline).

mod common;

use common::roster::*;
use common::*;
use hearth::sasl::Mechanism;
use std::time::Duration;

const NS: &str = "urn:xmpp:sm:3";

/// Authenticated and the stream restarted, not bound: where `<resume/>` goes.
fn authenticated(server: &TestServer, user: &str) -> Client {
    let mut client = Client::connect(server);
    client.starttls();
    assert!(client.scram(Mechanism::ScramSha256, user, PASSWORD));
    client.open_stream();
    client.header();
    let features = client.stanza();
    assert!(
        features.contains("<sm xmlns='urn:xmpp:sm:3'/>"),
        "{features}"
    );
    client
}

/// Enables resumable stream management; returns the resumption id.
fn enable(client: &mut Client) -> String {
    client.send(&format!("<enable xmlns='{NS}' resume='true'/>"));
    let enabled = client.stanza();
    assert!(
        enabled.starts_with("<enabled xmlns='urn:xmpp:sm:3'"),
        "{enabled}"
    );
    assert!(enabled.contains("resume='true'"), "{enabled}");
    with_doc(&enabled, |n| n.attribute("id").unwrap().to_string())
}

fn chat(to: &str, body: &str) -> String {
    format!("<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>")
}

/// alice (phone) and bob (desk) online and subscribed both ways.
fn contacts(server: &TestServer) -> (Client, Client) {
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(server, "alice", "phone");
    let mut bob = Client::online(server, "bob", "desk");
    roster_get(&mut alice);
    roster_get(&mut bob);
    subscribe(&mut alice, &mut bob);
    subscribe(&mut bob, &mut alice);
    bob.send("<presence/>");
    alice.expect("from='bob@localhost/desk'");
    settle(&mut alice, &mut bob);
    (alice, bob)
}

#[test]
fn enable_only_once_and_only_after_bind() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = authenticated(&server, "alice");
    alice.send(&format!("<enable xmlns='{NS}' resume='true'/>"));
    assert_eq!(
        alice.stanza(),
        "<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    );
    alice.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>");
    assert!(alice.stanza().contains("type='result'"));
    alice.send(&format!("<enable xmlns='{NS}' resume='true'/>"));
    let enabled = alice.stanza();
    with_doc(&enabled, |n| {
        assert_eq!(n.tag_name().name(), "enabled");
        assert!(n.attribute("id").is_some_and(|id| id.len() >= 16));
        assert_eq!(n.attribute("max"), Some("300"));
    });
    alice.send(&format!("<enable xmlns='{NS}'/>"));
    assert!(alice.stanza().contains("<unexpected-request "));
}

#[test]
fn acks_count_both_ways() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::login(&server, "alice", "r");
    enable(&mut alice);
    for n in 0..3 {
        alice.send(&format!(
            "<iq type='get' id='p{n}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        alice.expect(&format!("id='p{n}'"));
    }
    alice.send(&format!("<r xmlns='{NS}'/>"));
    assert_eq!(alice.expect("<a "), "<a xmlns='urn:xmpp:sm:3' h='3'/>");
    // Three replies went out unacknowledged: the server asks once idle.
    assert_eq!(alice.stanza(), "<r xmlns='urn:xmpp:sm:3'/>");
    alice.send(&format!("<a xmlns='{NS}' h='3'/>"));
    // Five in a row: asked at once.
    let pings: String = (0..5)
        .map(|n| format!("<iq type='get' id='q{n}'><ping xmlns='urn:xmpp:ping'/></iq>"))
        .collect();
    alice.send(&pings);
    alice.expect("id='q4'");
    assert_eq!(alice.stanza(), "<r xmlns='urn:xmpp:sm:3'/>");
    alice.send(&format!("<a xmlns='{NS}' h='8'/><r xmlns='{NS}'/>"));
    assert_eq!(alice.stanza(), "<a xmlns='urn:xmpp:sm:3' h='8'/>");
    alice.send(&format!("<a xmlns='{NS}' h='9'/>"));
    alice.expect_stream_error("undefined-condition");
}

#[test]
fn resumption_delivers_everything_once_and_contacts_see_no_gap() {
    let server = TestServer::start("");
    let (mut alice, mut bob) = contacts(&server);
    let id = enable(&mut alice);
    bob.send(&chat("alice@localhost/phone", "m0"));
    alice.expect("m0");
    bob.send(&chat("alice@localhost/phone", "m1"));
    alice.expect("m1");
    // The client only processed m0 when the network went away.
    drop(alice);
    server.wait_for_log("session kept for resumption");
    bob.send(&chat("alice@localhost", "m2"));
    bob.send(&chat("alice@localhost/phone", "m3"));
    bob.sync();
    bob.expect_silence(Duration::from_millis(300));

    let mut alice = authenticated(&server, "alice");
    alice.send(&format!("<resume xmlns='{NS}' previd='{id}' h='1'/>"));
    assert_eq!(
        alice.stanza(),
        format!("<resumed xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>")
    );
    for body in ["m1", "m2", "m3"] {
        assert!(alice.stanza().contains(&format!("<body>{body}</body>")));
    }
    alice.sync();
    bob.send(&chat("alice@localhost", "m4"));
    alice.expect("m4");
    // The inbound count carried over: the sync ping is the one stanza handled.
    alice.send(&format!("<r xmlns='{NS}'/>"));
    assert_eq!(alice.expect("<a "), "<a xmlns='urn:xmpp:sm:3' h='1'/>");
    alice.expect_silence(Duration::from_millis(300));
    for body in ["m1", "m2", "m3", "m4"] {
        assert_eq!(
            alice.transcript.matches(&format!(">{body}<")).count(),
            1,
            "{}",
            alice.transcript
        );
    }
    assert!(
        !bob.transcript.contains("unavailable"),
        "{}",
        bob.transcript
    );
}

#[test]
fn unresumed_sessions_end_and_keep_their_messages() {
    let server = TestServer::start("[sm]\nresume_timeout_secs = 1\n");
    let (mut alice, mut bob) = contacts(&server);
    enable(&mut alice);
    bob.send(&chat("alice@localhost/phone", "m1"));
    alice.expect("m1");
    drop(alice);
    server.wait_for_log("session kept for resumption");
    bob.send(&chat("alice@localhost", "m2"));
    let gone = bob.expect("type='unavailable'");
    assert!(gone.contains("from='alice@localhost/phone'"), "{gone}");
    server.wait_for_log("session ended");

    let mut alice = Client::online(&server, "alice", "laptop");
    for body in ["m1", "m2"] {
        assert!(alice.expect("<body>").contains(&format!(">{body}<")));
    }
    alice.sync();
    assert_eq!(alice.transcript.matches("<body>").count(), 2);
}

#[test]
fn failed_resume_then_normal_bind() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut bob = Client::login(&server, "bob", "r");
    let id = enable(&mut bob);
    let mut alice = authenticated(&server, "alice");
    // Someone else's live id is no better than an unknown one.
    for previd in ["nope", id.as_str()] {
        alice.send(&format!("<resume xmlns='{NS}' previd='{previd}' h='0'/>"));
        assert_eq!(
            alice.stanza(),
            "<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
    }
    alice.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>");
    assert!(alice.stanza().contains("alice@localhost/r"));
    alice.sync();
}

#[test]
fn shutdown_and_clean_close_keep_unacknowledged_messages() {
    let mut server = TestServer::start("");
    let (mut alice, mut bob) = contacts(&server);
    enable(&mut alice);
    bob.send(&chat("alice@localhost/phone", "m1"));
    alice.expect("m1");
    // A clean close ends the session at once; m1 was never acknowledged.
    alice.send("</stream:stream>");
    assert_eq!(alice.next(), Got::Close);
    bob.expect("type='unavailable'");

    let mut alice = Client::online(&server, "alice", "phone");
    alice.expect("m1");
    alice.sync();
    enable(&mut alice);
    bob.send(&chat("alice@localhost/phone", "m2"));
    alice.expect("m2");
    drop(alice);
    server.wait_for_log("session kept for resumption");
    bob.send(&chat("alice@localhost", "m3"));
    bob.sync();
    drop(bob);
    // The parked session ends on the way down: m2 (unacknowledged) and m3
    // (queued) are in offline storage.
    assert!(server.stop().success());
    server.spawn();
    let mut alice = Client::online(&server, "alice", "laptop");
    for body in ["m2", "m3"] {
        assert!(alice.expect("<body>").contains(&format!(">{body}<")));
    }
    alice.sync();
    assert_eq!(alice.transcript.matches("<body>").count(), 2);
}

#[test]
fn binding_the_parked_resource_replaces_the_parked_session() {
    let server = TestServer::start("");
    let (mut alice, mut bob) = contacts(&server);
    let id = enable(&mut alice);
    bob.send(&chat("alice@localhost/phone", "m1"));
    alice.expect("m1");
    drop(alice);
    server.wait_for_log("session kept for resumption");
    let mut alice = Client::login(&server, "alice", "phone");
    server.wait_for_log("not resumed, ending the session");
    server.wait_for_log("unacknowledged messages moved to offline storage");
    alice.send("<presence/>");
    alice.expect(">m1<");
    alice.sync();
    let mut again = authenticated(&server, "alice");
    again.send(&format!("<resume xmlns='{NS}' previd='{id}' h='0'/>"));
    assert!(again.stanza().contains("<item-not-found "));
}

#[test]
fn a_client_that_never_acks_is_cut_off() {
    let server = TestServer::start("[sm]\nmax_unacked = 3\n");
    server.add_user("alice");
    let mut alice = Client::login(&server, "alice", "r");
    enable(&mut alice);
    for n in 0..3 {
        alice.send(&format!(
            "<iq type='get' id='p{n}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        alice.expect(&format!("id='p{n}'"));
    }
    // Acknowledging makes room again.
    alice.send(&format!("<a xmlns='{NS}' h='1'/>"));
    alice.sync();
    alice.send("<iq type='get' id='over'><ping xmlns='urn:xmpp:ping'/></iq>");
    alice.expect_stream_error("resource-constraint");
}

#[test]
fn resuming_takes_over_a_connection_the_server_still_thinks_alive() {
    let server = TestServer::start("");
    let (mut alice, mut bob) = contacts(&server);
    let id = enable(&mut alice);
    bob.send(&chat("alice@localhost/phone", "m1"));
    alice.expect("m1");
    // The phone switched networks: its old connection is not closed yet.
    let mut phone = authenticated(&server, "alice");
    phone.send(&format!("<resume xmlns='{NS}' previd='{id}' h='0'/>"));
    assert_eq!(
        phone.stanza(),
        format!("<resumed xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>")
    );
    assert!(phone.stanza().contains(">m1<"));
    assert_eq!(alice.next(), Got::Eof);
    bob.send(&chat("alice@localhost/phone", "m2"));
    phone.expect(">m2<");
    phone.sync();
    assert!(
        !bob.transcript.contains("unavailable"),
        "{}",
        bob.transcript
    );
    // And the resumed stream can be resumed in turn.
    drop(phone);
    server.wait_for_log("session kept for resumption");
    let mut again = authenticated(&server, "alice");
    again.send(&format!("<resume xmlns='{NS}' previd='{id}' h='3'/>"));
    assert!(again.stanza().starts_with("<resumed "));
    again.sync();
}

/// §3: "The server SHALL enforce this order and return a <failed/> element": enabling before
/// authentication is refused with `<failed/>` and nothing is enabled.
#[test]
fn enable_before_authentication_fails() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    c.starttls();
    c.send(&format!("<enable xmlns='{NS}' resume='true'/>"));
    let reply = c.stanza();
    with_doc(&reply, |n| {
        assert!(n.has_tag_name((NS, "failed")), "{reply}");
        let condition = n.first_element_child().expect("a condition");
        assert!(
            condition.has_tag_name(("urn:ietf:params:xml:ns:xmpp-stanzas", "unexpected-request")),
            "{reply}"
        );
    });
}

/// §5: "The SM-ID MUST NOT be reused for simultaneous or subsequent sessions".
#[test]
fn stream_ids_are_never_reused() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut ids = Vec::new();
    let mut open = Vec::new();
    for n in 0..4 {
        let mut c = Client::login(&server, "alice", &format!("r{n}"));
        ids.push(enable(&mut c));
        // Half of them stay connected (simultaneous), half go (subsequent).
        if n % 2 == 0 {
            open.push(c);
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}
