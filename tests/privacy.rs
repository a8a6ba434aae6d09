//! Privacy lists (XEP-0016) as clients see them: managing lists, active and default lists,
//! list pushes, the XEP's errors, and what lists let through — messages (also while the
//! user is offline), iq, and presence in both directions.

mod common;

use common::roster::*;
use common::*;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const NS: &str = "jabber:iq:privacy";

/// Online with the roster requested, and everything sent so far read.
fn ready(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut client = Client::online(server, user, resource);
    roster_get(&mut client);
    client.sync();
    client
}

/// Round-trips a ping and checks that nothing read before its answer contains `needle`.
fn sync_without(client: &mut Client, needle: &str) {
    client.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>");
    loop {
        let stanza = client.stanza();
        assert!(!stanza.contains(needle), "unexpected: {stanza}");
        if stanza.contains("id='sync'") {
            return;
        }
    }
}

/// Sends a privacy iq with `payload` inside the query and returns the answer.
fn privacy(client: &mut Client, ty: &str, id: &str, payload: &str) -> String {
    client.send(&format!(
        "<iq type='{ty}' id='{id}'><query xmlns='{NS}'>{payload}</query></iq>"
    ));
    client.expect(&format!("id='{id}'"))
}

/// Creates or replaces list `name` (or removes it, with no items): returns the answer and,
/// when it succeeded, also reads (and acknowledges) the list push this resource gets.
fn set_list(client: &mut Client, id: &str, name: &str, items: &str) -> String {
    client.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS}'><list name='{name}'>{items}</list></query></iq>"
    ));
    let (mut reply, mut pushed) = (None, false);
    while reply
        .as_ref()
        .is_none_or(|r: &String| r.contains("type='result'") && !pushed)
    {
        let stanza = client.stanza();
        if stanza.contains(&format!("id='{id}'")) {
            reply = Some(stanza);
        } else if stanza.contains("<iq type='set'") && stanza.contains(NS) {
            expect_list_push(client, &stanza, name);
            pushed = true;
        }
    }
    reply.unwrap()
}

/// Checks a privacy list push for list `name` and acknowledges it.
fn expect_list_push(client: &mut Client, push: &str, name: &str) {
    assert!(push.starts_with("<iq type='set' id='"), "{push}");
    assert!(push.contains(&format!("to='{}'", client.jid)), "{push}");
    assert!(
        push.ends_with(&format!(
            "><query xmlns='{NS}'><list name='{name}'/></query></iq>"
        )),
        "{push}"
    );
    let id = with_doc(push, |iq| iq.attribute("id").unwrap().to_string());
    client.send(&format!("<iq type='result' id='{id}'/>"));
}

fn assert_result(reply: &str) {
    assert!(reply.contains("type='result'"), "{reply}");
}

fn assert_error(reply: &str, condition: &str) {
    assert!(
        reply.contains("type='error'") && reply.contains(&format!("<{condition} ")),
        "wanted {condition}: {reply}"
    );
}

/// `client` sends a chat message to `to` with id and body `id`.
fn chat(client: &mut Client, to: &str, id: &str) {
    client.send(&format!(
        "<message to='{to}' id='{id}' type='chat'><body>{id}</body></message>"
    ));
}

/// The message `id` bounced back to `client` with `<service-unavailable/>` from `from`.
fn expect_bounce(client: &mut Client, id: &str, from: &str) {
    let reply = client.expect(&format!("id='{id}'"));
    assert_error(&reply, "service-unavailable");
    assert!(reply.contains(&format!("from='{from}'")), "{reply}");
}

const CONTACTS_ONLY: &str = "<item type='subscription' value='both' action='allow' order='1'/>\
    <item type='subscription' value='to' action='allow' order='2'/>\
    <item type='subscription' value='from' action='allow' order='3'/>\
    <item action='deny' order='4'/>";

