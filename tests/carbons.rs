//! Message Carbons (XEP-0280) as a user's several clients see them: sent
//! and received copies, `<private/>` and `<no-copy/>`, disabling, and the
//! server's disco#info.

mod common;

use common::*;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const NS: &str = "urn:xmpp:carbons:2";

/// Online at `priority`, carbons enabled if asked, and quiet.
fn resource(server: &TestServer, resource: &str, priority: i8, carbons: bool) -> Client {
    let mut client = Client::login(server, "alice", resource);
    client.send(&format!(
        "<presence><priority>{priority}</priority></presence>"
    ));
    if carbons {
        client.send(&format!(
            "<iq type='set' id='on'><enable xmlns='{NS}'/></iq>"
        ));
        assert_eq!(
            client.expect("id='on'"),
            format!("<iq type='result' id='on' from='localhost' to='alice@localhost/{resource}'/>")
        );
    }
    client.sync();
    client
}

fn received(to: &str, original: &str) -> String {
    format!(
        "<message from='alice@localhost' to='alice@localhost/{to}' type='chat'><received xmlns='{NS}'><forwarded xmlns='urn:xmpp:forward:0'>{original}</forwarded></received></message>"
    )
}

fn sent(to: &str, original: &str) -> String {
    format!(
        "<message from='alice@localhost' to='alice@localhost/{to}' type='chat'><sent xmlns='{NS}'><forwarded xmlns='urn:xmpp:forward:0'>{original}</forwarded></sent></message>"
    )
}

/// Three clients of alice (a1 top priority and a2 with carbons, a3 without) and bob.
fn setup(server: &TestServer) -> (Client, Client, Client, Client) {
    server.add_user("alice");
    server.add_user("bob");
    server.add_user("carol");
    let mut a1 = resource(server, "a1", 5, true);
    let mut a2 = resource(server, "a2", 1, true);
    let mut a3 = resource(server, "a3", 1, false);
    let bob = Client::online(server, "bob", "phone");
    for client in [&mut a1, &mut a2, &mut a3] {
        client.sync();
    }
    (a1, a2, a3, bob)
}

/// These tests compare whole stanzas, so archive ids (XEP-0359, random per run) are off.
const EXACT: &str = "[mam]\nenabled = false\n";

