//! Subscriptions (RFC 6121 §3, Appendix A) and presence (RFC 6121 §4, XEP-0012) between
//! local users with several resources each, as each side sees them.

mod common;

use common::roster::*;
use common::*;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const LAST_NS: &str = "jabber:iq:last";

/// Online with the roster requested, and everything sent so far read.
fn ready(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut client = Client::online(server, user, resource);
    roster_get(&mut client);
    client.sync();
    client
}

/// The next presence from `jid`; it must be of `kind` (`None`: available).
fn expect_presence(client: &mut Client, jid: &str, kind: Option<&str>) -> Element {
    let presence = client.expect_presence_from(jid);
    assert_eq!(presence.attr("type"), kind, "{presence}");
    presence
}

/// The full JIDs of the next `n` presences from any resource of `bare`.
fn resources_seen(client: &mut Client, bare: &str, n: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..n)
        .map(|_| {
            let presence = client.expect_where(|s| {
                s.name() == "presence" && s.from().map(|j| j.bare()) == Some(jid_value(bare))
            });
            presence.from().expect("from").as_str().to_string()
        })
        .collect();
    seen.sort();
    seen
}

#[test]
fn subscription_states_both_ways() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut alice2 = ready(&server, "alice", "a2");
    let mut bob = ready(&server, "bob", "b");
    settle(&mut alice, &mut alice2);
    settle(&mut alice, &mut bob);

    // None → None + Pending Out at alice; None + Pending In at bob.
    alice.send("<presence type='subscribe' to='bob@localhost/b' id='s1'><status>hi bob</status></presence>");
    let ask = "<item jid='bob@localhost' subscription='none' ask='subscribe'/>";
    assert_eq!(expect_push(&mut alice), ask);
    assert_eq!(expect_push(&mut alice2), ask);
    // §3.1.3: stamped with the sender's bare JID, addressed to the contact's bare JID.
    assert_eq!(
        bob.expect_presence_from("alice@localhost"),
        "<presence type='subscribe' to='bob@localhost' id='s1' from='alice@localhost'>\
         <status>hi bob</status></presence>"
    );
    // Pending In alone is not a roster item.
    bob.expect_silence(QUIET);
    let items = roster(&mut bob).items;
    assert!(items.is_empty(), "{items:?}");

    // Bob approves: From at bob, To at alice, who gets bob's presence.
    bob.send("<presence type='subscribed' to='alice@localhost'/>");
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='from'/>"
    );
    let to = "<item jid='bob@localhost' subscription='to'/>";
    assert_eq!(expect_push(&mut alice), to);
    assert_eq!(
        alice.expect_presence_from("bob@localhost"),
        "<presence type='subscribed' to='alice@localhost' from='bob@localhost'/>"
    );
    let bobs_presence = "<presence to='alice@localhost' from='bob@localhost/b'/>";
    assert_eq!(alice.expect_presence_from("bob@localhost/b"), bobs_presence);
    assert_eq!(expect_push(&mut alice2), to);
    assert_eq!(
        alice2.expect_presence_from("bob@localhost/b"),
        bobs_presence
    );
    settle(&mut alice, &mut bob);

    // The other way round: Both on each side.
    bob.send("<presence type='subscribe' to='alice@localhost'/>");
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='from' ask='subscribe'/>"
    );
    expect_subscription(&mut alice, "subscribe", "bob@localhost");
    expect_subscription(&mut alice2, "subscribe", "bob@localhost");
    alice2.send("<presence type='subscribed' to='bob@localhost'/>");
    let both = "<item jid='bob@localhost' subscription='both'/>";
    assert_eq!(expect_push(&mut alice), both);
    assert_eq!(expect_push(&mut alice2), both);
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='both'/>"
    );
    expect_subscription(&mut bob, "subscribed", "alice@localhost");
    // Bob now sees both of alice's resources.
    assert_eq!(
        resources_seen(&mut bob, "alice@localhost", 2),
        ["alice@localhost/a", "alice@localhost/a2"]
    );
    settle(&mut alice, &mut bob);
    alice2.sync();

    // Presence details reach the subscriber untouched…
    alice
        .send("<presence><show>away</show><status>lunch</status><priority>5</priority></presence>");
    assert_eq!(
        bob.expect_presence_from("alice@localhost/a"),
        "<presence to='bob@localhost' from='alice@localhost/a'>\
         <show>away</show><status>lunch</status><priority>5</priority></presence>"
    );
    // …and alice's other resource.
    let own = alice2.expect_presence_from("alice@localhost/a");
    assert_eq!(own.to(), Some(jid_value("alice@localhost/a2")), "{own}");
    assert_eq!(own.child_text("show", CLIENT_NS), Some("away"), "{own}");
    settle(&mut alice, &mut bob);
    alice2.sync();

    // Alice unsubscribes: Both → From at alice, Both → To at bob, who stops sending.
    alice.send("<presence type='unsubscribe' to='bob@localhost'/>");
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='bob@localhost' subscription='from'/>"
    );
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='to'/>"
    );
    expect_subscription(&mut bob, "unsubscribe", "alice@localhost");
    assert_eq!(
        alice.expect_presence_from("bob@localhost/b"),
        "<presence to='alice@localhost' type='unavailable' from='bob@localhost/b'/>"
    );
    settle(&mut alice, &mut bob);
    bob.send("<presence><show>dnd</show></presence>");
    alice.expect_silence(QUIET);

    // Alice cancels bob's subscription: From → None at alice, To → None at bob.
    alice.send("<presence type='unsubscribed' to='bob@localhost'/>");
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='bob@localhost' subscription='none'/>"
    );
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='none'/>"
    );
    expect_subscription(&mut bob, "unsubscribed", "alice@localhost");
    // §3.2.2: the contact is sent the user's unavailable presence.
    let gone =
        bob.expect_where(|s| s.name() == "presence" && s.attr("type") == Some("unavailable"));
    assert_eq!(gone.to(), Some(jid_value("bob@localhost")), "{gone}");
    assert!(
        ["alice@localhost/a", "alice@localhost/a2"]
            .iter()
            .any(|jid| gone.is_from(jid)),
        "{gone}"
    );
    settle(&mut alice, &mut bob);
    alice.send("<presence><show>chat</show></presence>");
    bob.expect_silence(QUIET);
}

