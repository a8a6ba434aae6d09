//! Subscriptions (RFC 6121 §3) and presence (RFC 6121 §4) between users of two federating
//! hearth servers, `a.test` and `b.test`: each server runs its own user's half of every
//! rule and the stanzas cross over s2s. Judged as each user's client sees it.

mod common;

use common::federation::pair;
use common::roster::*;
use common::*;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(500);
const DELAY_NS: &str = "urn:xmpp:delay";

/// Online with the roster requested, and everything sent so far read.
fn ready(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut client = Client::online(server, user, resource);
    roster_get(&mut client);
    client.sync();
    client
}

/// Two servers, each with one user: alice@a.test and bob@b.test.
fn servers() -> (TestServer, TestServer) {
    let (a, b) = pair("", "");
    a.add_user("alice");
    b.add_user("bob");
    (a, b)
}

/// The users' bare JIDs.
const ALICE: &str = "alice@a.test";
const BOB: &str = "bob@b.test";

/// The next presence from `jid`, which must be of `kind` (`None`: available).
fn expect_presence(client: &mut Client, jid: &str, kind: Option<&str>) -> Element {
    let presence = client.expect_presence_from(jid);
    assert_eq!(presence.attr("type"), kind, "{presence}");
    presence
}

/// The item for `jid` on the client's roster, read with a roster get (RFC 6121 §2.1.3).
fn item_on_roster(client: &mut Client, jid: &str) -> RosterItem {
    let mut roster = roster(client);
    let Some(at) = roster.items.iter().position(|i| i.jid == jid_value(jid)) else {
        panic!("{jid} is not on {}'s roster: {roster:?}", client.jid)
    };
    roster.items.swap_remove(at)
}

/// What an approval from elsewhere brings the requester (RFC 6121 §3.1.6, then §3.1.5's
/// presence): the roster push of `item`, the `subscribed` from the contact's bare JID and the
/// presence of `contact_full`. The presence is delivered as it arrives while the push and
/// the `subscribed` wait for a store write, so any order is right.
fn expect_approval(client: &mut Client, contact: &str, contact_full: &str, item: &str) {
    let (mut pushed, mut told, mut present) = (false, false, false);
    while !(pushed && told && present) {
        let stanza = client.expect_where(|_| true);
        if stanza.name() == "iq" && stanza.find("query", ROSTER_NS).is_some() {
            let id = stanza.attr("id").expect("push id");
            client.send(&format!("<iq type='result' id='{id}'/>"));
            let query = stanza.child("query", ROSTER_NS);
            assert_eq!(RosterItem::of(&query.children()[0]), item, "{stanza}");
            pushed = true;
        } else if stanza.name() == "presence" && stanza.attr("type") == Some("subscribed") {
            assert!(stanza.is_from(contact), "{stanza}");
            assert_eq!(stanza.to(), Some(jid_value(&bare(&client.jid))), "{stanza}");
            told = true;
        } else if stanza.name() == "presence" && stanza.is_from(contact_full) {
            assert_eq!(stanza.attr("type"), None, "{stanza}");
            present = true;
        }
    }
}

/// alice subscribes to bob and bob approves, then the other way round: `both` at each end.
/// Every push, request and presence this causes is checked.
fn subscribe_both_ways(alice: &mut Client, bob: &mut Client) {
    // §3.1.2: alice's server records the request (None + Pending Out) and routes it.
    alice.send(&format!("<presence type='subscribe' to='{BOB}' id='s1'/>"));
    assert_eq!(
        expect_push(alice),
        format!("<item jid='{BOB}' subscription='none' ask='subscribe'/>").as_str()
    );
    // §3.1.3: bob's server delivers it from alice's bare JID to bob's.
    let request = expect_subscription(bob, "subscribe", ALICE);
    assert_eq!(request.attr("id"), Some("s1"), "{request}");

    // §3.1.5: bob approves; his roster gets `from`, alice's `to` (§3.1.6), and alice gets
    // the approval and bob's presence.
    bob.send(&format!("<presence type='subscribed' to='{ALICE}'/>"));
    assert_eq!(
        expect_push(bob),
        format!("<item jid='{ALICE}' subscription='from'/>").as_str()
    );
    let item = format!("<item jid='{BOB}' subscription='to'/>");
    expect_approval(alice, BOB, &bob.jid, &item);

    // The other way: bob asks, alice approves.
    bob.send(&format!("<presence type='subscribe' to='{ALICE}'/>"));
    assert_eq!(
        expect_push(bob),
        format!("<item jid='{ALICE}' subscription='from' ask='subscribe'/>").as_str()
    );
    expect_subscription(alice, "subscribe", BOB);
    alice.send(&format!("<presence type='subscribed' to='{BOB}'/>"));
    assert_eq!(
        expect_push(alice),
        format!("<item jid='{BOB}' subscription='both'/>").as_str()
    );
    let item = format!("<item jid='{ALICE}' subscription='both'/>");
    expect_approval(bob, ALICE, &alice.jid, &item);
}

