//! Push notifications (XEP-0357) as clients and an app server see them. The app server is
//! a second logged-in client (`app@localhost/push`): the only kind of app server a server
//! without federation can reach. Covered: enable and disable (persisting across a
//! restart), the exact publish with the publish-options secret, waking a device whose
//! session is hibernated (XEP-0198) but not one that is online, disabling a registration
//! whose app server answers with an error, and the account's disco#info.

mod common;

use common::*;
use hearth::sasl::Mechanism;
use std::time::Duration;

const APP: &str = "app@localhost/push";
const SECRET: &str = "eruio234vzxc2kla-91";
const QUIET: Duration = Duration::from_millis(400);

fn form(secret: &str) -> String {
    format!(
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='secret'><value>{secret}</value></field></x>"
    )
}

/// Sends an enable (or any push iq) and returns the reply.
fn push_iq(client: &mut Client, id: &str, element: &str) -> String {
    client.send(&format!("<iq type='set' id='{id}'>{element}</iq>"));
    client.expect(&format!("id='{id}'"))
}

fn enable(client: &mut Client, jid: &str, node: &str, form: &str) {
    let reply = push_iq(
        client,
        &format!("en-{node}"),
        &format!("<enable xmlns='urn:xmpp:push:0' jid='{jid}' node='{node}'>{form}</enable>"),
    );
    assert!(reply.contains("type='result'"), "{reply}");
}

fn chat(to: &str, id: &str) -> String {
    format!("<message to='{to}' type='chat' id='{id}'><body>text of {id}</body></message>")
}

/// The next notification the app server gets: its id and the node it publishes to.
fn notification(app: &mut Client) -> (String, String, String) {
    let iq = app.expect("urn:xmpp:push:0");
    let (id, node) = with_doc(&iq, |n| {
        let publish = n.descendants().find(|d| d.has_tag_name("publish")).unwrap();
        (
            n.attribute("id").unwrap().to_string(),
            publish.attribute("node").unwrap().to_string(),
        )
    });
    (id, node, iq)
}

fn answer(app: &mut Client, id: &str) {
    app.send(&format!(
        "<iq type='result' id='{id}' to='alice@localhost'/>"
    ));
}

fn users(server: &TestServer) {
    for user in ["alice", "bob", "app"] {
        server.add_user(user);
    }
}

