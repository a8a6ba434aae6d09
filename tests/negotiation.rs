//! Stream negotiation as a client sees it (RFC 6120 §§4–7, XEP-0078,
//! XEP-0368): STARTTLS, SASL, binding, and their error paths.

mod common;

use common::*;
use hearth::sasl::{base64, Mechanism};
use std::time::Duration;

#[test]
fn plain_stream_offers_only_required_starttls() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    c.open_stream();
    let header = c.header();
    assert!(header.contains("version: Some(\"1.0\")"), "{header}");
    let features = c.stanza();
    assert!(
        features
            .contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"),
        "{features}"
    );
    assert!(
        !features.contains("mechanism"),
        "no SASL before TLS: {features}"
    );
}

#[test]
fn sasl_before_starttls_is_refused_and_stream_stays_usable() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    c.open_stream();
    c.header();
    c.stanza();
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHg=</auth>");
    assert_eq!(
        c.stanza(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><encryption-required/></failure>"
    );
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(c.stanza().starts_with("<proceed"));
}

#[test]
fn stanza_before_authentication_is_not_authorized() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    c.starttls();
    c.send("<message to='alice@localhost'><body>hi</body></message>");
    c.expect_stream_error("not-authorized");
}

#[test]
fn tls_features_list_scram_plain_and_legacy_auth() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    let features = c.starttls();
    for m in ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] {
        assert!(
            features.contains(&format!("<mechanism>{m}</mechanism>")),
            "{features}"
        );
    }
    assert!(
        features.contains("<auth xmlns='http://jabber.org/features/iq-auth'/>"),
        "{features}"
    );
    assert!(!features.contains("starttls"), "{features}");
}

#[test]
fn scram_sha256_and_sha1_logins_bind_and_answer_ping() {
    let server = TestServer::start("");
    server.add_user("alice");
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha1] {
        let mut c = Client::connect(&server);
        c.starttls();
        assert!(c.scram(mechanism, "alice", PASSWORD));
        let jid = c.bind("laptop");
        assert_eq!(jid, "alice@localhost/laptop");
        c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
        assert_eq!(
            c.stanza(),
            "<iq type='result' id='p1' from='localhost' to='alice@localhost/laptop'/>"
        );
    }
}

#[test]
fn wrong_password_fails_and_retry_on_same_stream_succeeds() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::connect(&server);
    c.starttls();
    assert!(!c.scram(Mechanism::ScramSha256, "alice", "wrong"));
    assert!(c.transcript.ends_with(
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
    ));
    assert!(!c.scram(Mechanism::ScramSha256, "nobody", PASSWORD));
    assert!(c.scram(Mechanism::ScramSha256, "alice", PASSWORD));
    c.bind("r");
}

#[test]
fn too_many_failures_end_the_stream() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::connect(&server);
    c.starttls();
    for _ in 0..4 {
        assert!(!c.scram(Mechanism::ScramSha1, "alice", "nope"));
    }
    c.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAG5vcGU=</auth>",
    );
    c.expect("<not-authorized/>");
    c.expect_stream_error("policy-violation");
}

#[test]
fn plain_inside_tls_logs_in() {
    let server = TestServer::start("");
    server.add_user("bob");
    let mut c = Client::connect(&server);
    c.starttls();
    let creds = base64::encode(format!("\0bob\0{PASSWORD}").as_bytes());
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ));
    assert_eq!(
        c.stanza(),
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></success>"
    );
    assert_eq!(c.bind("phone"), "bob@localhost/phone");
}