#[test]
fn subscription_across_servers_ends_in_both_on_both_rosters_rfc6121_3_1() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    let mut bob = ready(&b, "bob", "b");
    subscribe_both_ways(&mut alice, &mut bob);
    // Each server keeps its own user's half, read back from the store.
    let at_alice = item_on_roster(&mut alice, BOB);
    assert_eq!(
        (at_alice.subscription.as_str(), at_alice.ask),
        ("both", false),
        "{at_alice:?}"
    );
    let at_bob = item_on_roster(&mut bob, ALICE);
    assert_eq!(
        (at_bob.subscription.as_str(), at_bob.ask),
        ("both", false),
        "{at_bob:?}"
    );
}

#[test]
fn presence_crosses_both_ways_and_unavailable_reaches_the_other_server_rfc6121_4_4_4_5() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    let mut bob = ready(&b, "bob", "b");
    subscribe_both_ways(&mut alice, &mut bob);

    // §4.4.2: an update goes to each contact's bare JID, and on to its available resources.
    alice.send("<presence><show>away</show><status>lunch</status></presence>");
    let seen = expect_presence(&mut bob, &alice.jid, None);
    assert_eq!(seen.to(), Some(jid_value(BOB)), "{seen}");
    assert_eq!(seen.child_text("show", CLIENT_NS), Some("away"), "{seen}");
    assert_eq!(
        seen.child_text("status", CLIENT_NS),
        Some("lunch"),
        "{seen}"
    );
    bob.send("<presence><show>dnd</show></presence>");
    let seen = expect_presence(&mut alice, &bob.jid, None);
    assert_eq!(seen.child_text("show", CLIENT_NS), Some("dnd"), "{seen}");

    // §4.5.2: an explicit unavailable reaches the contact elsewhere.
    bob.send("<presence type='unavailable'><status>bye</status></presence>");
    let gone = expect_presence(&mut alice, &bob.jid, Some("unavailable"));
    assert_eq!(gone.child_text("status", CLIENT_NS), Some("bye"), "{gone}");

    // §4.5.2: a session that ends without one is announced unavailable all the same.
    let bob_jid = bob.jid.clone();
    bob.send("<presence/>");
    expect_presence(&mut alice, &bob_jid, None);
    bob.send("</stream:stream>");
    drop(bob);
    expect_presence(&mut alice, &bob_jid, Some("unavailable"));
}

#[test]
fn a_login_probe_is_answered_by_the_contacts_server_rfc6121_4_3() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    let mut bob = ready(&b, "bob", "b");
    subscribe_both_ways(&mut alice, &mut bob);
    bob.send("<presence><status>here</status></presence>");
    expect_presence(&mut alice, &bob.jid, None);
    alice.send("</stream:stream>");
    drop(alice);
    expect_presence(&mut bob, &format!("{ALICE}/a"), Some("unavailable"));

    // §4.2.2, §4.3.1: at alice's initial presence her server probes bob's, which answers
    // with bob's current presence (§4.3.2); bob hears alice come online.
    let mut alice = Client::login(&a, "alice", "again");
    alice.send("<presence/>");
    let answer = expect_presence(&mut alice, &bob.jid, None);
    assert_eq!(
        answer.child_text("status", CLIENT_NS),
        Some("here"),
        "{answer}"
    );
    expect_presence(&mut bob, &alice.jid, None);

    // Offline, bob is answered for with his last unavailable presence and when he sent it.
    bob.send("<presence type='unavailable'><status>away for now</status></presence>");
    expect_presence(&mut alice, &bob.jid, Some("unavailable"));
    let bob_jid = bob.jid.clone();
    bob.send("</stream:stream>");
    drop(bob);
    let mut alice2 = Client::login(&a, "alice", "third");
    alice2.send("<presence/>");
    let last = expect_presence(&mut alice2, &bob_jid, Some("unavailable"));
    assert_eq!(
        last.child_text("status", CLIENT_NS),
        Some("away for now"),
        "{last}"
    );
    let delay = last.child("delay", DELAY_NS);
    assert_xep0082_datetime(delay.attr("stamp").expect("stamp"));
}