#[test]
fn offline_message_publishes_the_xep_summary_with_the_secret() {
    let server = TestServer::start("");
    users(&server);
    let mut app = Client::login(&server, "app", "push");
    let mut alice = Client::online(&server, "alice", "phone");
    enable(&mut alice, APP, "node-1", &form(SECRET));
    drop(alice);
    server.wait_for_log("alice@localhost/phone: session ended");

    let mut bob = Client::online(&server, "bob", "desk");
    bob.send(&chat("alice@localhost", "m1"));
    let (id, _, iq) = notification(&mut app);
    assert!(id.starts_with("push-"), "{id}");
    assert_eq!(
        iq,
        format!(
            "<iq type='set' from='alice@localhost' to='{APP}' id='{id}'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='node-1'><item>\
             <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='form'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>\
             <field var='message-count'><value>1</value></field>\
             <field var='last-message-sender'><value>bob@localhost/desk</value></field>\
             </x></notification></item></publish>\
             <publish-options>{}</publish-options></pubsub></iq>",
            form(SECRET)
        )
    );
    answer(&mut app, &id);

    // Chat states and the user's own messages wake nobody; a subscription request does.
    bob.send("<message to='alice@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    bob.send("<presence to='alice@localhost' type='subscribe'/>");
    let (id, _, iq) = notification(&mut app);
    assert!(
        iq.contains("<field var='last-message-sender'><value>bob@localhost</value></field>"),
        "{iq}"
    );
    answer(&mut app, &id);
    let mut alice = Client::login(&server, "alice", "laptop");
    alice.send(&chat("alice@localhost", "note-to-self"));
    alice.sync();
    app.expect_silence(QUIET);
    // The secret and the node are the device's: never in the log.
    let log = server.log();
    assert!(!log.contains(SECRET) && !log.contains("node-1"), "{log}");
}

#[test]
fn enable_and_disable_persist_across_a_restart() {
    let mut server =
        TestServer::start("[push]\nmax_registrations_per_user = 2\ninclude_body = true\n");
    users(&server);
    let mut alice = Client::login(&server, "alice", "phone");
    enable(&mut alice, APP, "n1", &form("s1"));
    enable(&mut alice, APP, "n2", "");
    // Enabling the same JID and node again replaces it; a third one is over the cap.
    enable(&mut alice, APP, "n1", &form("s1b"));
    let refused = push_iq(
        &mut alice,
        "cap",
        "<enable xmlns='urn:xmpp:push:0' jid='app@localhost/push' node='n3'/>",
    );
    assert!(refused.contains("<policy-violation "), "{refused}");
    for (id, bad, condition) in [
        ("b1", "<enable xmlns='urn:xmpp:push:0' jid='app@localhost/push'/>", "bad-request"),
        ("b2", "<enable xmlns='urn:xmpp:push:0' node='n'/>", "bad-request"),
        (
            "b3",
            "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data' type='submit'/></enable>",
            "bad-request",
        ),
    ] {
        let reply = push_iq(&mut alice, id, bad);
        assert!(reply.contains(&format!("<{condition} ")), "{reply}");
    }
    drop(alice);
    assert!(server.stop().success());
    server.spawn();

    let mut app = Client::login(&server, "app", "push");
    let mut bob = Client::online(&server, "bob", "desk");
    bob.send(&chat("alice@localhost", "m1"));
    let (id1, node1, iq1) = notification(&mut app);
    let (id2, node2, iq2) = notification(&mut app);
    assert_eq!((node1.as_str(), node2.as_str()), ("n1", "n2"));
    assert!(iq1.contains(&form("s1b")), "{iq1}");
    assert!(!iq2.contains("publish-options"), "{iq2}");
    // include_body is on here.
    assert!(
        iq1.contains("<field var='last-message-body'><value>text of m1</value></field>"),
        "{iq1}"
    );
    answer(&mut app, &id1);
    answer(&mut app, &id2);

    // Bound without presence, alice still gets messages offline, and notifications.
    let mut alice = Client::login(&server, "alice", "phone");
    let reply = push_iq(
        &mut alice,
        "d1",
        "<disable xmlns='urn:xmpp:push:0' jid='app@localhost/push' node='n1'/>",
    );
    assert!(reply.contains("type='result'"), "{reply}");
    bob.send(&chat("alice@localhost", "m2"));
    let (id, node, _) = notification(&mut app);
    assert_eq!(node, "n2");
    answer(&mut app, &id);
    app.sync();
    let reply = push_iq(
        &mut alice,
        "d2",
        "<disable xmlns='urn:xmpp:push:0' jid='app@localhost/push'/>",
    );
    assert!(reply.contains("type='result'"), "{reply}");
    bob.send(&chat("alice@localhost", "m3"));
    bob.sync();
    app.expect_silence(QUIET);
}

#[test]
fn an_online_device_is_not_woken_a_hibernated_one_is() {
    let server = TestServer::start("");
    users(&server);
    let mut app = Client::login(&server, "app", "push");
    let mut bob = Client::online(&server, "bob", "desk");
    let mut alice = Client::online(&server, "alice", "phone");
    enable(&mut alice, APP, "phone-node", &form(SECRET));
    bob.send(&chat("alice@localhost", "m1"));
    alice.expect("text of m1");
    bob.sync();
    app.expect_silence(QUIET);

    alice.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    let enabled = alice.expect("<enabled ");
    let previd = with_doc(&enabled, |n| n.attribute("id").unwrap().to_string());
    drop(alice);
    server.wait_for_log("alice@localhost/phone: connection lost, session kept for resumption");
    app.expect_silence(QUIET);
    bob.send(&chat("alice@localhost", "m2"));
    let (id, node, iq) = notification(&mut app);
    assert_eq!(node, "phone-node");
    assert!(iq.contains("<value>bob@localhost/desk</value>"), "{iq}");
    assert!(iq.contains(SECRET), "{iq}");
    answer(&mut app, &id);
    app.sync();

    // Resumed, the phone reads for itself again.
    let mut alice = Client::connect(&server);
    alice.starttls();
    assert!(alice.scram(Mechanism::ScramSha256, "alice", PASSWORD));
    alice.open_stream();
    alice.header();
    alice.stanza();
    alice.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"
    ));
    alice.expect("<resumed ");
    alice.expect("text of m2");
    bob.send(&chat("alice@localhost", "m3"));
    alice.expect("text of m3");
    bob.sync();
    app.expect_silence(QUIET);
}

