//! Client State Indication (XEP-0352) as an inactive client sees it:
//! presence updates and chat states wait and are superseded, messages
//! with a body come at once after what waited, `<active/>` flushes.

mod common;

use common::roster::*;
use common::*;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const INACTIVE: &str = "<inactive xmlns='urn:xmpp:csi:0'/>";
const ACTIVE: &str = "<active xmlns='urn:xmpp:csi:0'/>";

/// alice and bob online, subscribed both ways, everything read.
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

fn status(n: u32) -> String {
    format!("<presence><show>away</show><status>{n}</status></presence>")
}

#[test]
fn only_the_latest_presence_arrives_when_active_again() {
    let server = TestServer::start("");
    let (mut alice, mut bob) = contacts(&server);
    alice.send(INACTIVE);
    alice.sync();
    for n in 1..=3 {
        bob.send(&status(n));
    }
    bob.sync();
    alice.expect_silence(QUIET);
    // Pings are answered while inactive: only what others send waits.
    alice.sync();
    alice.send(ACTIVE);
    assert_eq!(
        alice.stanza(),
        "<presence to='alice@localhost' from='bob@localhost/desk'><show>away</show><status>3</status></presence>"
    );
    alice.expect_silence(QUIET);
    // Active again: updates flow at once.
    bob.send(&status(4));
    assert!(alice.stanza().contains("<status>4</status>"));
}

#[test]
fn a_message_with_a_body_comes_at_once_after_what_waited() {
    let server = TestServer::start("");
    let (mut alice, mut bob) = contacts(&server);
    alice.send(INACTIVE);
    alice.sync();
    bob.send(&status(1));
    for state in ["composing", "paused"] {
        bob.send(&format!("<message to='alice@localhost/phone' type='chat' id='{state}'><{state} xmlns='http://jabber.org/protocol/chatstates'/></message>"));
    }
    bob.sync();
    alice.expect_silence(QUIET);
    bob.send("<message to='alice@localhost' type='chat' id='m'><body>wake up</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>");
    assert!(alice.stanza().contains("<status>1</status>"));
    assert_eq!(
        alice.stanza(),
        "<message to='alice@localhost/phone' type='chat' id='paused' from='bob@localhost/desk'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>"
    );
    assert!(alice.stanza().contains("wake up"));
    alice.expect_silence(QUIET);
    // Still inactive: chat states wait again, and <active/> delivers them.
    bob.send("<message to='alice@localhost/phone' type='chat' id='g'><gone xmlns='http://jabber.org/protocol/chatstates'/></message>");
    bob.sync();
    alice.expect_silence(QUIET);
    alice.send(ACTIVE);
    assert!(alice.stanza().contains("id='g'"));
}

#[test]
fn unknown_csi_elements_are_stream_errors() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "phone");
    alice.send(ACTIVE);
    alice.sync();
    alice.send("<sleepy xmlns='urn:xmpp:csi:0'/>");
    alice.expect_stream_error("unsupported-stanza-type");
}

#[test]
fn carbon_copies_of_chat_states_wait_too() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut phone = Client::online(&server, "alice", "phone");
    let mut laptop = Client::online(&server, "alice", "laptop");
    let mut bob = Client::online(&server, "bob", "desk");
    // The laptop's presence has reached the phone before it goes inactive.
    laptop.sync();
    phone.send("<iq type='set' id='on'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    phone.expect("id='on'");
    phone.send(INACTIVE);
    phone.sync();
    for state in ["composing", "paused"] {
        laptop.send(&format!("<message to='bob@localhost' type='chat' id='{state}'><{state} xmlns='http://jabber.org/protocol/chatstates'/></message>"));
        bob.expect(&format!("id='{state}'"));
    }
    phone.expect_silence(QUIET);
    laptop.send("<message to='bob@localhost' type='chat' id='m'><body>hello</body></message>");
    assert!(phone.stanza().contains("<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' to='bob@localhost' type='chat' id='paused'"));
    assert!(phone.stanza().contains("hello"));
}
