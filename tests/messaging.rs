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
    let got = bob.expect("hello");
    with_doc(&got, |m| {
        assert_eq!(m.attribute("from"), Some("alice@localhost/laptop"));
        assert_eq!(m.attribute("to"), Some("bob@localhost"));
        assert_eq!(m.attribute("id"), Some("c1"));
        let body = m
            .children()
            .find(|c| c.has_tag_name(("jabber:client", "body")))
            .unwrap();
        assert_eq!(body.text(), Some("hello & welcome"));
        assert!(
            m.children()
                .any(|c| c.has_tag_name(("urn:example:payload", "x"))),
            "unknown payload kept: {got}"
        );
    });
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
    high.expect("to-bare");
    alice.send("<message to='bob@localhost/low' type='chat'><body>to-low</body></message>");
    low.expect("to-low");
    low.expect_silence(Duration::from_millis(300));
    // A headline goes to every available non-negative resource.
    alice.send("<message to='bob@localhost' type='headline'><body>news</body></message>");
    high.expect("news");
    low.expect("news");
}

#[test]
fn unknown_user_gets_service_unavailable_and_errors_are_not_bounced() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send("<message to='nobody@localhost' id='x1' type='chat'><body>hi</body></message>");
    let reply = alice.stanza();
    assert!(
        reply.contains("type='error'")
            && reply.contains("id='x1'")
            && reply.contains("<service-unavailable "),
        "{reply}"
    );
    assert!(reply.contains("from='nobody@localhost'"), "{reply}");
    alice.send("<message to='nobody@localhost' type='error'><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    alice.expect_silence(Duration::from_millis(300));
    alice.send("<message to='someone@elsewhere.example' id='r1'><body>x</body></message>");
    assert!(alice.stanza().contains("<remote-server-not-found "));
}

#[test]
fn groupchat_to_a_user_is_an_error() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let _bob = Client::online(&server, "bob", "b");
    alice.send("<message to='bob@localhost' type='groupchat' id='g1'><body>x</body></message>");
    assert!(alice.stanza().contains("<service-unavailable "));
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
    let first = bob.expect("first");
    assert!(
        first.contains("<delay xmlns='urn:xmpp:delay' from='localhost' stamp='"),
        "{first}"
    );
    assert!(bob.stanza().contains("second"));
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
            let got = bob.expect("<body>");
            let body = text_of(&got);
            assert!(body.starts_with(&format!("r{round}m")), "{got}");
            assert!(seen.insert(body), "delivered twice: {got}");
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
    bob.expect("before-kill");
    bob.expect("before-stop");
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
    let reply = alice.stanza();
    assert!(
        reply.contains("id='q3'") && reply.contains("<service-unavailable "),
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
        let got = c.expect(&format!("ring-{from}"));
        assert!(got.contains(&format!("from='u{from}@localhost/r'")));
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
    let got = bob.expect("<presence");
    assert!(
        got.contains("from='alice@localhost/a'") && got.contains("<show>away</show>"),
        "{got}"
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
        let got = bob.expect("chatstates");
        assert_eq!(
            got,
            format!("<message to='bob@localhost' type='chat' from='alice@localhost/a'><{state} xmlns='http://jabber.org/protocol/chatstates'/></message>")
        );
    }
}