#[test]
fn unacknowledged_messages_wake_the_device_when_the_connection_drops() {
    let server = TestServer::start("");
    users(&server);
    let mut app = Client::login(&server, "app", "push");
    let mut bob = Client::online(&server, "bob", "desk");
    let mut alice = Client::online(&server, "alice", "phone");
    enable(&mut alice, APP, "phone-node", "");
    alice.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    alice.expect("<enabled ");
    bob.send(&chat("alice@localhost", "m1"));
    alice.expect("text of m1");
    // Received but never acknowledged: the phone may not have shown it.
    drop(alice);
    let (id, node, iq) = notification(&mut app);
    assert_eq!(node, "phone-node");
    assert!(!iq.contains("last-message-sender"), "{iq}");
    answer(&mut app, &id);
    app.sync();
}

#[test]
fn an_app_server_error_disables_the_registration() {
    let server = TestServer::start("");
    users(&server);
    let mut app = Client::login(&server, "app", "push");
    let mut bob = Client::online(&server, "bob", "desk");
    let mut alice = Client::login(&server, "alice", "phone");
    enable(&mut alice, APP, "n1", "");
    // No federation: an app server on another domain cannot be reached, so it goes at once.
    enable(&mut alice, "p2.example.net", "remote", "");

    bob.send(&chat("alice@localhost", "m1"));
    let (id, _, _) = notification(&mut app);
    server.wait_for_log(
        "alice: push notifications at p2.example.net disabled: remote-server-not-found",
    );
    // A temporary error keeps the registration…
    app.send(&format!(
        "<iq type='error' id='{id}' to='alice@localhost'><error type='wait'>\
         <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ));
    app.sync();
    bob.send(&chat("alice@localhost", "m2"));
    let (id, _, _) = notification(&mut app);
    // …a permanent one removes it.
    app.send(&format!(
        "<iq type='error' id='{id}' to='alice@localhost'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ));
    app.sync();
    server.wait_for_log("alice: push notifications at app@localhost/push disabled: item-not-found");
    bob.send(&chat("alice@localhost", "m3"));
    bob.sync();
    app.expect_silence(QUIET);
}

fn account_info(client: &mut Client) -> String {
    client.send("<iq type='get' id='info' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    client.expect("id='info'")
}

#[test]
fn the_account_advertises_push_unless_disabled() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::login(&server, "alice", "phone");
    let info = account_info(&mut alice);
    assert!(info.contains("<feature var='urn:xmpp:push:0'/>"), "{info}");
    drop(server);

    let server = TestServer::start("[push]\nenabled = false\n");
    server.add_user("alice");
    let mut alice = Client::login(&server, "alice", "phone");
    let info = account_info(&mut alice);
    assert!(!info.contains("urn:xmpp:push:0"), "{info}");
    let reply = push_iq(
        &mut alice,
        "e",
        "<enable xmlns='urn:xmpp:push:0' jid='p.example' node='n'/>",
    );
    assert!(reply.contains("<service-unavailable "), "{reply}");
}