#[test]
fn sent_and_received_copies_are_wrapped_and_go_only_to_enabled_resources() {
    let server = TestServer::start(EXACT);
    let (mut a1, mut a2, mut a3, mut bob) = setup(&server);

    // To the bare JID: a1 (highest priority) gets it, a2 a received copy.
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>hi alice</body></message>");
    let original = "to='alice@localhost' type='chat' id='m1' from='bob@localhost/phone'><body>hi alice</body></message>";
    assert_eq!(a1.expect("hi alice"), format!("<message {original}"));
    assert_eq!(
        a2.expect("hi alice"),
        received("a2", &format!("<message xmlns='jabber:client' {original}"))
    );

    // To a full JID: the other enabled resources get a received copy.
    bob.send("<message to='alice@localhost/a2' type='chat' id='m2'><body>to a2</body></message>");
    let original = "to='alice@localhost/a2' type='chat' id='m2' from='bob@localhost/phone'><body>to a2</body></message>";
    assert_eq!(a2.expect("to a2"), format!("<message {original}"));
    assert_eq!(
        a1.expect("to a2"),
        received("a1", &format!("<message xmlns='jabber:client' {original}"))
    );

    // Sent from a2: a1 gets a sent copy, a2 itself nothing more.
    a2.send("<message to='bob@localhost' type='chat' id='m3'><body>from a2</body></message>");
    bob.expect("from a2");
    assert_eq!(
        a1.expect("from a2"),
        sent("a1", "<message xmlns='jabber:client' to='bob@localhost' type='chat' id='m3' from='alice@localhost/a2'><body>from a2</body></message>")
    );

    // Sent from a3, which did not enable carbons: both enabled ones get copies.
    a3.send("<message to='bob@localhost/phone' type='chat' id='m4'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    bob.expect("id='m4'");
    let original = "<message xmlns='jabber:client' to='bob@localhost/phone' type='chat' id='m4' from='alice@localhost/a3'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>";
    assert_eq!(a1.expect("id='m4'"), sent("a1", original));
    assert_eq!(a2.expect("id='m4'"), sent("a2", original));

    // A message stored for an offline user is copied all the same.
    a1.send("<message to='carol@localhost' type='chat' id='m5'><body>for later</body></message>");
    assert_eq!(
        a2.expect("for later"),
        sent("a2", "<message xmlns='jabber:client' to='carol@localhost' type='chat' id='m5' from='alice@localhost/a1'><body>for later</body></message>")
    );

    // Headlines are not copied; a3 never gets a copy.
    bob.send("<message to='alice@localhost/a1' type='headline' id='h'><body>news</body></message>");
    a1.expect("news");
    a2.expect_silence(QUIET);
    a3.expect_silence(QUIET);
    a2.sync();
}

#[test]
fn private_no_copy_and_disable_stop_copies() {
    let server = TestServer::start(EXACT);
    let (mut a1, mut a2, mut a3, mut bob) = setup(&server);

    // <private/> is not copied, and the recipient does not see it.
    bob.send(&format!("<message to='alice@localhost' type='chat' id='p1'><body>secret</body><private xmlns='{NS}'/></message>"));
    assert_eq!(
        a1.expect("secret"),
        "<message to='alice@localhost' type='chat' id='p1' from='bob@localhost/phone'><body>secret</body></message>"
    );
    a1.send(&format!("<message to='bob@localhost' type='chat' id='p2'><body>hush</body><private xmlns='{NS}'/></message>"));
    assert_eq!(
        bob.expect("hush"),
        "<message to='bob@localhost' type='chat' id='p2' from='alice@localhost/a1'><body>hush</body></message>"
    );
    // XEP-0334 <no-copy/> likewise (and reaches the recipient unchanged).
    a1.send("<message to='bob@localhost' type='chat' id='p3'><body>solo</body><no-copy xmlns='urn:xmpp:hints'/></message>");
    assert!(bob
        .expect("solo")
        .contains("<no-copy xmlns='urn:xmpp:hints'/>"));
    a2.expect_silence(QUIET);

    // Disabled (twice: not an error), a2 gets no more copies; a1 still does.
    for _ in 0..2 {
        a2.send(&format!(
            "<iq type='set' id='off'><disable xmlns='{NS}'/></iq>"
        ));
        assert!(a2.expect("id='off'").contains("type='result'"));
    }
    bob.send("<message to='alice@localhost/a3' type='chat' id='q1'><body>after</body></message>");
    a3.expect("after");
    assert!(a1
        .expect("after")
        .contains("<received xmlns='urn:xmpp:carbons:2'>"));
    a2.expect_silence(QUIET);

    // Another account's carbons are not a client's to change.
    a2.send(&format!(
        "<iq type='set' id='x' to='bob@localhost'><enable xmlns='{NS}'/></iq>"
    ));
    assert!(a2.expect("id='x'").contains("<not-allowed "));
}

#[test]
fn resources_that_got_the_message_get_no_copy() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut a1 = resource(&server, "a1", 1, true);
    let mut a2 = resource(&server, "a2", 1, true);
    let mut bob = Client::online(&server, "bob", "phone");
    a1.sync();
    // A priority tie: both get the message itself, and no carbon.
    bob.send("<message to='alice@localhost' type='chat' id='t1'><body>tie</body></message>");
    assert!(a1
        .expect("tie")
        .starts_with("<message to='alice@localhost'"));
    assert!(a2
        .expect("tie")
        .starts_with("<message to='alice@localhost'"));
    a1.expect_silence(QUIET);
    a2.expect_silence(QUIET);
}

