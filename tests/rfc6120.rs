//! RFC 6120 (XMPP Core) rules that bind a server and had no test elsewhere, one test per
//! rule, named after its section. `docs/CONFORMANCE.md` maps every rule to its test.

mod common;

use common::*;
use hearth::sasl::Mechanism;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// Opens a plain stream with `header_attrs` and returns the raw bytes of the server's
/// response header and first features, which the harness only shows in debug form.
fn raw_response_header(server: &TestServer, header_attrs: &str) -> String {
    let mut tcp = TcpStream::connect(server.starttls).unwrap();
    tcp.set_read_timeout(Some(patience(Duration::from_secs(10))))
        .unwrap();
    tcp.write_all(
        format!(
            "<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' \
             xmlns:stream='{NS_STREAMS}' version='1.0' {header_attrs}>"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("</stream:features>") {
        let n = tcp.read(&mut buf).expect("the server answers the header");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(raw).unwrap()
}

/// The attributes of the response header (parsed as a document closed after the features).
fn header_attributes(raw: &str) -> Vec<(String, String)> {
    let closed = format!("{raw}</stream:stream>");
    let doc = roxmltree::Document::parse(&closed).unwrap_or_else(|e| panic!("{e}: {raw}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "stream");
    assert_eq!(root.tag_name().namespace(), Some(NS_STREAMS));
    root.attributes()
        .map(|a| (a.name().to_string(), a.value().to_string()))
        .collect()
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn s4_7_response_header_has_from_id_version_and_lang() {
    let server = TestServer::start("");
    let raw = raw_response_header(&server, "from='alice@localhost' xml:lang='en'");
    let attrs = header_attributes(&raw);
    // §4.7.1: `from` is the service; §4.7.2: `to` echoes the initiator's `from`.
    assert_eq!(attr(&attrs, "from"), Some(DOMAIN), "{raw}");
    assert_eq!(attr(&attrs, "to"), Some("alice@localhost"), "{raw}");
    // §4.7.5: the highest version both sides support.
    assert_eq!(attr(&attrs, "version"), Some("1.0"), "{raw}");
    // §4.7.4: the receiving entity SHOULD include xml:lang (roxmltree names it `lang`).
    assert_eq!(attr(&attrs, "lang"), Some("en"), "{raw}");
    // §4.7.3: an id (hearth's are 64 random bits, 16 hex digits).
    let id = attr(&attrs, "id").expect("stream id").to_string();
    assert!(id.len() >= 16, "short stream id {id}");
}

#[test]
fn s4_7_3_stream_ids_are_unique() {
    let server = TestServer::start("");
    let ids: Vec<String> = (0..5)
        .map(|_| {
            let raw = raw_response_header(&server, "");
            attr(&header_attributes(&raw), "id").unwrap().to_string()
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        assert!(
            !ids[i + 1..].contains(id),
            "stream id {id} repeated: {ids:?}"
        );
    }
}

#[test]
fn s6_4_6_sasl_is_not_offered_again_after_success() {
    let server = TestServer::start("");
    server.add_user("alice");
    let features = roster::features_after_auth(&server, "alice");
    with_doc(&features, |f| {
        assert_eq!(f.tag_name().name(), "features");
        for child in f.children().filter(|n| n.is_element()) {
            let ns = child.tag_name().namespace();
            assert_ne!(ns, Some(NS_SASL), "SASL offered again: {features}");
            assert_ne!(
                ns,
                Some("urn:ietf:params:xml:ns:xmpp-tls"),
                "STARTTLS offered again: {features}"
            );
        }
    });
}

#[test]
fn s6_4_6_a_second_sasl_auth_after_success_is_refused() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::connect(&server);
    c.starttls();
    assert!(c.scram(Mechanism::ScramSha256, "alice", PASSWORD));
    c.open_stream();
    c.header();
    c.stanza();
    // SASL is done on this stream: a new <auth/> is not a negotiation any more, so it is
    // refused like any other element out of place (§4.3.5) and never succeeds.
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHg=</auth>");
    let error = c.stanza();
    with_doc(&error, |e| {
        assert!(e.has_tag_name((NS_STREAMS, "error")), "{error}");
        assert!(
            e.children()
                .any(|n| n.has_tag_name(("urn:ietf:params:xml:ns:xmpp-streams", "not-authorized"))),
            "{error}"
        );
    });
    assert_eq!(c.next(), Got::Close);
}

#[test]
fn s8_2_3_result_and_error_iqs_are_never_answered() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "a");
    c.sync();
    c.send("<iq type='result' id='r1'/>");
    c.send("<iq type='result' id='r2' to='localhost'/>");
    c.send(&format!(
        "<iq type='error' id='e1' to='localhost'><error type='cancel'>\
         <service-unavailable xmlns='{NS_STANZAS}'/></error></iq>"
    ));
    // The next thing the client hears is the answer to the ping after them.
    c.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = c.stanza();
    with_doc(&reply, |iq| {
        assert_eq!(iq.tag_name().name(), "iq");
        assert_eq!(iq.attribute("id"), Some("after"), "{reply}");
        assert_eq!(iq.attribute("type"), Some("result"), "{reply}");
    });
}

#[test]
fn s8_3_1_error_message_is_not_answered_with_error() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "a");
    c.sync();
    // To the server, to a full JID that is not bound, and to nobody: errors all.
    for to in ["localhost", "alice@localhost/gone", "nobody@localhost"] {
        c.send(&format!(
            "<message type='error' to='{to}' id='e'><error type='cancel'>\
             <item-not-found xmlns='{NS_STANZAS}'/></error></message>"
        ));
    }
    c.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = c.stanza();
    with_doc(&reply, |iq| {
        assert_eq!(iq.attribute("id"), Some("after"), "{reply}");
    });
}

#[test]
fn s8_3_2_error_stanza_swaps_addresses_and_names_one_condition() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "a");
    c.sync();
    c.send("<iq type='get' id='q1' to='localhost'><query xmlns='urn:example:nothing'/></iq>");
    let reply = c.stanza();
    with_doc(&reply, |iq| {
        assert_eq!(iq.tag_name().name(), "iq");
        assert_eq!(iq.attribute("type"), Some("error"));
        assert_eq!(iq.attribute("id"), Some("q1"));
        // §8.3.1: `from` is the entity that was addressed, `to` the requester.
        assert_eq!(iq.attribute("from"), Some(DOMAIN), "{reply}");
        assert_eq!(iq.attribute("to"), Some(c.jid.as_str()), "{reply}");
        let error = iq
            .children()
            .find(|n| n.has_tag_name("error"))
            .expect("an <error/> child");
        // §8.3.2: the error has a type and exactly one defined condition.
        assert!(
            ["auth", "cancel", "continue", "modify", "wait"]
                .contains(&error.attribute("type").unwrap_or("")),
            "{reply}"
        );
        let conditions: Vec<_> = error
            .children()
            .filter(|n| n.is_element() && n.tag_name().namespace() == Some(NS_STANZAS))
            .filter(|n| n.tag_name().name() != "text")
            .collect();
        assert_eq!(conditions.len(), 1, "{reply}");
        assert_eq!(conditions[0].tag_name().name(), "service-unavailable");
    });
}

