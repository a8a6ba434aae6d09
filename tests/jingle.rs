//! Jingle (XEP-0166) needs nothing of the server but RFC 6121 §8.5.3 iq routing between
//! full JIDs: the request reaches the other resource with its payload untouched and the
//! sender stamped, and the answer finds its way back.

mod common;

use common::*;

const JINGLE: &str = "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' \
    initiator='alice@localhost/desk' sid='a73sjjvkla37jfea'>\
    <content creator='initiator' name='voice'>\
    <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>\
    <payload-type id='96' name='speex' clockrate='16000'/>\
    <payload-type id='0' name='PCMU'/></description>\
    <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' pwd='asd88fgpdd777uzjYhagZg' ufrag='8hhy'>\
    <candidate component='1' foundation='1' generation='0' id='el0747fg11' ip='10.0.1.1' \
    network='1' port='8998' priority='2130706431' protocol='udp' type='host'/>\
    </transport></content><reason><text>Ring &amp; &lt;ring&gt;</text></reason></jingle>";

/// Namespace, name, sorted attributes, text and children, so that two serialisations
/// of the same element compare equal.
fn canonical(node: roxmltree::Node) -> String {
    if node.is_text() {
        return node.text().unwrap_or_default().to_string();
    }
    let mut attributes: Vec<String> = node
        .attributes()
        .map(|a| format!("{}={:?}", a.name(), a.value()))
        .collect();
    attributes.sort();
    let children: Vec<String> = node.children().map(canonical).collect();
    format!(
        "{{{}}}{}[{}]({})",
        node.tag_name().namespace().unwrap_or_default(),
        node.tag_name().name(),
        attributes.join(","),
        children.join("")
    )
}

fn jingle_of(xml: &str) -> String {
    with_doc(xml, |node| {
        let jingle = node
            .descendants()
            .find(|n| n.has_tag_name(("urn:xmpp:jingle:1", "jingle")))
            .expect("a jingle element");
        canonical(jingle)
    })
}

#[test]
fn jingle_iq_reaches_the_other_resource_untouched_and_the_result_returns() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "desk");
    let mut bob = Client::online(&server, "bob", "phone");
    alice.send(&format!(
        "<iq type='set' id='j1' to='bob@localhost/phone'>{JINGLE}</iq>"
    ));
    let got = bob.expect("id='j1'");
    with_doc(&got, |iq| {
        assert_eq!(iq.attribute("from"), Some("alice@localhost/desk"));
        assert_eq!(iq.attribute("to"), Some("bob@localhost/phone"));
        assert_eq!(iq.attribute("type"), Some("set"));
    });
    let sent = jingle_of(&format!("<iq xmlns='jabber:client'>{JINGLE}</iq>"));
    assert_eq!(jingle_of(&got), sent, "{got}");

    bob.send("<iq type='result' id='j1' to='alice@localhost/desk'/>");
    let result = alice.expect("id='j1'");
    with_doc(&result, |iq| {
        assert_eq!(iq.attribute("type"), Some("result"));
        assert_eq!(iq.attribute("from"), Some("bob@localhost/phone"));
    });

    // An error answer (here: unknown session) comes back the same way.
    alice.send(
        "<iq type='set' id='j2' to='bob@localhost/phone'><jingle xmlns='urn:xmpp:jingle:1' \
         action='session-terminate' sid='nope'/></iq>",
    );
    bob.expect("id='j2'");
    bob.send(
        "<iq type='error' id='j2' to='alice@localhost/desk'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <unknown-session xmlns='urn:xmpp:jingle:errors:1'/></error></iq>",
    );
    let error = alice.expect("id='j2'");
    assert!(error.contains("type='error'"), "{error}");
    assert!(
        error.contains("<unknown-session xmlns='urn:xmpp:jingle:errors:1'/>"),
        "{error}"
    );
}
