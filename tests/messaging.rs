//! Messages between sessions (RFC 6121 §8) and offline storage
//! (XEP-0160) as clients see them, including across restarts.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn chat_between_two_users_with_stamped_from() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "laptop");
    let mut bob = Client::online(&server, "bob", "phone");
    alice.send("<message to='bob@localhost' type='chat' id='c1'><body>hello &amp; welcome</body><x xmlns='urn:example:payload'><y/></x></message>");
    // RFC 6120 §8.1.2.1: the server stamps the sender's full JID; the rest passes untouched.
    let got = bob.expect_message_from("alice@localhost/laptop");
    assert_eq!(got.to(), Some(jid_value("bob@localhost")), "{got}");
    assert_eq!(got.attr("type"), Some("chat"), "{got}");
    assert_eq!(got.attr("id"), Some("c1"), "{got}");
    assert_eq!(got.child_text("body", CLIENT_NS), Some("hello & welcome"));
    assert_eq!(
        *got.child("x", "urn:example:payload"),
        "<x xmlns='urn:example:payload'><y/></x>"
    );
    // The only addition: the archive's id (XEP-0359 §3), assigned by bob's account.
    let sid = got.child("stanza-id", "urn:xmpp:sid:0");
    assert_eq!(
        sid.jid_attr("by"),
        Some(jid_value("bob@localhost")),
        "{got}"
    );
    assert_eq!(got.children().len(), 3, "{got}");
}

#[test]
fn bare_jid_goes_to_highest_priority_full_jid_to_that_resource() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut low = Client::login(&server, "bob", "low");
    low.send("<presence><priority>1</priority></presence>");
    let mut high = Client::login(&server, "bob", "high");
    high.send("<presence><priority>5</priority></presence>");
    low.sync();
    high.sync();
    alice.send("<message to='bob@localhost' type='chat'><body>to-bare</body></message>");
    assert_eq!(body_from(&mut high, "alice@localhost/a"), "to-bare");
    alice.send("<message to='bob@localhost/low' type='chat'><body>to-low</body></message>");
    assert_eq!(body_from(&mut low, "alice@localhost/a"), "to-low");
    low.expect_silence(Duration::from_millis(300));
    high.expect_silence(Duration::from_millis(300));
    // A headline goes to every available non-negative resource.
    alice.send("<message to='bob@localhost' type='headline'><body>news</body></message>");
    assert_eq!(body_from(&mut high, "alice@localhost/a"), "news");
    assert_eq!(body_from(&mut low, "alice@localhost/a"), "news");
}

/// The body of the next message from `jid`.
fn body_from(client: &mut Client, jid: &str) -> String {
    let message = client.expect_message_from(jid);
    let body = message.child_text("body", CLIENT_NS);
    body.unwrap_or_else(|| panic!("no body: {message}"))
        .to_string()
}

#[test]
fn unknown_user_gets_service_unavailable_and_errors_are_not_bounced() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send("<message to='nobody@localhost' id='x1' type='chat'><body>hi</body></message>");
    // RFC 6121 §8.5.2.2.1: no such user, a message is answered with service-unavailable.
    let reply = alice.receive();
    assert!(reply.is("message", CLIENT_NS), "{reply}");
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    assert_eq!(reply.attr("id"), Some("x1"), "{reply}");
    assert!(reply.is_from("nobody@localhost"), "{reply}");
    assert_eq!(
        reply.error_condition(),
        Some(("cancel", "service-unavailable")),
        "{reply}"
    );
    alice.send("<message to='nobody@localhost' type='error'><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    alice.expect_silence(Duration::from_millis(300));
    alice.send("<message to='someone@elsewhere.example' id='r1'><body>x</body></message>");
    let reply = alice.receive();
    assert_eq!(reply.attr("id"), Some("r1"), "{reply}");
    assert_eq!(
        reply.error_condition(),
        Some(("cancel", "remote-server-not-found")),
        "{reply}"
    );
}

#[test]
fn groupchat_to_a_user_is_an_error() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let _bob = Client::online(&server, "bob", "b");
    alice.send("<message to='bob@localhost' type='groupchat' id='g1'><body>x</body></message>");
    // RFC 6121 §8.5.3.2.1: a groupchat to a user's full or bare JID is an error.
    let reply = alice.receive();
    assert!(reply.is("message", CLIENT_NS), "{reply}");
    assert_eq!(reply.attr("id"), Some("g1"), "{reply}");
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    assert_eq!(
        reply.error_condition(),
        Some(("cancel", "service-unavailable")),
        "{reply}"
    );
}