#[test]
fn denial_cancelled_requests_and_unknown_contacts() {
    let server = TestServer::start("");
    for user in ["alice", "carol", "dave"] {
        server.add_user(user);
    }
    let mut alice = ready(&server, "alice", "a");
    let mut carol = ready(&server, "carol", "c");
    let mut dave = ready(&server, "dave", "d");

    // Alice denies carol: Pending Out → None at carol.
    carol.send("<presence type='subscribe' to='alice@localhost'/>");
    expect_push(&mut carol);
    expect_subscription(&mut alice, "subscribe", "carol@localhost");
    alice.send("<presence type='unsubscribed' to='carol@localhost'/>");
    assert_eq!(
        expect_push(&mut carol),
        "<item jid='alice@localhost' subscription='none'/>"
    );
    expect_subscription(&mut carol, "unsubscribed", "alice@localhost");
    alice.expect_silence(QUIET);

    // Dave asks and takes it back before alice answers: alice is told.
    dave.send("<presence type='subscribe' to='alice@localhost'/>");
    expect_push(&mut dave);
    expect_subscription(&mut alice, "subscribe", "dave@localhost");
    dave.send("<presence type='unsubscribe' to='alice@localhost'/>");
    assert_eq!(
        expect_push(&mut dave),
        "<item jid='alice@localhost' subscription='none'/>"
    );
    expect_subscription(&mut alice, "unsubscribe", "dave@localhost");
    // Approving a withdrawn request only pre-approves the next one (§3.4).
    alice.send("<presence type='subscribed' to='dave@localhost'/>");
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='dave@localhost' subscription='none' approved='true'/>"
    );
    dave.expect_silence(QUIET);

    // No such user: the request is silently ignored (RFC 6121 §8.5.1; no answer is
    // checked in tests/rfc6121.rs), only alice's own roster shows what she asked.
    alice.send("<presence type='subscribe' to='nobody@localhost'/>");
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='nobody@localhost' subscription='none' ask='subscribe'/>"
    );
    // Another domain: there is no federation.
    alice.send("<presence type='subscribe' to='x@elsewhere.example' id='r1'/>");
    alice
        .expect_where(|s| s.name() == "presence" && s.attr("id") == Some("r1"))
        .assert_error("cancel", "remote-server-not-found");
}

