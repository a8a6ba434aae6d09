//! RFC 6120 §11.1: XML that is not well-formed ends the stream with
//! `<not-well-formed/>` at once. Every end tag that does not close the
//! innermost open element (mismatched, unopened, extra, prefixed wrongly)
//! is answered immediately, before and after authentication, however the
//! bytes are split, and not by a keepalive timeout much later.

mod common;

use common::*;
use std::time::{Duration, Instant};

const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";

/// Stanza-level shapes that kept the stream waiting before: their depth
/// never returns to zero, or returns early and leaves an extra end tag.
const BAD_END_TAGS: &[&str] = &[
    "<message to='x@y'><body>oops</message>",
    "<message><body>x</bod>",
    "<iq type='get' id='1'><query xmlns='jabber:iq:roster'></iq>",
    "<message><x:a xmlns:x='urn:x'></y:a></message>",
    "<message><x:a xmlns:x='urn:x'></a></message>",
    "<message><a></x:a></message>",
    "<message><ab></a>",
];

/// A complete stanza followed by an extra end tag. Before login the
/// stanza itself already ends the stream (`not-authorized`), so these are
/// only sent after it.
const EXTRA_END_TAGS: &[&str] = &["<presence/></presence>", "<message></message></message>"];

/// Reads to the stream error; asserts it is `<stream:error>` carrying
/// `condition` in the streams-error namespace, then the close and EOF.
fn expect_stream_error(client: &mut Client, condition: &str) {
    let error = loop {
        match client.next() {
            Got::Header(_) => continue,
            Got::Stanza(s) if s.starts_with("<stream:error") => break s,
            Got::Stanza(_) => continue,
            other => panic!(
                "expected a stream error, got {other:?}; transcript: {}",
                client.transcript
            ),
        }
    };
    with_doc(&error, |node| {
        assert_eq!(node.tag_name().namespace(), Some(NS_STREAMS), "{error}");
        assert_eq!(node.tag_name().name(), "error", "{error}");
        let first = node.first_element_child().expect("a condition");
        assert_eq!(first.tag_name().namespace(), Some(NS_STREAM_ERRORS));
        assert_eq!(first.tag_name().name(), condition, "{error}");
    });
    assert_eq!(client.next(), Got::Close);
    client.expect_eof();
}

/// Sends `bytes` one write per byte (the server sees many small reads).
fn send_byte_by_byte(client: &mut Client, bytes: &[u8]) {
    for byte in bytes {
        if !client.try_send(std::str::from_utf8(std::slice::from_ref(byte)).unwrap_or(" ")) {
            return;
        }
    }
}

/// The error must come at once; a keepalive-driven close takes minutes.
fn promptly(started: Instant) {
    let waited = started.elapsed();
    assert!(
        waited < patience(Duration::from_secs(3)),
        "stream error after {waited:?}"
    );
}

#[test]
fn mismatched_end_tags_after_login_are_not_well_formed_at_once() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut bob = Client::online(&server, "bob", "b");
    bob.sync();
    for (n, body) in BAD_END_TAGS.iter().chain(EXTRA_END_TAGS).enumerate() {
        let mut alice = Client::online(&server, "alice", "a");
        alice.sync();
        let started = Instant::now();
        if n % 2 == 0 {
            alice.send(body);
        } else {
            send_byte_by_byte(&mut alice, body.as_bytes());
        }
        expect_stream_error(&mut alice, "not-well-formed");
        promptly(started);
    }
    // Only the offender's stream ended.
    bob.sync();
}

#[test]
fn mismatched_end_tags_before_login_are_not_well_formed_at_once() {
    let server = TestServer::start("");
    for (n, body) in BAD_END_TAGS.iter().enumerate() {
        // Plain TCP right after the features, and inside TLS before SASL.
        let mut client = Client::connect(&server);
        if n % 2 == 0 {
            client.open_stream();
            client.header();
            client.stanza();
        } else {
            client.starttls();
        }
        let started = Instant::now();
        if n % 3 == 0 {
            send_byte_by_byte(&mut client, body.as_bytes());
        } else {
            client.send(body);
        }
        expect_stream_error(&mut client, "not-well-formed");
        promptly(started);
    }
}

#[test]
fn end_tags_at_stream_level_are_not_well_formed() {
    let server = TestServer::start("");
    server.add_user("alice");
    for close in ["</foo>", "</stream>", "</stream:streams>", "</message>"] {
        let mut plain = Client::connect(&server);
        plain.open_stream();
        plain.header();
        plain.stanza();
        plain.send(close);
        expect_stream_error(&mut plain, "not-well-formed");

        let mut alice = Client::online(&server, "alice", "a");
        alice.sync();
        alice.send(close);
        expect_stream_error(&mut alice, "not-well-formed");
    }
}

#[test]
fn matching_prefixed_end_tags_are_fine() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send("<iq type='get' id='pfx'><p:ping xmlns:p='urn:xmpp:ping'></p:ping ></iq>");
    let reply = alice.expect("id='pfx'");
    with_doc(&reply, |node| {
        assert_eq!(node.attribute("type"), Some("result"), "{reply}");
    });
}