#[test]
fn offline_message_is_delivered_with_delay_at_next_presence() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send("<message to='bob@localhost' type='chat' id='o1'><body>first</body></message>");
    alice.send("<message to='bob@localhost' type='chat' id='o2'><body>second</body></message>");
    // Chat states alone are never stored.
    alice.send("<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    alice.sync();
    let mut bob = Client::login(&server, "bob", "b");
    bob.expect_silence(Duration::from_millis(200));
    bob.send("<presence/>");
    // Its own presence comes back first (RFC 6121 §4.2.2), offline messages after it.
    let echo = bob.receive();
    assert!(
        echo.name() == "presence" && echo.is_from("bob@localhost/b"),
        "{echo}"
    );
    // XEP-0160 §3: stored in order, each with a XEP-0203 delay from the server.
    for (id, body) in [("o1", "first"), ("o2", "second")] {
        let message = bob.receive();
        assert!(message.is_from("alice@localhost/a"), "{message}");
        assert_eq!(message.attr("id"), Some(id), "{message}");
        assert_eq!(message.attr("type"), Some("chat"), "{message}");
        assert_eq!(
            message.child_text("body", CLIENT_NS),
            Some(body),
            "{message}"
        );
        let delay = message.child("delay", DELAY_NS);
        assert_eq!(delay.attr("from"), Some("localhost"), "{message}");
        assert_xep0082_datetime(delay.attr("stamp").unwrap_or_default());
    }
    bob.expect_silence(Duration::from_millis(300));
    // Delivered once: a second login finds nothing.
    drop(bob);
    let mut again = Client::online(&server, "bob", "b2");
    again.expect_silence(Duration::from_millis(300));
}

/// A message the router sends to storage just before the recipient's
/// initial presence reaches the user at once, not at the next login, even
/// when the presence looked in the store before the message was committed.
#[test]
fn messages_stored_while_the_recipient_comes_online_arrive_at_once() {
    // Alice sends 200 stanzas at full speed: no rate limit may slow or cut her off.
    let server = TestServer::start(NO_RATE_LIMIT);
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    for round in 0..10 {
        let mut bob = Client::login(&server, "bob", &format!("b{round}"));
        for i in 0..20 {
            alice.send(&format!(
                "<message to='bob@localhost' type='chat' id='r{round}m{i}'><body>r{round}m{i}</body></message>"
            ));
            if i == 10 {
                bob.send("<presence/>");
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 20 {
            let body = body_from(&mut bob, "alice@localhost/a");
            assert!(body.starts_with(&format!("r{round}m")), "{body}");
            assert!(seen.insert(body.clone()), "delivered twice: {body}");
        }
        bob.send("<presence type='unavailable'/>");
        bob.sync();
    }
}

#[test]
fn offline_messages_survive_restart_and_sigkill() {
    let mut server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    alice
        .send("<message to='bob@localhost' type='chat' id='k1'><body>before-kill</body></message>");
    alice.sync();
    drop(alice);
    server.kill();
    server.spawn();
    let mut alice = Client::online(&server, "alice", "a");
    alice
        .send("<message to='bob@localhost' type='chat' id='k2'><body>before-stop</body></message>");
    alice.sync();
    drop(alice);
    assert!(server.stop().success());
    server.spawn();
    let mut bob = Client::online(&server, "bob", "b");
    assert_eq!(body_from(&mut bob, "alice@localhost/a"), "before-kill");
    assert_eq!(body_from(&mut bob, "alice@localhost/a"), "before-stop");
}

#[test]
fn offline_quota_overflow_is_reported_to_the_sender() {
    let server = TestServer::start("[limits]\noffline_quota = 3\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    for i in 0..3 {
        alice.send(&format!(
            "<message to='bob@localhost' type='chat' id='q{i}'><body>m{i}</body></message>"
        ));
    }
    alice.sync();
    alice.send("<message to='bob@localhost' type='chat' id='q3'><body>m3</body></message>");
    // XEP-0160 §4: a full offline store refuses with service-unavailable.
    let reply = alice.receive();
    assert!(reply.is("message", CLIENT_NS), "{reply}");
    assert_eq!(reply.attr("id"), Some("q3"), "{reply}");
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    assert_eq!(
        reply.error_condition(),
        Some(("cancel", "service-unavailable")),
        "{reply}"
    );
}

#[test]
fn many_sessions_at_once() {
    let server = TestServer::start("");
    let users: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    for u in &users {
        server.add_user(u);
    }
    let mut clients: Vec<Client> = users
        .iter()
        .map(|u| Client::online(&server, u, "r"))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let to = format!("u{}@localhost", (i + 1) % 10);
        c.send(&format!(
            "<message to='{to}' type='chat'><body>ring-{i}</body></message>"
        ));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let from = (i + 9) % 10;
        let body = body_from(c, &format!("u{from}@localhost/r"));
        assert_eq!(body, format!("ring-{from}"));
    }
}

#[test]
fn directed_presence_reaches_the_resource() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    bob.sync();
    alice.send("<presence to='bob@localhost/b'><show>away</show></presence>");
    assert_eq!(
        bob.expect_presence_from("alice@localhost/a"),
        "<presence to='bob@localhost/b' from='alice@localhost/a'><show>away</show></presence>"
    );
}

#[test]
fn typing_notifications_pass_through_untouched() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    bob.sync();
    for state in ["composing", "paused", "active", "inactive", "gone"] {
        alice.send(&format!(
            "<message to='bob@localhost' type='chat'><{state} xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ));
        assert_eq!(
            bob.expect_message_from("alice@localhost/a"),
            format!("<message to='bob@localhost' type='chat' from='alice@localhost/a'><{state} xmlns='http://jabber.org/protocol/chatstates'/></message>")
        );
    }
}