/// RFC 6121 §3.4: a `subscribed` sent before any request is kept on the roster item and
/// answers the contact's request at once; `unsubscribed` withdraws it.
#[test]
fn pre_approval_answers_the_next_request_at_once() {
    let server = TestServer::start("");
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let features = features_after_auth(&server, "alice");
    assert!(
        features
            .find("sub", "urn:xmpp:features:pre-approval")
            .is_some(),
        "{features}"
    );
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    let mut carol = ready(&server, "carol", "c");

    alice.send("<presence type='subscribed' to='bob@localhost'/>");
    let approved = "<item jid='bob@localhost' subscription='none' approved='true'/>";
    assert_eq!(expect_push(&mut alice), approved);
    assert_eq!(roster(&mut alice).items, [approved]);
    // Not delivered to the contact, and a second one changes nothing.
    alice.send("<presence type='subscribed' to='bob@localhost'/>");
    alice.expect_silence(QUIET);
    bob.expect_silence(QUIET);

    // Bob asks: approved in alice's name, alice is not asked.
    bob.send("<presence type='subscribe' to='alice@localhost'/>");
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='bob@localhost' subscription='from'/>"
    );
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='none' ask='subscribe'/>"
    );
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='to'/>"
    );
    expect_subscription(&mut bob, "subscribed", "alice@localhost");
    expect_presence(&mut bob, "alice@localhost/a", None);
    alice.expect_silence(QUIET);

    // A withdrawn pre-approval: carol's request goes to alice as usual.
    alice.send("<presence type='subscribed' to='carol@localhost'/>");
    expect_push(&mut alice);
    alice.send("<presence type='unsubscribed' to='carol@localhost'/>");
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='carol@localhost' subscription='none'/>"
    );
    carol.expect_silence(QUIET);
    carol.send("<presence type='subscribe' to='alice@localhost'/>");
    expect_subscription(&mut alice, "subscribe", "carol@localhost");
    let items = roster(&mut alice).items;
    assert!(items.iter().all(|item| !item.approved), "{items:?}");
}

#[test]
fn offline_request_is_shown_at_next_login_and_works_before_presence() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    // Subscription stanzas work before initial presence.
    let mut alice = Client::login(&server, "alice", "a");
    roster_get(&mut alice);
    alice.send(
        "<presence type='subscribe' to='bob@localhost'><status>it is alice</status></presence>",
    );
    expect_push(&mut alice);
    alice.send("<presence/>");
    alice.sync();

    // Bob is offline; he sees the request at his initial presence (§3.1.3), every time
    // until he answers.
    let mut bob = Client::login(&server, "bob", "b");
    bob.expect_silence(QUIET);
    bob.send("<presence/>");
    let request = expect_subscription(&mut bob, "subscribe", "alice@localhost");
    assert_eq!(
        request.child_text("status", CLIENT_NS),
        Some("it is alice"),
        "{request}"
    );
    drop(bob);
    let mut bob = Client::login(&server, "bob", "b2");
    roster_get(&mut bob);
    bob.send("<presence/>");
    expect_subscription(&mut bob, "subscribe", "alice@localhost");
    bob.send("<presence type='subscribed' to='alice@localhost'/>");
    expect_push(&mut bob);
    expect_subscription(&mut alice, "subscribed", "bob@localhost");
    expect_presence(&mut alice, "bob@localhost/b2", None);
    drop(bob);
    let mut bob = Client::online(&server, "bob", "b3");
    let received = bob.sync_and_collect();
    assert!(
        !received
            .iter()
            .any(|s| s.name() == "presence" && s.attr("type") == Some("subscribe")),
        "{received:?}"
    );
}