#[test]
fn server_advertises_carbons() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "r");
    c.send("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = c.expect("id='d'");
    assert!(
        info.contains("<feature var='urn:xmpp:carbons:2'/>"),
        "{info}"
    );
}

/// The `(by, id)` of every XEP-0359 stanza-id of a message.
fn stanza_ids(message: roxmltree::Node) -> Vec<(String, String)> {
    message
        .children()
        .filter(|c| c.has_tag_name(("urn:xmpp:sid:0", "stanza-id")))
        .map(|c| {
            let attr = |name| c.attribute(name).unwrap_or_default().to_string();
            (attr("by"), attr("id"))
        })
        .collect()
}

/// [`stanza_ids`] of the message a carbon forwards.
fn forwarded_stanza_ids(carbon: &str) -> Vec<(String, String)> {
    with_doc(carbon, |message| {
        let forwarded = message
            .descendants()
            .find(|n| n.has_tag_name(("urn:xmpp:forward:0", "forwarded")))
            .unwrap_or_else(|| panic!("no forwarded: {carbon}"));
        let original = forwarded.first_element_child().unwrap();
        assert!(
            original.has_tag_name(("jabber:client", "message")),
            "{carbon}"
        );
        stanza_ids(original)
    })
}

/// The ids of alice's own archive, oldest first.
fn archive_ids(client: &mut Client) -> Vec<String> {
    client.send("<iq type='set' id='mq'><query xmlns='urn:xmpp:mam:2'/></iq>");
    let mut ids = Vec::new();
    loop {
        let stanza = client.stanza();
        if stanza.contains("id='mq'") {
            assert!(stanza.contains("type='result'"), "{stanza}");
            return ids;
        }
        ids.push(with_doc(&stanza, |m| {
            m.first_element_child()
                .unwrap()
                .attribute("id")
                .unwrap()
                .to_string()
        }));
    }
}

#[test]
fn copies_carry_the_stanza_id_of_their_users_archive() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut a1 = resource(&server, "a1", 5, true);
    let mut a2 = resource(&server, "a2", 1, true);
    let mut a3 = resource(&server, "a3", 1, true);
    let mut bob = Client::online(&server, "bob", "phone");
    a1.sync();

    // Received: the copies carry the id alice's archive gave, as a1's message does; a
    // forged one claiming to be alice's is gone.
    bob.send(
        "<message to='alice@localhost' type='chat' id='r1'><body>incoming</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='fake'/></message>",
    );
    let got = a1.expect("incoming");
    let given = with_doc(&got, stanza_ids);
    assert_eq!(given.len(), 1, "{got}");
    assert_eq!(given[0].0, "alice@localhost");
    for client in [&mut a2, &mut a3] {
        let carbon = client.expect("incoming");
        assert!(
            carbon.contains("<received xmlns='urn:xmpp:carbons:2'>"),
            "{carbon}"
        );
        assert_eq!(forwarded_stanza_ids(&carbon), given, "{carbon}");
    }

    // Sent: the copies carry alice's archive id, never bob's, nor one a2 made up.
    a2.send(
        "<message to='bob@localhost' type='chat' id='s1'><body>outgoing</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='made-up'/></message>",
    );
    // Bob gets his own archive's id (and the made-up one, which only a client of alice
    // could take for real, XEP-0359 §3).
    assert!(bob.expect("outgoing").contains("by='bob@localhost'"));
    let copies: Vec<_> = [&mut a1, &mut a3]
        .into_iter()
        .map(|client| forwarded_stanza_ids(&client.expect("outgoing")))
        .collect();
    assert_eq!(copies[0], copies[1]);
    assert_eq!(copies[0].len(), 1, "{copies:?}");
    assert_eq!(copies[0][0].0, "alice@localhost");
    a2.expect_silence(QUIET);

    // Both are the ids alice's archive answers with.
    assert_eq!(
        archive_ids(&mut a3),
        [given[0].1.clone(), copies[0][0].1.clone()]
    );
}