#[test]
fn only_contacts_reach_a_user_with_that_default_list_even_offline() {
    let mut server = TestServer::start("");
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    let mut carol = ready(&server, "carol", "c");
    // Bob is subscribed to Alice: on her roster he is "from".
    subscribe(&mut bob, &mut alice);
    assert_result(&set_list(&mut alice, "l1", "contacts", CONTACTS_ONLY));
    assert_result(&privacy(
        &mut alice,
        "set",
        "d1",
        "<default name='contacts'/>",
    ));

    // Online: the stranger bounces, the contact gets through.
    chat(&mut carol, "alice@localhost", "m1");
    expect_bounce(&mut carol, "m1", "alice@localhost");
    chat(&mut bob, "alice@localhost", "m2");
    alice.expect("<body>m2</body>");

    // Offline, the default list still applies: nothing from the stranger is stored.
    drop(alice);
    bob.expect("type='unavailable' from='alice@localhost/a'");
    chat(&mut carol, "alice@localhost", "m3");
    expect_bounce(&mut carol, "m3", "alice@localhost");
    chat(&mut bob, "alice@localhost", "m4");
    sync_without(&mut bob, "id='m4'");

    // The default list survives a restart.
    drop(bob);
    drop(carol);
    assert!(server.stop().success());
    server.spawn();
    let mut carol = Client::online(&server, "carol", "c");
    chat(&mut carol, "alice@localhost/a", "m5");
    expect_bounce(&mut carol, "m5", "alice@localhost/a");
    let mut alice = Client::online(&server, "alice", "a");
    let stored = alice.expect("<body>");
    assert!(stored.contains("<body>m4</body>"), "{stored}");
    alice.expect_silence(QUIET);
}

#[test]
fn jid_and_group_items_and_fall_through_allow() {
    let server = TestServer::start("");
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    let mut carol_x = ready(&server, "carol", "x");
    let mut carol_y = ready(&server, "carol", "y");
    assert_result(&roster_set(
        &mut alice,
        "<item jid='bob@localhost'><group>Enemies</group></item>",
    ));
    expect_push(&mut alice);
    // Group items deny Bob's messages only; a full-JID item one resource of Carol's; an item
    // for all stanzas keeps Alice from writing to Dave. No fall-through: the rest is allowed.
    let items = "<item type='group' value='Enemies' action='deny' order='10'><message/></item>\
        <item type='jid' value='carol@localhost/x' action='deny' order='20'/>\
        <item type='jid' value='dave@localhost' action='deny' order='30'/>";
    assert_result(&set_list(&mut alice, "l1", "mixed", items));
    assert_result(&privacy(&mut alice, "set", "a1", "<active name='mixed'/>"));
    let list = privacy(&mut alice, "get", "g1", "<list name='mixed'/>");
    assert!(
        list.contains(&format!(
            "<query xmlns='{NS}'><list name='mixed'>{items}</list></query>"
        )),
        "{list}"
    );

    chat(&mut bob, "alice@localhost", "m1");
    expect_bounce(&mut bob, "m1", "alice@localhost");
    bob.send("<iq type='get' id='p1' to='alice@localhost/a'><ping xmlns='urn:xmpp:ping'/></iq>");
    let ping = alice.expect("id='p1'");
    assert!(ping.contains("from='bob@localhost/b'"), "{ping}");

    chat(&mut carol_x, "alice@localhost", "m2");
    expect_bounce(&mut carol_x, "m2", "alice@localhost");
    chat(&mut carol_y, "alice@localhost", "m3");
    alice.expect("<body>m3</body>");

    // Alice's own list keeps her from reaching Dave (the XEP-0191 refusal to the sender).
    chat(&mut alice, "dave@localhost", "m4");
    let refused = alice.expect("id='m4'");
    assert_error(&refused, "not-acceptable");

    // Moving Bob out of the group lets his messages through at once.
    assert_result(&roster_set(&mut alice, "<item jid='bob@localhost'/>"));
    expect_push(&mut alice);
    chat(&mut bob, "alice@localhost", "m5");
    alice.expect("<body>m5</body>");
    sync_without(&mut bob, "id='m5'");
}

