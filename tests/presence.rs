//! Subscriptions (RFC 6121 §3, Appendix A) and presence (RFC 6121 §4, XEP-0012) between
//! local users with several resources each, as each side sees them.

mod common;

use common::roster::*;
use common::*;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

/// Online with the roster requested, and everything sent so far read.
fn ready(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut client = Client::online(server, user, resource);
    roster_get(&mut client);
    client.sync();
    client
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
    let request = bob.expect("type='subscribe'");
    assert_eq!(
        request,
        "<presence type='subscribe' to='bob@localhost' id='s1' from='alice@localhost'><status>hi bob</status></presence>"
    );
    // Pending In alone is not a roster item.
    bob.expect_silence(QUIET);
    assert!(!roster_get(&mut bob).contains("<item"));

    // Bob approves: From at bob, To at alice, who gets bob's presence.
    bob.send("<presence type='subscribed' to='alice@localhost'/>");
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='from'/>"
    );
    let to = "<item jid='bob@localhost' subscription='to'/>";
    assert_eq!(expect_push(&mut alice), to);
    assert_eq!(
        alice.expect("type='subscribed'"),
        "<presence type='subscribed' to='alice@localhost' from='bob@localhost'/>"
    );
    assert_eq!(
        alice.expect("from='bob@localhost/b'"),
        "<presence to='alice@localhost' from='bob@localhost/b'/>"
    );
    assert_eq!(expect_push(&mut alice2), to);
    alice2.expect("from='bob@localhost/b'");
    settle(&mut alice, &mut bob);

    // The other way round: Both on each side.
    bob.send("<presence type='subscribe' to='alice@localhost'/>");
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='from' ask='subscribe'/>"
    );
    alice.expect("type='subscribe' to='alice@localhost' from='bob@localhost'");
    alice2.expect("type='subscribe' to='alice@localhost' from='bob@localhost'");
    alice2.send("<presence type='subscribed' to='bob@localhost'/>");
    let both = "<item jid='bob@localhost' subscription='both'/>";
    assert_eq!(expect_push(&mut alice), both);
    assert_eq!(expect_push(&mut alice2), both);
    assert_eq!(
        expect_push(&mut bob),
        "<item jid='alice@localhost' subscription='both'/>"
    );
    bob.expect("type='subscribed' to='bob@localhost' from='alice@localhost'");
    // Bob now sees both of alice's resources.
    bob.expect("from='alice@localhost/a");
    bob.expect("from='alice@localhost/a");
    settle(&mut alice, &mut bob);
    alice2.sync();

    // Presence details reach the subscriber untouched.
    alice
        .send("<presence><show>away</show><status>lunch</status><priority>5</priority></presence>");
    let away = bob.expect("from='alice@localhost/a'");
    assert_eq!(
        away,
        "<presence to='bob@localhost' from='alice@localhost/a'><show>away</show><status>lunch</status><priority>5</priority></presence>"
    );
    // …and alice's other resource.
    let own = alice2.expect("from='alice@localhost/a'");
    assert!(own.contains("to='alice@localhost/a2'") && own.contains("<show>away</show>"));
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
    bob.expect("type='unsubscribe' to='bob@localhost' from='alice@localhost'");
    assert_eq!(
        alice.expect("from='bob@localhost/b'"),
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
    bob.expect("type='unsubscribed' to='bob@localhost' from='alice@localhost'");
    let gone = bob.expect("type='unavailable'");
    assert!(
        gone.starts_with("<presence to='bob@localhost' type='unavailable' from='alice@localhost/a")
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
    alice.expect("from='carol@localhost'");
    alice.send("<presence type='unsubscribed' to='carol@localhost'/>");
    assert_eq!(
        expect_push(&mut carol),
        "<item jid='alice@localhost' subscription='none'/>"
    );
    carol.expect("type='unsubscribed' to='carol@localhost' from='alice@localhost'");
    alice.expect_silence(QUIET);

    // Dave asks and takes it back before alice answers: alice is told.
    dave.send("<presence type='subscribe' to='alice@localhost'/>");
    expect_push(&mut dave);
    alice.expect("type='subscribe' to='alice@localhost' from='dave@localhost'");
    dave.send("<presence type='unsubscribe' to='alice@localhost'/>");
    assert_eq!(
        expect_push(&mut dave),
        "<item jid='alice@localhost' subscription='none'/>"
    );
    alice.expect("type='unsubscribe' to='alice@localhost' from='dave@localhost'");
    // Approving a withdrawn request only pre-approves the next one (§3.4).
    alice.send("<presence type='subscribed' to='dave@localhost'/>");
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='dave@localhost' subscription='none' approved='true'/>"
    );
    dave.expect_silence(QUIET);

    // No such user: the request is answered with unsubscribed.
    alice.send("<presence type='subscribe' to='nobody@localhost'/>");
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='nobody@localhost' subscription='none' ask='subscribe'/>"
    );
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='nobody@localhost' subscription='none'/>"
    );
    alice.expect("type='unsubscribed' to='alice@localhost' from='nobody@localhost'");
    // Another domain: there is no federation.
    alice.send("<presence type='subscribe' to='x@elsewhere.example' id='r1'/>");
    let error = alice.expect("id='r1'");
    assert!(error.contains("<remote-server-not-found "), "{error}");
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
        features.contains("<sub xmlns='urn:xmpp:features:pre-approval'/>"),
        "{features}"
    );
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    let mut carol = ready(&server, "carol", "c");

    alice.send("<presence type='subscribed' to='bob@localhost'/>");
    let approved = "<item jid='bob@localhost' subscription='none' approved='true'/>";
    assert_eq!(expect_push(&mut alice), approved);
    assert!(roster_get(&mut alice).contains(approved));
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
    bob.expect("type='subscribed' to='bob@localhost' from='alice@localhost'");
    bob.expect("from='alice@localhost/a'");
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
    alice.expect("type='subscribe' to='alice@localhost' from='carol@localhost'");
    let roster = roster_get(&mut alice);
    assert!(!roster.contains("approved"), "{roster}");
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

    // Bob is offline; he sees the request at his initial presence, every time until he
    // answers.
    let mut bob = Client::login(&server, "bob", "b");
    bob.expect_silence(QUIET);
    bob.send("<presence/>");
    let request = bob.expect("type='subscribe'");
    assert!(request.contains("from='alice@localhost'") && request.contains("it is alice"));
    drop(bob);
    let mut bob = Client::login(&server, "bob", "b2");
    roster_get(&mut bob);
    bob.send("<presence/>");
    bob.expect("type='subscribe'");
    bob.send("<presence type='subscribed' to='alice@localhost'/>");
    expect_push(&mut bob);
    alice.expect("type='subscribed'");
    alice.expect("from='bob@localhost/b2'");
    drop(bob);
    let mut bob = Client::online(&server, "bob", "b3");
    bob.sync();
    assert!(
        !bob.transcript.contains("type='subscribe'"),
        "{}",
        bob.transcript
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
    bob.expect("<show>xa</show>");

    // A new resource of bob: its own presence comes back first (RFC 6121 §4.2.2), then bob's
    // other resource's presence, then its probe answered with alice's current presence; and
    // alice sees it come online.
    let mut phone = Client::login(&server, "bob", "phone");
    phone.send("<presence><status>on the phone</status></presence>");
    assert!(is_own_presence(&phone.stanza(), "bob@localhost/phone"));
    let other = phone.stanza();
    with_doc(&other, |p| {
        assert_eq!(p.attribute("from"), Some("bob@localhost/b"))
    });
    let probed = phone.stanza();
    assert_eq!(
        probed,
        "<presence to='bob@localhost/phone' from='alice@localhost/a'><show>xa</show></presence>"
    );
    assert_eq!(
        alice.expect("from='bob@localhost/phone'"),
        "<presence to='alice@localhost' from='bob@localhost/phone'><status>on the phone</status></presence>"
    );
    bob.expect("from='bob@localhost/phone'");

    // A clean logout.
    phone.send("</stream:stream>");
    assert_eq!(
        alice.expect("from='bob@localhost/phone'"),
        "<presence to='alice@localhost' type='unavailable' from='bob@localhost/phone'/>"
    );
    bob.expect("type='unavailable' from='bob@localhost/phone'");

    // An explicit unavailable with a status.
    bob.send("<presence type='unavailable'><status>bye</status></presence>");
    assert_eq!(
        alice.expect("from='bob@localhost/b'"),
        "<presence to='alice@localhost' type='unavailable' from='bob@localhost/b'><status>bye</status></presence>"
    );

    // An abrupt disconnect: the TCP connection just goes away.
    let laptop = Client::online(&server, "bob", "laptop");
    alice.expect("from='bob@localhost/laptop'");
    drop(laptop);
    assert_eq!(
        alice.expect("from='bob@localhost/laptop'"),
        "<presence to='alice@localhost' type='unavailable' from='bob@localhost/laptop'/>"
    );

    // Bob is offline: alice's next login gets his last unavailable presence with a delay.
    drop(alice);
    let mut alice = Client::online(&server, "alice", "again");
    let last = alice.expect("from='bob@localhost/laptop'");
    assert!(
        last.starts_with("<presence to='alice@localhost/again' type='unavailable' from='bob@localhost/laptop'><delay xmlns='urn:xmpp:delay' from='localhost' stamp='"),
        "{last}"
    );
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
        two.expect("from='alice@localhost/one'"),
        "<presence to='alice@localhost/two' from='alice@localhost/one'/>"
    );
    assert_eq!(
        one.expect("from='alice@localhost/two'"),
        "<presence to='alice@localhost/one' from='alice@localhost/two'><priority>-1</priority></presence>"
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
        carol.expect("from='alice@localhost/a'"),
        "<presence to='carol@localhost' from='alice@localhost/a'><status>psst</status></presence>"
    );
    // Directed unavailable ends the tracking: dave gets presence, then unavailable, and
    // nothing more at logout.
    alice.send("<presence to='dave@localhost/d'/>");
    dave.expect("from='alice@localhost/a'");
    alice.send("<presence to='dave@localhost/d' type='unavailable'/>");
    dave.expect("type='unavailable'");
    alice.sync();
    drop(alice);
    assert_eq!(
        carol.expect("from='alice@localhost/a'"),
        "<presence to='carol@localhost' type='unavailable' from='alice@localhost/a'/>"
    );
    dave.expect_silence(QUIET);
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
    assert!(alice
        .expect("id='d1'")
        .contains("<feature var='jabber:iq:last'/>"));
    alice.send("<iq type='get' id='u1' to='localhost'><query xmlns='jabber:iq:last'/></iq>");
    let uptime = alice.expect("id='u1'");
    assert!(
        uptime.starts_with("<iq type='result' id='u1' from='localhost' to='alice@localhost/a'><query xmlns='jabber:iq:last' seconds='"),
        "{uptime}"
    );

    alice.send("<iq type='get' id='l1' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>");
    assert!(alice.expect("id='l1'").contains("seconds='0'"));
    bob.send("<presence type='unavailable'><status>off to bed</status></presence>");
    alice.expect("type='unavailable' from='bob@localhost/b'");
    std::thread::sleep(Duration::from_millis(1100));
    alice.send("<iq type='get' id='l2' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>");
    let idle = alice.expect("id='l2'");
    let seconds: u64 = with_doc(&idle, |iq| {
        iq.first_element_child()
            .unwrap()
            .attribute("seconds")
            .unwrap()
            .parse()
            .unwrap()
    });
    assert!((1..60).contains(&seconds), "{idle}");
    assert!(idle.ends_with("'>off to bed</query></iq>"), "{idle}");
    // Carol is not subscribed to bob.
    carol.send("<iq type='get' id='l3' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>");
    assert!(carol.expect("id='l3'").contains("<forbidden "));
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
    alice.expect("id='blk'");
    // Blocking sends bob alice's unavailable.
    bob.expect("type='unavailable'");
    settle(&mut alice, &mut bob);
    bob.send("<presence><show>dnd</show></presence>");
    bob.sync();
    alice.expect_silence(QUIET);
    // A fresh resource of alice probes: no answer on bob's behalf.
    let mut alice2 = Client::login(&server, "alice", "a2");
    alice2.send("<presence/>");
    alice2.sync();
    assert!(
        !alice2.transcript.contains("from='bob@localhost"),
        "{}",
        alice2.transcript
    );
    bob.expect_silence(QUIET);
}