#[test]
fn a_request_from_elsewhere_waits_for_an_offline_user_rfc6121_3_1_3() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    alice.send(&format!("<presence type='subscribe' to='{}'/>", BOB));
    expect_push(&mut alice);
    // Nothing crosses back while bob is away: no approval, no presence.
    alice.expect_silence(QUIET);

    // §3.1.3: kept by bob's server, shown at his next login.
    let mut bob = Client::login(&b, "bob", "b");
    bob.send("<presence/>");
    let request =
        bob.expect_where(|s| s.name() == "presence" && s.attr("type") == Some("subscribe"));
    assert_eq!(request.from(), Some(jid_value(ALICE)), "{request}");
    assert_eq!(request.to(), Some(jid_value(BOB)), "{request}");
    // Until bob answers, nothing is on his roster (Pending In is no item).
    assert!(roster(&mut bob).items.is_empty());
    bob.send(&format!("<presence type='unsubscribed' to='{}'/>", ALICE));
    // §3.2.3: the denial clears alice's pending request.
    assert_eq!(
        expect_push(&mut alice),
        format!("<item jid='{}' subscription='none'/>", BOB).as_str()
    );
    expect_subscription(&mut alice, "unsubscribed", BOB);
}

#[test]
fn directed_presence_to_another_server_gets_unavailable_at_logout_rfc6121_4_6() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    let mut bob = ready(&b, "bob", "b");
    // No subscription: directed presence only (§4.6.2), to one resource of bob's.
    alice.send(&format!(
        "<presence to='{}'><show>chat</show></presence>",
        bob.jid
    ));
    let seen = expect_presence(&mut bob, &alice.jid, None);
    assert_eq!(seen.to(), Some(jid_value(&bob.jid)), "{seen}");
    assert_eq!(seen.child_text("show", CLIENT_NS), Some("chat"), "{seen}");
    // §4.6.3 / §4.5.2: told when alice goes.
    let alice_jid = alice.jid.clone();
    alice.send("</stream:stream>");
    drop(alice);
    expect_presence(&mut bob, &alice_jid, Some("unavailable"));
}

#[test]
fn a_probe_from_a_non_subscriber_elsewhere_reveals_nothing_rfc6121_4_3_2() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    let mut bob = ready(&b, "bob", "b");
    // alice only asked (Pending Out): bob's server must not answer her login probes, and
    // bob's presence updates do not reach her.
    alice.send(&format!("<presence type='subscribe' to='{}'/>", BOB));
    expect_push(&mut alice);
    expect_subscription(&mut bob, "subscribe", ALICE);
    bob.send("<presence><show>away</show></presence>");
    alice.expect_silence(QUIET);
    alice.send("</stream:stream>");
    drop(alice);
    let mut alice = Client::online(&a, "alice", "again");
    alice.expect_silence(QUIET);
}

/// bob's roster item for alice, once all alice's server sends when she cancels both ways has
/// reached him: the `unsubscribe` (§3.3.3: bob's `from` goes), the `unsubscribed` (§3.2.3:
/// bob's `to` goes), each from alice's bare JID, and her unavailable presence (§3.2.2), in
/// whatever order.
fn bob_sees_alice_cancel_both_ways(bob: &mut Client, alice_full: &str) -> RosterItem {
    let mut awaited = vec![
        Some("unsubscribe"),
        Some("unsubscribed"),
        Some("unavailable"),
    ];
    while !awaited.is_empty() {
        let presence = bob.expect_where(|s| s.name() == "presence");
        let kind = presence.attr("type");
        let from = if kind == Some("unavailable") {
            alice_full
        } else {
            ALICE
        };
        assert!(presence.is_from(from), "{presence}");
        let Some(at) = awaited.iter().position(|k| *k == kind) else {
            panic!("unexpected: {presence}")
        };
        awaited.swap_remove(at);
    }
    item_on_roster(bob, ALICE)
}

#[test]
fn removing_a_contact_elsewhere_cancels_both_subscriptions_rfc6121_2_5_2() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    let mut bob = ready(&b, "bob", "b");
    subscribe_both_ways(&mut alice, &mut bob);
    let reply = roster_set(
        &mut alice,
        &format!("<item jid='{BOB}' subscription='remove'/>"),
    );
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    assert_eq!(
        expect_push(&mut alice),
        format!("<item jid='{BOB}' subscription='remove'/>").as_str()
    );
    // §2.5.2: alice's server sends both cancellations, and her unavailable presence.
    let left = bob_sees_alice_cancel_both_ways(&mut bob, &alice.jid);
    assert_eq!(
        (left.subscription.as_str(), left.ask),
        ("none", false),
        "{left:?}"
    );
    // bob's server, told alice no longer hears him, told her he is gone (§3.3.3).
    expect_presence(&mut alice, &bob.jid, Some("unavailable"));
}

