//! Hostile input the other catalogue (stream_errors.rs) does not cover:
//! entity bombs inside a stanza, malformed JIDs, traffic after the close,
//! garbage instead of a TLS handshake, forged SCRAM messages and a presence
//! flood. Each ends (or rejects) only the offender: a second pair keeps
//! exchanging messages.

mod common;

use common::*;
use hearth::sasl::client::ScramClient;
use hearth::sasl::{base64, Mechanism};
use std::time::Duration;

struct Pair {
    alice: Client,
    bob: Client,
}

impl Pair {
    fn online(server: &TestServer) -> Pair {
        server.add_user("alice");
        server.add_user("bob");
        let alice = Client::online(server, "alice", "a");
        let mut bob = Client::online(server, "bob", "b");
        bob.sync();
        Pair { alice, bob }
    }

    fn still_talk(&mut self) {
        self.alice
            .send("<message to='bob@localhost' type='chat'><body>still here</body></message>");
        let got = self.bob.expect("still here");
        assert!(got.contains("from='alice@localhost/a'"), "{got}");
    }
}

#[test]
fn billion_laughs_inside_a_stanza_is_restricted() {
    let server = TestServer::start("");
    let mut pair = Pair::online(&server);
    server.add_user("mallory");
    let mut mallory = Client::online(&server, "mallory", "m");
    mallory.sync();
    let mut bomb = String::from("<!DOCTYPE lolz [<!ENTITY lol0 'lol'>");
    for n in 1..10 {
        let prev = format!("&lol{};", n - 1).repeat(10);
        bomb.push_str(&format!("<!ENTITY lol{n} '{prev}'>"));
    }
    bomb.push_str("]>");
    mallory.send(&format!(
        "<message to='bob@localhost'><body>{bomb}&lol9;</body></message>"
    ));
    mallory.expect_stream_error("restricted-xml");
    pair.still_talk();
    assert!(!pair.bob.transcript.contains("lollol"));
}

#[test]
fn malformed_jids_are_rejected_per_stanza() {
    let server = TestServer::start("");
    let mut pair = Pair::online(&server);
    let long = "x".repeat(1024);
    let bad = [
        "a@b@localhost".to_string(),
        "@localhost".to_string(),
        "bob@localhost/".to_string(),
        "bob@".to_string(),
        "bo&quot;b@localhost".to_string(),
        "bo&lt;b@localhost".to_string(),
        "bob@local host".to_string(),
        format!("bob@localhost/{long}"),
        format!("bob@{long}.example"),
        format!("{long}@localhost"),
    ];
    for (n, to) in bad.iter().enumerate() {
        pair.alice.send(&format!(
            "<message to='{to}' id='j{n}' type='chat'><body>x</body></message>"
        ));
        let reply = pair.alice.stanza();
        assert!(
            reply.contains(&format!("id='j{n}'")) && reply.contains("type='error'"),
            "{to}: {reply}"
        );
        assert!(
            reply.contains("<jid-malformed ") || reply.contains("<bad-request "),
            "{to}: {reply}"
        );
    }
    pair.still_talk();
}

#[test]
fn stanzas_after_the_stream_close_are_never_handled() {
    let server = TestServer::start("");
    let mut pair = Pair::online(&server);
    server.add_user("mallory");
    let mut mallory = Client::online(&server, "mallory", "m");
    mallory.sync();
    mallory.send(
        "</stream:stream><message to='bob@localhost' type='chat'><body>after close</body></message>",
    );
    assert_eq!(mallory.next(), Got::Close);
    mallory.expect_eof();
    pair.still_talk();
    assert!(!pair.bob.transcript.contains("after close"));
}

#[test]
fn garbage_instead_of_a_tls_handshake_drops_only_that_connection() {
    let server = TestServer::start("");
    let mut pair = Pair::online(&server);
    let mut c = Client::connect(&server);
    c.open_stream();
    c.header();
    c.stanza();
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(c.stanza().starts_with("<proceed"));
    c.send_bytes(
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n<stream:stream>\x16\x03\x01\x00\x05hello",
    );
    c.expect_eof();
    pair.still_talk();
}

/// Runs SCRAM with the client-final message passed through `tamper`.
fn scram_with(c: &mut Client, tamper: impl Fn(&str) -> String) -> String {
    let mut scram = ScramClient::new(Mechanism::ScramSha256, "alice", PASSWORD).unwrap();
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
        base64::encode(&scram.first())
    ));
    let challenge = c.stanza();
    let server_first = base64::decode(&text_of(&challenge)).unwrap();
    let reply = scram.handle_server_first(&server_first).unwrap();
    let forged = tamper(std::str::from_utf8(&reply).unwrap());
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        base64::encode(forged.as_bytes())
    ));
    c.stanza()
}

#[test]
fn forged_scram_nonces_and_proofs_fail() {
    let server = TestServer::start("");
    let mut pair = Pair::online(&server);
    let mut c = Client::connect(&server);
    c.starttls();
    // A nonce that is not the server's.
    let result = scram_with(&mut c, |msg| msg.replacen(",r=", ",r=X", 1));
    assert!(result.starts_with("<failure"), "{result}");
    // A proof for another password.
    let result = scram_with(&mut c, |msg| {
        let (head, proof) = msg.rsplit_once(",p=").unwrap();
        let mut bytes = base64::decode(proof).unwrap();
        bytes[0] ^= 1;
        format!("{head},p={}", base64::encode(&bytes))
    });
    assert!(result.contains("<not-authorized/>"), "{result}");
    // A truncated proof and a missing one.
    let result = scram_with(&mut c, |msg| msg.rsplit_once(",p=").unwrap().0.to_string());
    assert!(result.starts_with("<failure"), "{result}");
    // The stream still accepts an honest login.
    assert!(c.scram(Mechanism::ScramSha256, "alice", PASSWORD));
    c.bind("honest");
    c.sync();
    pair.still_talk();
}

#[test]
fn a_presence_flood_is_throttled_and_cut_off() {
    let server = TestServer::start(
        "[rate]\nstanzas_per_sec = 10\nstanza_burst = 10\nwarn_after_secs = 1\ndisconnect_after_secs = 2\n",
    );
    let mut pair = Pair::online(&server);
    server.add_user("mallory");
    let mut mallory = Client::online(&server, "mallory", "m");
    mallory.sync();
    let flood: String = (0..300)
        .map(|n| format!("<presence type='subscribe' to='bob@localhost' id='s{n}'/><presence to='bob@localhost/b' id='p{n}'/>"))
        .collect();
    mallory.send(&flood);
    loop {
        match mallory.next() {
            Got::Stanza(s) if s.starts_with("<stream:error") => {
                assert!(s.contains("<policy-violation "), "{s}");
                break;
            }
            Got::Stanza(_) | Got::Header(_) => {}
            other => panic!("{other:?}: {}", mallory.transcript),
        }
    }
    pair.still_talk();
    // At 10 a second for about 2 seconds, bob saw only a small part of it.
    pair.bob.expect_silence(Duration::from_millis(200));
    let seen = pair
        .bob
        .transcript
        .matches("from='mallory@localhost")
        .count();
    assert!(seen < 80, "{seen} of 600 presences reached bob");
    server.wait_for_log("mallory@localhost/m from 127.0.0.1:");
}