#[test]
fn probes_on_login_and_unavailable_on_logout_or_drop() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    subscribe(&mut alice, &mut bob);
    subscribe(&mut bob, &mut alice);
    alice.send("<presence><show>xa</show></presence>");
    let xa = expect_presence(&mut bob, "alice@localhost/a", None);
    assert_eq!(xa.child_text("show", CLIENT_NS), Some("xa"), "{xa}");

    // A new resource of bob, strictly in the order of RFC 6121 §4.2.2/§4.3.2: its own
    // presence comes back first, then bob's other resource's presence, then its probe
    // answered with alice's current presence; and alice sees it come online.
    let mut phone = Client::login(&server, "bob", "phone");
    phone.send("<presence><status>on the phone</status></presence>");
    let echo = phone.receive();
    assert!(
        echo.name() == "presence" && echo.is_from("bob@localhost/phone"),
        "{echo}"
    );
    let other = phone.receive();
    assert!(
        other.name() == "presence" && other.is_from("bob@localhost/b"),
        "{other}"
    );
    assert_eq!(
        phone.receive(),
        "<presence to='bob@localhost/phone' from='alice@localhost/a'><show>xa</show></presence>"
    );
    assert_eq!(
        alice.expect_presence_from("bob@localhost/phone"),
        "<presence to='alice@localhost' from='bob@localhost/phone'>\
         <status>on the phone</status></presence>"
    );
    expect_presence(&mut bob, "bob@localhost/phone", None);

    // A clean logout.
    phone.send("</stream:stream>");
    assert_eq!(
        alice.expect_presence_from("bob@localhost/phone"),
        "<presence to='alice@localhost' type='unavailable' from='bob@localhost/phone'/>"
    );
    expect_presence(&mut bob, "bob@localhost/phone", Some("unavailable"));

    // An explicit unavailable with a status.
    bob.send("<presence type='unavailable'><status>bye</status></presence>");
    assert_eq!(
        alice.expect_presence_from("bob@localhost/b"),
        "<presence to='alice@localhost' type='unavailable' from='bob@localhost/b'>\
         <status>bye</status></presence>"
    );

    // An abrupt disconnect: the TCP connection just goes away.
    let laptop = Client::online(&server, "bob", "laptop");
    expect_presence(&mut alice, "bob@localhost/laptop", None);
    drop(laptop);
    assert_eq!(
        alice.expect_presence_from("bob@localhost/laptop"),
        "<presence to='alice@localhost' type='unavailable' from='bob@localhost/laptop'/>"
    );

    // Bob is offline: alice's next login gets his last unavailable presence with a delay
    // (XEP-0203) stamped by the server.
    drop(alice);
    let mut alice = Client::online(&server, "alice", "again");
    let last = expect_presence(&mut alice, "bob@localhost/laptop", Some("unavailable"));
    assert_eq!(
        last.to(),
        Some(jid_value("alice@localhost/again")),
        "{last}"
    );
    let [delay] = last.children() else {
        panic!("only a delay: {last}")
    };
    assert!(delay.is("delay", DELAY_NS), "{last}");
    assert_eq!(delay.attr("from"), Some("localhost"), "{last}");
    assert_xep0082_datetime(delay.attr("stamp").unwrap_or_default());
    bob.sync();
}

#[test]
fn own_resources_see_each_other() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut one = Client::online(&server, "alice", "one");
    one.sync();
    let mut two = Client::login(&server, "alice", "two");
    two.send("<presence><priority>-1</priority></presence>");
    assert_eq!(
        two.expect_presence_from("alice@localhost/one"),
        "<presence to='alice@localhost/two' from='alice@localhost/one'/>"
    );
    assert_eq!(
        one.expect_presence_from("alice@localhost/two"),
        "<presence to='alice@localhost/one' from='alice@localhost/two'>\
         <priority>-1</priority></presence>"
    );
}