#[test]
fn s8_4_extended_content_is_routed_untouched() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    alice.sync();
    bob.sync();
    alice.send(
        "<message to='bob@localhost/b' type='chat' id='x1'><body>hi</body>\
         <thing xmlns='urn:example:ext' level='3'><part>one</part><part a='b'/></thing></message>",
    );
    let got = bob.expect("id='x1'");
    with_doc(&got, |m| {
        let thing = m
            .children()
            .find(|n| n.has_tag_name(("urn:example:ext", "thing")))
            .unwrap_or_else(|| panic!("extension dropped: {got}"));
        assert_eq!(thing.attribute("level"), Some("3"));
        let parts: Vec<_> = thing.children().filter(|n| n.is_element()).collect();
        assert_eq!(parts.len(), 2, "{got}");
        assert_eq!(parts[0].text(), Some("one"));
        assert_eq!(parts[1].attribute("a"), Some("b"));
    });
}

#[test]
fn s10_1_stanzas_between_two_entities_arrive_in_order() {
    let server = TestServer::start(NO_RATE_LIMIT);
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    alice.sync();
    bob.sync();
    let batch: String = (0..200)
        .map(|i| {
            format!(
                "<message to='bob@localhost/b' type='chat' id='m{i}'><body>{i}</body></message>"
            )
        })
        .collect();
    alice.send(&batch);
    for i in 0..200 {
        let got = bob.expect("<message");
        let id = with_doc(&got, |m| m.attribute("id").unwrap_or_default().to_string());
        assert_eq!(id, format!("m{i}"), "out of order");
    }
}

