//! Bad input gets the stream error RFC 6120 §4.9 names, and only the
//! offending stream ends: a well-behaved pair keeps chatting.

mod common;

use common::*;

/// Sends `input` on an authenticated stream and expects `condition`,
/// then checks that alice and bob can still talk.
fn after_login_expect(input: &[u8], condition: &str) {
    let server = TestServer::start("[limits]\nmax_stanza_bytes = 8192\nmax_depth = 8\n");
    for u in ["alice", "bob", "mallory"] {
        server.add_user(u);
    }
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let mut mallory = Client::online(&server, "mallory", "m");
    mallory.sync();
    mallory.send_bytes(input);
    mallory.expect_stream_error(condition);
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>still here</body></message>");
    let got = bob.expect("still here");
    assert!(got.contains("from='alice@localhost/a'"), "{got}");
}

#[test]
fn malformed_xml_is_not_well_formed() {
    after_login_expect(b"<message><body>x</bod></message>", "not-well-formed");
}

#[test]
fn mismatched_quotes_are_not_well_formed() {
    after_login_expect(
        b"<message to='bob@localhost\"><body>x</body></message>",
        "not-well-formed",
    );
}

#[test]
fn invalid_utf8_is_not_well_formed() {
    after_login_expect(
        b"<message to='bob@localhost'><body>\xff\xfe</body></message>",
        "not-well-formed",
    );
}

#[test]
fn nul_byte_is_not_well_formed() {
    after_login_expect(
        b"<message to='bob@localhost'><body>a\0b</body></message>",
        "not-well-formed",
    );
}

#[test]
fn doctype_and_entity_expansion_are_restricted() {
    after_login_expect(
        b"<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;'>]><message><body>&lol2;</body></message>",
        "restricted-xml",
    );
}

#[test]
fn undeclared_entity_is_restricted() {
    after_login_expect(
        b"<message to='bob@localhost'><body>&lol;</body></message>",
        "restricted-xml",
    );
}

#[test]
fn comment_is_restricted() {
    after_login_expect(b"<!-- hello --><presence/>", "restricted-xml");
}

#[test]
fn processing_instruction_is_restricted() {
    after_login_expect(b"<?php echo 1; ?><presence/>", "restricted-xml");
}

#[test]
fn stanza_over_the_size_limit_is_a_policy_violation() {
    let body = "x".repeat(9000);
    after_login_expect(
        format!("<message to='bob@localhost'><body>{body}</body></message>").as_bytes(),
        "policy-violation",
    );
}

#[test]
fn huge_attribute_is_a_policy_violation() {
    let attr = "y".repeat(9000);
    after_login_expect(
        format!("<message to='bob@localhost' id='{attr}'/>").as_bytes(),
        "policy-violation",
    );
}

#[test]
fn deep_nesting_is_a_policy_violation() {
    let open = "<a xmlns='urn:x'>".repeat(20);
    after_login_expect(format!("<message>{open}").as_bytes(), "policy-violation");
}

#[test]
fn unknown_top_level_element_is_unsupported_stanza_type() {
    after_login_expect(b"<foo xmlns='jabber:client'/>", "unsupported-stanza-type");
}

#[test]
fn spoofed_from_is_invalid_from() {
    after_login_expect(
        b"<message from='bob@localhost/b' to='alice@localhost'><body>x</body></message>",
        "invalid-from",
    );
}

#[test]
fn stanza_just_under_the_limit_is_fine() {
    let server = TestServer::start("[limits]\nmax_stanza_bytes = 8192\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let prefix = "<message to='bob@localhost'><body>";
    let suffix = "</body></message>";
    let body = "z".repeat(8192 - prefix.len() - suffix.len());
    alice.send(&format!("{prefix}{body}{suffix}"));
    assert!(bob.expect("zzzz").len() > 8000);
}

#[test]
fn wrong_stream_namespace_is_invalid_namespace() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    c.send("<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='urn:wrong' version='1.0'>");
    c.expect_stream_error("invalid-namespace");
    let mut c = Client::connect(&server);
    c.send("<stream:stream to='localhost' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    c.expect_stream_error("invalid-namespace");
}

#[test]
fn unknown_host_is_host_unknown() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    c.send("<stream:stream to='example.org' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    c.expect_stream_error("host-unknown");
}

#[test]
fn unsupported_version_is_refused() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    c.send("<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='2.0'>");
    c.expect_stream_error("unsupported-version");
}

#[test]
fn garbage_before_the_header_is_not_well_formed() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    c.send("HELO localhost\r\n");
    c.expect_stream_error("not-well-formed");
}

#[test]
fn client_close_is_answered_with_close_and_later_bytes_are_ignored() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    alice.sync();
    alice.send("</stream:stream><message to='alice@localhost'><body>late</body></message>");
    assert_eq!(alice.next(), Got::Close);
    alice.expect_eof();
}

#[test]
fn iq_errors_bad_request_and_service_unavailable() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "a");
    c.send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = c.stanza();
    assert!(
        reply.contains("type='error'") && reply.contains("<bad-request "),
        "{reply}"
    );
    c.send("<iq type='bogus' id='t1'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = c.stanza();
    assert!(
        reply.contains("id='t1'") && reply.contains("<bad-request "),
        "{reply}"
    );
    c.send("<iq type='get' id='u1'><query xmlns='urn:example:unknown'/></iq>");
    let reply = c.stanza();
    assert!(
        reply.contains("id='u1'") && reply.contains("<service-unavailable "),
        "{reply}"
    );
    c.send("<iq type='set' id='u2' to='localhost'><query xmlns='jabber:iq:version'/></iq>");
    assert!(c.stanza().contains("<service-unavailable "));
    // Duplicate ids are the client's business: both get answers.
    c.send("<iq type='get' id='dup'><ping xmlns='urn:xmpp:ping'/></iq><iq type='get' id='dup'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(c.stanza().contains("id='dup'"));
    assert!(c.stanza().contains("id='dup'"));
    // An illegal JID in `to`.
    c.send("<message to='a b@localhost' id='j1'><body>x</body></message>");
    let reply = c.stanza();
    assert!(reply.contains("<jid-malformed "), "{reply}");
    let long = "l".repeat(1024);
    c.send(&format!(
        "<iq type='get' id='j2' to='{long}@localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert!(c.stanza().contains("<jid-malformed "));
}