#[test]
fn directed_presence_gets_unavailable_at_logout() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("carol");
    server.add_user("dave");
    let mut alice = ready(&server, "alice", "a");
    let mut carol = ready(&server, "carol", "c");
    let mut dave = ready(&server, "dave", "d");
    alice.send("<presence to='carol@localhost'><status>psst</status></presence>");
    assert_eq!(
        carol.expect_presence_from("alice@localhost/a"),
        "<presence to='carol@localhost' from='alice@localhost/a'><status>psst</status></presence>"
    );
    // Directed unavailable ends the tracking (§4.6): dave gets presence, then unavailable,
    // and nothing more at logout.
    alice.send("<presence to='dave@localhost/d'/>");
    expect_presence(&mut dave, "alice@localhost/a", None);
    alice.send("<presence to='dave@localhost/d' type='unavailable'/>");
    expect_presence(&mut dave, "alice@localhost/a", Some("unavailable"));
    alice.sync();
    drop(alice);
    assert_eq!(
        carol.expect_presence_from("alice@localhost/a"),
        "<presence to='carol@localhost' type='unavailable' from='alice@localhost/a'/>"
    );
    dave.expect_silence(QUIET);
}

/// The `seconds` of a XEP-0012 answer.
fn seconds_of(iq: &Element) -> u64 {
    let query = iq.child("query", LAST_NS);
    let seconds = query.attr("seconds").unwrap_or_else(|| panic!("{iq}"));
    seconds.parse().unwrap_or_else(|_| panic!("{iq}"))
}

#[test]
fn last_activity() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    server.add_user("carol");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    let mut carol = ready(&server, "carol", "c");
    subscribe(&mut alice, &mut bob);

    alice.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = alice.expect_iq_result("d1");
    let query = info.child("query", "http://jabber.org/protocol/disco#info");
    assert!(
        query
            .children()
            .iter()
            .any(|f| f.name() == "feature" && f.attr("var") == Some(LAST_NS)),
        "{info}"
    );
    // XEP-0012 §6: the server's uptime.
    alice.send("<iq type='get' id='u1' to='localhost'><query xmlns='jabber:iq:last'/></iq>");
    let uptime = alice.expect_iq_result("u1");
    assert!(uptime.is_from("localhost"), "{uptime}");
    assert_eq!(
        uptime.to(),
        Some(jid_value("alice@localhost/a")),
        "{uptime}"
    );
    seconds_of(&uptime);

    // §4: an available contact has been idle for 0 seconds.
    alice.send("<iq type='get' id='l1' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>");
    assert_eq!(seconds_of(&alice.expect_iq_result("l1")), 0);
    bob.send("<presence type='unavailable'><status>off to bed</status></presence>");
    expect_presence(&mut alice, "bob@localhost/b", Some("unavailable"));
    std::thread::sleep(Duration::from_millis(1100));
    alice.send("<iq type='get' id='l2' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>");
    let idle = alice.expect_iq_result("l2");
    assert!((1..60).contains(&seconds_of(&idle)), "{idle}");
    // The last unavailable presence's status is the query's text.
    assert_eq!(idle.child("query", LAST_NS).text(), "off to bed", "{idle}");
    // Carol is not subscribed to bob.
    carol.send("<iq type='get' id='l3' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>");
    carol.expect_iq_error("l3", "auth", "forbidden");
}

#[test]
fn blocking_stops_presence_broadcast_and_probe_answers() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    subscribe(&mut alice, &mut bob);
    subscribe(&mut bob, &mut alice);
    alice.send("<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>");
    alice.expect_iq_result("blk");
    // Blocking sends bob alice's unavailable (XEP-0191 §3.3).
    expect_presence(&mut bob, "alice@localhost/a", Some("unavailable"));
    settle(&mut alice, &mut bob);
    bob.send("<presence><show>dnd</show></presence>");
    bob.sync();
    alice.expect_silence(QUIET);
    // A fresh resource of alice probes: no answer on bob's behalf.
    let mut alice2 = Client::login(&server, "alice", "a2");
    alice2.send("<presence/>");
    let received = alice2.sync_and_collect();
    let bob_bare = jid_value("bob@localhost");
    assert!(
        !received
            .iter()
            .any(|s| s.from().is_some_and(|from| from.bare() == bob_bare)),
        "{received:?}"
    );
    bob.expect_silence(QUIET);
}