#[test]
fn malformed_sasl_payloads_get_sasl_errors() {
    let server = TestServer::start("");
    server.add_user("bob");
    let mut c = Client::connect(&server);
    c.starttls();
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!not base64</auth>");
    assert_eq!(
        c.stanza(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><incorrect-encoding/></failure>"
    );
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-UNKNOWN'/>");
    assert_eq!(
        c.stanza(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>"
    );
    // A response with no exchange in progress.
    c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AAAA</response>");
    assert_eq!(
        c.stanza(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><malformed-request/></failure>"
    );
    // A SCRAM client-first without the gs2 header.
    let bad = base64::encode(b"n=bob,r=abc");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{bad}</auth>"
    ));
    assert!(c.stanza().contains("<malformed-request/>"));
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    assert_eq!(
        c.stanza(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>"
    );
}

#[test]
fn plain_is_never_offered_or_accepted_without_tls() {
    let server = TestServer::start("[auth]\nrequire_encryption = false\n");
    server.add_user("bob");
    let mut c = Client::connect(&server);
    c.open_stream();
    c.header();
    let features = c.stanza();
    assert!(
        features.contains("<mechanism>SCRAM-SHA-256</mechanism>"),
        "{features}"
    );
    assert!(!features.contains("PLAIN"), "{features}");
    let creds = base64::encode(format!("\0bob\0{PASSWORD}").as_bytes());
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ));
    assert_eq!(
        c.stanza(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>"
    );
    // SCRAM works over plain TCP when the operator allowed it.
    assert!(c.scram(Mechanism::ScramSha256, "bob", PASSWORD));
}

#[test]
fn direct_tls_port_logs_in() {
    let server = TestServer::start("");
    server.add_user("carol");
    let mut c = Client::connect_direct_tls(&server);
    c.open_stream();
    c.header();
    let features = c.stanza();
    assert!(
        features.contains("SCRAM-SHA-256") && !features.contains("starttls"),
        "{features}"
    );
    assert!(c.scram(Mechanism::ScramSha256, "carol", PASSWORD));
    assert_eq!(c.bind("desk"), "carol@localhost/desk");
}

#[test]
fn legacy_iq_auth_after_pre_1_0_header() {
    let server = TestServer::start("");
    server.add_user("dave");
    let mut c = Client::connect_direct_tls(&server);
    c.send("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
    let header = c.header();
    assert!(
        header.contains("version: None"),
        "pre-1.0 answer has no version: {header}"
    );
    c.send("<iq type='get' id='a1'><query xmlns='jabber:iq:auth'><username>dave</username></query></iq>");
    assert_eq!(
        c.stanza(),
        "<iq type='result' id='a1'><query xmlns='jabber:iq:auth'><username>dave</username><password/><resource/></query></iq>"
    );
    c.send("<iq type='set' id='a2'><query xmlns='jabber:iq:auth'><username>dave</username><password>bad</password><resource>old</resource></query></iq>");
    assert!(c
        .stanza()
        .contains("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"));
    c.send("<iq type='set' id='a3'><query xmlns='jabber:iq:auth'><username>dave</username><password>x</password></query></iq>");
    assert!(c.stanza().contains("<not-acceptable "));
    c.send(&format!("<iq type='set' id='a4'><query xmlns='jabber:iq:auth'><username>dave</username><password>{PASSWORD}</password><resource>old</resource></query></iq>"));
    assert_eq!(c.stanza(), "<iq type='result' id='a4'/>");
    c.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(c.stanza().contains("to='dave@localhost/old'"));
}

#[test]
fn legacy_auth_is_refused_on_plain_tcp_and_when_disabled() {
    let server = TestServer::start("[auth]\nlegacy_auth = false\n");
    server.add_user("dave");
    let mut c = Client::connect(&server);
    let features = c.starttls();
    assert!(!features.contains("iq-auth"), "{features}");
    c.send(&format!("<iq type='set' id='a4'><query xmlns='jabber:iq:auth'><username>dave</username><password>{PASSWORD}</password><resource>r</resource></query></iq>"));
    c.expect_stream_error("not-authorized");

    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    c.send("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
    c.header();
    c.send(&format!("<iq type='set' id='a4'><query xmlns='jabber:iq:auth'><username>dave</username><password>{PASSWORD}</password><resource>r</resource></query></iq>"));
    c.expect_stream_error("not-authorized");
}

#[test]
fn server_generates_a_resource_and_answers_session_iq() {
    let server = TestServer::start("");
    server.add_user("erin");
    let mut c = Client::connect(&server);
    c.starttls();
    assert!(c.scram(Mechanism::ScramSha256, "erin", PASSWORD));
    c.open_stream();
    c.header();
    let features = c.stanza();
    assert!(
        features
            .contains("<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>"),
        "{features}"
    );
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    let jid = text_of(&c.stanza());
    assert!(
        jid.starts_with("erin@localhost/") && jid.len() > "erin@localhost/".len(),
        "{jid}"
    );
    c.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    assert_eq!(c.stanza(), format!("<iq type='result' id='s' to='{jid}'/>"));
}

#[test]
fn bind_stage_offers_csi_and_tells_the_stanza_limit() {
    let server =
        TestServer::start("[limits]\nmax_stanza_bytes = 65536\n[keepalive]\nidle_secs = 123\n");
    server.add_user("erin");
    let mut c = Client::connect(&server);
    let secured = c.starttls();
    assert!(!secured.contains("urn:xmpp:csi:0"), "{secured}");
    assert!(c.scram(Mechanism::ScramSha256, "erin", PASSWORD));
    c.open_stream();
    c.header();
    let features = c.stanza();
    assert!(
        features.contains("<csi xmlns='urn:xmpp:csi:0'/>"),
        "{features}"
    );
    assert!(
        features.contains(
            "<limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>65536</max-bytes><idle-seconds>123</idle-seconds></limits>"
        ),
        "{features}"
    );
}

#[test]
fn only_bind_is_allowed_before_binding() {
    let server = TestServer::start("");
    server.add_user("erin");
    let mut c = Client::connect(&server);
    c.starttls();
    assert!(c.scram(Mechanism::ScramSha256, "erin", PASSWORD));
    c.open_stream();
    c.header();
    c.stanza();
    c.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    c.expect_stream_error("not-authorized");
}

#[test]
fn same_full_jid_takes_over_with_conflict() {
    let server = TestServer::start("");
    server.add_user("frank");
    let mut first = Client::login(&server, "frank", "home");
    let mut second = Client::login(&server, "frank", "home");
    first.expect_stream_error("conflict");
    second.sync();
}

#[test]
fn login_fed_one_byte_at_a_time() {
    let server = TestServer::start("");
    server.add_user("gina");
    let mut c = Client::connect(&server);
    let header = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    for b in header.bytes() {
        c.send_bytes(&[b]);
    }
    c.header();
    c.stanza();
    for b in "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".bytes() {
        c.send_bytes(&[b]);
    }
    assert!(c.stanza().starts_with("<proceed"));
    c.tls_handshake();
    for b in header.bytes() {
        c.send_bytes(&[b]);
    }
    c.header();
    c.stanza();
    let creds = base64::encode(format!("\0gina\0{PASSWORD}").as_bytes());
    for b in
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")
            .bytes()
    {
        c.send_bytes(&[b]);
    }
    assert!(c.stanza().starts_with("<success"));
    c.framer_reset_for_test();
    for b in header.bytes() {
        c.send_bytes(&[b]);
    }
    c.header();
    c.stanza();
    for b in "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>slow</resource></bind></iq>".bytes() {
        c.send_bytes(&[b]);
    }
    assert_eq!(text_of(&c.stanza()), "gina@localhost/slow");
}

#[test]
fn unauthenticated_stream_times_out() {
    let server = TestServer::start("[limits]\nauth_timeout_secs = 1\n");
    let mut c = Client::connect(&server);
    c.open_stream();
    c.header();
    c.stanza();
    c.expect_stream_error("connection-timeout");
    // A connection that never even sends a header is closed too.
    let mut silent = Client::connect(&server);
    silent.expect_stream_error("connection-timeout");
}

#[test]
fn garbage_instead_of_tls_handshake_closes_only_that_connection() {
    let server = TestServer::start("");
    server.add_user("hank");
    let mut ok = Client::online(&server, "hank", "a");
    let mut bad = std::net::TcpStream::connect(server.direct_tls).unwrap();
    use std::io::{Read, Write};
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    // rustls answers with an alert or just closes; either way it ends.
    loop {
        match bad.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    ok.sync();
}