#[test]
fn a_deleted_account_cancels_its_subscriptions_elsewhere_rfc6121_3_2_3_3() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    let mut bob = ready(&b, "bob", "b");
    subscribe_both_ways(&mut alice, &mut bob);
    let out = a.hearth(&["deluser", ALICE], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Her resource goes (§4.5.2), and it is as if she had cancelled both ways.
    let left = bob_sees_alice_cancel_both_ways(&mut bob, &alice.jid);
    assert_eq!(
        (left.subscription.as_str(), left.ask),
        ("none", false),
        "{left:?}"
    );
}

#[test]
fn a_room_on_the_other_server_is_joined_and_left_by_directed_presence_rfc6121_4_6_xep0045() {
    let (a, b) = servers();
    let room = "hall@rooms.b.test";
    let mut bob = ready(&b, "bob", "b");
    bob.send(&format!(
        "<presence to='{room}/bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    bob.expect_where(|s| s.name() == "message" && s.find("subject", CLIENT_NS).is_some());
    // An instant room (XEP-0045 §10.1.2), unlocked for others to join.
    bob.send(&format!(
        "<iq type='set' id='cfg' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ));
    bob.expect_iq_result("cfg");

    // alice's join is directed presence (RFC 6121 §4.6.1) to a full JID elsewhere.
    let mut alice = ready(&a, "alice", "a");
    alice.send(&format!(
        "<presence to='{room}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    let own = alice.expect_presence_from(&format!("{room}/al"));
    assert_eq!(own.attr("type"), None, "{own}");
    let joined = bob.expect_presence_from(&format!("{room}/al"));
    assert_eq!(joined.attr("type"), None, "{joined}");

    // §4.6.3: her session ends without leaving; the room, a directed-presence recipient
    // elsewhere, gets her unavailable and tells the occupants.
    alice.send("</stream:stream>");
    drop(alice);
    let left = bob.expect_presence_from(&format!("{room}/al"));
    assert_eq!(left.attr("type"), Some("unavailable"), "{left}");
}

/// XEP-0163 §4.3 across servers: a contact elsewhere with a presence subscription gets the
/// owner's PEP notifications (OMEMO device lists travel this way), through its server.
#[test]
fn pep_notifications_reach_a_contact_on_the_other_server_xep0163_4_3() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    let mut bob = ready(&b, "bob", "b");
    subscribe_both_ways(&mut alice, &mut bob);
    alice.sync();
    bob.sync();
    alice.send(
        "<iq type='set' id='pub'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='http://jabber.org/protocol/tune'><item id='current'>\
         <tune xmlns='http://jabber.org/protocol/tune'><title>Federated</title></tune>\
         </item></publish></pubsub></iq>",
    );
    alice.expect_iq_result("pub");
    let event = bob.expect_where(|e| {
        e.name() == "message"
            && e.find("event", "http://jabber.org/protocol/pubsub#event")
                .is_some()
    });
    assert!(event.is_from(ALICE), "{event}");
    let items = event
        .child("event", "http://jabber.org/protocol/pubsub#event")
        .child("items", "http://jabber.org/protocol/pubsub#event");
    assert_eq!(
        items.attr("node"),
        Some("http://jabber.org/protocol/tune"),
        "{event}"
    );
    let title = items
        .child("item", "http://jabber.org/protocol/pubsub#event")
        .child("tune", "http://jabber.org/protocol/tune")
        .child_text("title", "http://jabber.org/protocol/tune");
    assert_eq!(title, Some("Federated"));
}

/// XEP-0191 §3.3 across servers: blocking a contact elsewhere sends it `unavailable` from
/// the user's available resources.
#[test]
fn blocking_a_contact_elsewhere_hides_the_user_xep0191_3_3() {
    let (a, b) = servers();
    let mut alice = ready(&a, "alice", "a");
    let mut bob = ready(&b, "bob", "b");
    subscribe_both_ways(&mut alice, &mut bob);
    alice.sync();
    bob.sync();
    alice.send(&format!(
        "<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='{BOB}'/></block></iq>"
    ));
    alice.expect_iq_result("blk");
    expect_presence(&mut bob, &alice.jid, Some("unavailable"));
}