#[test]
fn presence_in_and_presence_out_items_filter_notifications() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    subscribe(&mut alice, &mut bob);
    subscribe(&mut bob, &mut alice);
    assert_result(&set_list(
        &mut alice,
        "l1",
        "hide",
        "<item type='jid' value='bob@localhost' action='deny' order='1'><presence-out/></item>",
    ));
    assert_result(&set_list(
        &mut alice,
        "l2",
        "deaf",
        "<item type='subscription' value='both' action='deny' order='1'><presence-in/></item>",
    ));

    assert_result(&privacy(&mut alice, "set", "a1", "<active name='hide'/>"));
    // §2.11: Bob sees Alice go unavailable as soon as the list applies.
    assert_eq!(
        bob.expect("<presence"),
        "<presence type='unavailable' from='alice@localhost/a' to='bob@localhost/b'/>"
    );
    alice.send("<presence><show>away</show></presence>");
    alice.sync();
    sync_without(&mut bob, "<show>away</show>");
    bob.send("<presence><show>dnd</show></presence>");
    alice.expect("<show>dnd</show>");

    assert_result(&privacy(&mut alice, "set", "a2", "<active name='deaf'/>"));
    // §2.10: and Alice sees Bob go unavailable once she no longer hears him.
    assert_eq!(
        alice.expect("<presence"),
        "<presence type='unavailable' from='bob@localhost/b' to='alice@localhost/a'/>"
    );
    bob.send("<presence><show>xa</show></presence>");
    bob.sync();
    sync_without(&mut alice, "<show>xa</show>");
    alice.send("<presence><show>chat</show></presence>");
    bob.expect("<show>chat</show>");
    // With "deaf" the default, a new session without an active list gets the presence of
    // Alice's other resource at login, but the probe answered for Bob is held back.
    assert_result(&privacy(&mut alice, "set", "d1", "<default name='deaf'/>"));
    let mut alice2 = Client::online(&server, "alice", "a2");
    alice2.send("<iq type='get' id='s1'><ping xmlns='urn:xmpp:ping'/></iq>");
    let mut seen = Vec::new();
    loop {
        let stanza = alice2.stanza();
        if stanza.contains("id='s1'") {
            break;
        }
        seen.push(stanza);
    }
    assert!(
        seen.iter().any(|s| s.contains("from='alice@localhost/a'")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|s| s.contains("from='bob@localhost")),
        "{seen:?}"
    );
    // Each resource hears what its own list lets in: a2 takes "hide" (no presence-in item),
    // the first resource keeps "deaf".
    assert_result(&privacy(&mut alice2, "set", "a3", "<active name='hide'/>"));
    bob.send("<presence><show>away</show></presence>");
    alice2.expect("<show>away</show>");
    bob.sync();
    sync_without(&mut alice, "from='bob@localhost/b'");
}

#[test]
fn active_list_overrides_the_default_per_session() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("carol");
    let mut a1 = ready(&server, "alice", "a1");
    let mut a2 = ready(&server, "alice", "a2");
    let mut carol = ready(&server, "carol", "c");
    a1.sync();
    assert_result(&set_list(
        &mut a1,
        "l1",
        "closed",
        "<item action='deny' order='1'><message/></item>",
    ));
    a2.expect("<list name='closed'/>");
    assert_result(&set_list(
        &mut a1,
        "l2",
        "open",
        "<item action='allow' order='1'/>",
    ));
    a2.expect("<list name='open'/>");
    assert_result(&privacy(&mut a1, "set", "d1", "<default name='closed'/>"));
    assert_result(&privacy(&mut a1, "set", "a1", "<active name='open'/>"));

    let names = privacy(&mut a1, "get", "n1", "");
    assert!(
        names.contains(&format!("<query xmlns='{NS}'><active name='open'/><default name='closed'/><list name='closed'/><list name='open'/></query>")),
        "{names}"
    );
    let names = privacy(&mut a2, "get", "n2", "");
    assert!(
        names.contains(&format!("<query xmlns='{NS}'><default name='closed'/><list name='closed'/><list name='open'/></query>")),
        "{names}"
    );

    chat(&mut carol, "alice@localhost/a1", "m1");
    a1.expect("<body>m1</body>");
    chat(&mut carol, "alice@localhost/a2", "m2");
    expect_bounce(&mut carol, "m2", "alice@localhost/a2");
    // To the bare JID: only the resource whose list allows it gets the message.
    chat(&mut carol, "alice@localhost", "b1");
    a1.expect("<body>b1</body>");
    sync_without(&mut a2, "<body>b1</body>");

    // Declining the active list puts the session back under the default.
    assert_result(&privacy(&mut a1, "set", "a2", "<active/>"));
    chat(&mut carol, "alice@localhost/a1", "m3");
    expect_bounce(&mut carol, "m3", "alice@localhost/a1");
    // The default may go once no other resource uses it (a2 takes "open" first).
    assert_result(&privacy(&mut a2, "set", "a3", "<active name='open'/>"));
    assert_result(&privacy(&mut a1, "set", "d2", "<default/>"));
    chat(&mut carol, "alice@localhost/a1", "m4");
    a1.expect("<body>m4</body>");
    sync_without(&mut carol, "id='m4'");
}