#[test]
fn s10_3_1_message_without_to_goes_to_the_senders_bare_jid() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut phone = Client::online(&server, "alice", "phone");
    let mut laptop = Client::online(&server, "alice", "laptop");
    phone.sync();
    laptop.sync();
    laptop.send("<message type='chat' id='self1'><body>note to self</body></message>");
    let got = phone.expect("id='self1'");
    with_doc(&got, |m| {
        assert_eq!(m.attribute("from"), Some(laptop.jid.as_str()), "{got}");
        let body = m.children().find(|n| n.has_tag_name("body")).unwrap();
        assert_eq!(body.text(), Some("note to self"));
    });
}

#[test]
fn s10_5_3_1_presence_to_no_such_user_is_silently_ignored() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "a");
    c.sync();
    c.send("<presence to='nobody@localhost'/>");
    c.send("<presence to='nobody@localhost/x' type='unavailable'/>");
    c.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = c.stanza();
    with_doc(&reply, |iq| {
        assert_eq!(iq.attribute("id"), Some("after"), "{reply}")
    });
}

#[test]
fn s10_5_3_1_iq_to_no_such_user_is_service_unavailable() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "a");
    c.sync();
    c.send("<iq type='get' id='n1' to='nobody@localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = c.stanza();
    with_doc(&reply, |iq| {
        assert_eq!(iq.attribute("type"), Some("error"), "{reply}");
        assert_eq!(iq.attribute("id"), Some("n1"));
        assert_eq!(iq.attribute("from"), Some("nobody@localhost"), "{reply}");
        let error = iq.children().find(|n| n.has_tag_name("error")).unwrap();
        assert!(error
            .children()
            .any(|n| n.has_tag_name((NS_STANZAS, "service-unavailable"))));
    });
}

#[test]
fn s10_4_other_domain_iq_is_remote_server_not_found() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "a");
    c.sync();
    c.send("<iq type='get' id='r1' to='elsewhere.example'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = c.stanza();
    with_doc(&reply, |iq| {
        assert_eq!(iq.attribute("type"), Some("error"), "{reply}");
        assert_eq!(iq.attribute("id"), Some("r1"));
        let error = iq.children().find(|n| n.has_tag_name("error")).unwrap();
        assert!(
            error
                .children()
                .any(|n| n.has_tag_name((NS_STANZAS, "remote-server-not-found"))),
            "{reply}"
        );
    });
}

#[test]
fn s6_3_8_authzid_naming_another_user_is_invalid_authzid() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut c = Client::connect(&server);
    c.starttls();
    // §6.3.8: alice's credentials, asking to act as bob.
    let creds =
        hearth::sasl::base64::encode(format!("bob@localhost\0alice\0{PASSWORD}").as_bytes());
    c.send(&format!(
        "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>"
    ));
    let failure = c.stanza();
    with_doc(&failure, |f| {
        assert!(f.has_tag_name((NS_SASL, "failure")), "{failure}");
        assert!(
            f.children()
                .any(|n| n.has_tag_name((NS_SASL, "invalid-authzid"))),
            "{failure}"
        );
    });
    // Her own bare JID as authzid is fine.
    let creds =
        hearth::sasl::base64::encode(format!("alice@localhost\0alice\0{PASSWORD}").as_bytes());
    c.send(&format!(
        "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>"
    ));
    let success = c.stanza();
    with_doc(&success, |s| {
        assert!(s.has_tag_name((NS_SASL, "success")), "{success}")
    });
}