#[test]
fn errors_are_the_ones_the_xep_names() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut a1 = ready(&server, "alice", "a1");
    let mut a2 = ready(&server, "alice", "a2");
    a1.sync();

    assert_error(
        &privacy(&mut a1, "get", "e1", "<list name='nope'/>"),
        "item-not-found",
    );
    assert_error(
        &privacy(&mut a1, "set", "e2", "<active name='nope'/>"),
        "item-not-found",
    );
    assert_error(
        &privacy(&mut a1, "set", "e3", "<default name='nope'/>"),
        "item-not-found",
    );
    assert_error(&set_list(&mut a1, "e4", "nope", ""), "item-not-found");
    // §2.1: a group item must name a group of the roster.
    assert_error(
        &set_list(
            &mut a1,
            "e5",
            "groups",
            "<item type='group' value='Nobody' action='deny' order='1'/>",
        ),
        "item-not-found",
    );
    for (id, items) in [
        (
            "b1",
            "<item type='colour' value='red' action='deny' order='1'/>",
        ),
        ("b2", "<item type='jid' value='x@localhost' action='deny'/>"),
        (
            "b3",
            "<item action='deny' order='1'/><item action='allow' order='1'/>",
        ),
        (
            "b4",
            "<item type='subscription' value='some' action='deny' order='1'/>",
        ),
    ] {
        assert_error(&set_list(&mut a1, id, "bad", items), "bad-request");
    }
    assert_result(&set_list(
        &mut a1,
        "s1",
        "l",
        "<item action='allow' order='1'/>",
    ));
    a2.expect("<list name='l'/>");
    assert_result(&set_list(
        &mut a1,
        "s2",
        "m",
        "<item action='allow' order='1'/>",
    ));
    a2.expect("<list name='m'/>");
    assert_error(
        &privacy(&mut a1, "get", "b5", "<list name='l'/><list name='m'/>"),
        "bad-request",
    );
    assert_error(
        &privacy(
            &mut a1,
            "set",
            "b6",
            "<active name='l'/><default name='l'/>",
        ),
        "bad-request",
    );
    assert_error(&privacy(&mut a1, "set", "b7", ""), "bad-request");

    // "l" is the default and a2 has no active list: the default may not change under it.
    assert_result(&privacy(&mut a1, "set", "d1", "<default name='l'/>"));
    assert_error(
        &privacy(&mut a1, "set", "c1", "<default name='m'/>"),
        "conflict",
    );
    assert_error(&privacy(&mut a1, "set", "c2", "<default/>"), "conflict");
    assert_error(&set_list(&mut a1, "c3", "l", ""), "conflict");
    // a2 makes "m" active: the default is free to change, "m" may not be removed.
    assert_result(&privacy(&mut a2, "set", "a1", "<active name='m'/>"));
    assert_result(&privacy(&mut a1, "set", "d2", "<default name='m'/>"));
    assert_error(&set_list(&mut a1, "c4", "m", ""), "conflict");
    // "l" applies to nobody now: it goes, and a2 learns of it.
    assert_result(&set_list(&mut a1, "r1", "l", ""));
    let push = a2.expect("<list name='l'/>");
    expect_list_push(&mut a2, &push, "l");
    let names = privacy(&mut a1, "get", "n1", "");
    assert!(
        names.contains(&format!(
            "<query xmlns='{NS}'><default name='m'/><list name='m'/></query>"
        )),
        "{names}"
    );
    // Another user's lists are not for us to manage.
    a1.send("<iq type='get' id='o1' to='bob@localhost'><query xmlns='jabber:iq:privacy'/></iq>");
    assert_error(&a1.expect("id='o1'"), "service-unavailable");

    // The feature is advertised.
    a1.send("<iq type='get' id='i1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = a1.expect("id='i1'");
    assert!(info.contains(&format!("<feature var='{NS}'/>")), "{info}");
}