#[test]
fn s7_7_2_1_resource_that_is_not_a_resourcepart_is_bad_request() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::connect(&server);
    c.starttls();
    assert!(c.scram(Mechanism::ScramSha256, "alice", PASSWORD));
    c.open_stream();
    c.header();
    c.stanza();
    // RFC 7622 §3: a resourcepart is at most 1023 bytes.
    let long = "r".repeat(1024);
    c.send(&format!(
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{long}</resource></bind></iq>"
    ));
    let reply = c.stanza();
    with_doc(&reply, |iq| {
        assert_eq!(iq.attribute("type"), Some("error"), "{reply}");
        assert_eq!(iq.attribute("id"), Some("b1"));
        let error = iq.children().find(|n| n.has_tag_name("error")).unwrap();
        assert_eq!(error.attribute("type"), Some("modify"), "{reply}");
        assert!(
            error
                .children()
                .any(|n| n.has_tag_name((NS_STANZAS, "bad-request"))),
            "{reply}"
        );
    });
    // The stream stays usable: a good resource binds.
    c.send(
        "<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>ok</resource></bind></iq>",
    );
    let reply = c.stanza();
    with_doc(&reply, |iq| {
        assert_eq!(iq.attribute("type"), Some("result"), "{reply}")
    });
}

/// A login whose stream headers carry `xml:lang='de'`.
fn login_with_lang(server: &TestServer, user: &str, resource: &str) -> Client {
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' \
         xmlns:stream='{NS_STREAMS}' version='1.0' xml:lang='de'>"
    );
    let mut c = Client::connect(server);
    c.send(&header);
    c.header();
    c.stanza();
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    c.stanza();
    c.tls_handshake();
    c.send(&header);
    c.header();
    c.stanza();
    assert!(c.scram(Mechanism::ScramSha256, user, PASSWORD));
    c.send(&header);
    c.header();
    c.stanza();
    c.send(&format!(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    ));
    c.jid = text_of(&c.stanza());
    c.send("<presence/>");
    c
}

#[test]
#[ignore = "deliberate: see CONFORMANCE"]
fn s8_1_5_stanza_without_lang_gets_the_streams_lang() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = login_with_lang(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    alice.sync();
    bob.sync();
    alice.send("<message to='bob@localhost/b' type='chat' id='l1'><body>hallo</body></message>");
    let got = bob.expect("id='l1'");
    with_doc(&got, |m| {
        assert_eq!(
            m.attribute(("http://www.w3.org/XML/1998/namespace", "lang")),
            Some("de"),
            "{got}"
        );
    });
}

#[test]
fn s10_5_2_iq_to_a_server_resource_it_has_not_is_service_unavailable() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "a");
    c.sync();
    c.send("<iq type='get' id='d1' to='localhost/anything'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = c.stanza();
    // hearth has no server-side resources: the server answers for the address it owns.
    with_doc(&reply, |iq| {
        assert_eq!(iq.attribute("type"), Some("error"), "{reply}");
        assert_eq!(iq.attribute("from"), Some("localhost/anything"), "{reply}");
        let error = iq.children().find(|n| n.has_tag_name("error")).unwrap();
        assert!(
            error
                .children()
                .any(|n| n.has_tag_name((NS_STANZAS, "service-unavailable"))),
            "{reply}"
        );
    });
}

#[test]
fn s4_9_3_22_utf16_stream_is_unsupported_encoding() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    let header = format!(
        "<?xml version='1.0' encoding='UTF-16'?><stream:stream to='{DOMAIN}' \
         xmlns='jabber:client' xmlns:stream='{NS_STREAMS}' version='1.0'>"
    );
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(header.encode_utf16().flat_map(u16::to_le_bytes));
    c.send_bytes(&bytes);
    let error = loop {
        match c.next() {
            Got::Header(_) => continue,
            Got::Stanza(s) => break s,
            other => panic!("expected a stream error, got {other:?}"),
        }
    };
    with_doc(&error, |e| {
        assert!(e.has_tag_name((NS_STREAMS, "error")), "{error}");
        assert!(
            e.children().any(|n| n.has_tag_name((
                "urn:ietf:params:xml:ns:xmpp-streams",
                "unsupported-encoding"
            ))),
            "{error}"
        );
    });
}

#[test]
fn s13_8_scram_sha_1_plus_is_offered() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    let features = c.starttls();
    let mechanisms: Vec<String> = with_doc(&features, |f| {
        f.descendants()
            .filter(|n| n.has_tag_name((NS_SASL, "mechanism")))
            .filter_map(|n| n.text().map(str::to_owned))
            .collect()
    });
    assert!(
        mechanisms.iter().any(|m| m == "SCRAM-SHA-1-PLUS"),
        "{mechanisms:?}"
    );
}
