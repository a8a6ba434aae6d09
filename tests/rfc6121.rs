//! RFC 6121 (XMPP IM) rules that bind a server and had no test elsewhere, one test per
//! rule, named after its section. `docs/CONFORMANCE.md` maps every rule to its test.

mod common;

use common::roster::*;
use common::*;
use std::time::Duration;

const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const QUIET: Duration = Duration::from_millis(300);

/// Online with the roster requested, and everything sent so far read.
fn ready(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut client = Client::online(server, user, resource);
    roster_get(&mut client);
    client.sync();
    client
}

/// The defined condition of an error stanza, and its type attribute.
fn error_of(stanza: &str) -> (String, String) {
    with_doc(stanza, |s| {
        assert_eq!(s.attribute("type"), Some("error"), "{stanza}");
        let error = s
            .children()
            .find(|n| n.has_tag_name("error"))
            .unwrap_or_else(|| panic!("no <error/>: {stanza}"));
        let condition = error
            .children()
            .find(|n| n.is_element() && n.tag_name().namespace() == Some(NS_STANZAS))
            .unwrap_or_else(|| panic!("no condition: {stanza}"));
        (
            condition.tag_name().name().to_string(),
            error.attribute("type").unwrap_or_default().to_string(),
        )
    })
}

/// A stanza's element name and its `type`, `from` and `to` attributes.
fn shape(stanza: &str) -> (String, Option<String>, Option<String>, Option<String>) {
    with_doc(stanza, |s| {
        (
            s.tag_name().name().to_string(),
            s.attribute("type").map(str::to_owned),
            s.attribute("from").map(str::to_owned),
            s.attribute("to").map(str::to_owned),
        )
    })
}

/// The roster item for `jid` in a roster result, as (subscription, groups).
fn item_in(roster: &str, jid: &str) -> Option<(String, Vec<String>)> {
    with_doc(roster, |iq| {
        iq.descendants()
            .find(|n| {
                n.has_tag_name(("jabber:iq:roster", "item")) && n.attribute("jid") == Some(jid)
            })
            .map(|item| {
                (
                    item.attribute("subscription").unwrap_or("none").to_string(),
                    item.children()
                        .filter(|g| g.has_tag_name("group"))
                        .map(|g| g.text().unwrap_or_default().to_string())
                        .collect(),
                )
            })
    })
}

#[test]
fn s2_1_5_roster_set_ignores_subscription_other_than_remove() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = ready(&server, "alice", "a");
    let reply = roster_set(
        &mut alice,
        "<item jid='bob@localhost' subscription='both'><group>Friends</group></item>",
    );
    assert_eq!(shape(&reply).1.as_deref(), Some("result"), "{reply}");
    // The item exists, but the client could not make up a subscription.
    let roster = roster_get(&mut alice);
    assert_eq!(
        item_in(&roster, "bob@localhost"),
        Some(("none".to_string(), vec!["Friends".to_string()])),
        "{roster}"
    );
}

#[test]
fn s2_3_3_empty_group_is_not_acceptable() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = ready(&server, "alice", "a");
    let reply = roster_set(&mut alice, "<item jid='bob@localhost'><group/></item>");
    assert_eq!(error_of(&reply).0, "not-acceptable", "{reply}");
}

#[test]
fn s2_5_2_removing_a_contact_cancels_both_subscriptions() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    subscribe(&mut alice, &mut bob);
    subscribe(&mut bob, &mut alice);
    let reply = roster_set(
        &mut alice,
        "<item jid='bob@localhost' subscription='remove'/>",
    );
    assert_eq!(shape(&reply).1.as_deref(), Some("result"), "{reply}");
    // Bob is told both ways (unsubscribe and unsubscribed from alice's bare JID) and sees
    // alice go unavailable; his roster item falls to none.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let got = bob.stanza();
        let (name, ty, from, _) = shape(&got);
        if name != "presence" {
            continue;
        }
        seen.push((ty.unwrap_or_default(), from.unwrap_or_default()));
    }
    assert!(
        seen.contains(&("unsubscribe".into(), "alice@localhost".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("unsubscribed".into(), "alice@localhost".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("unavailable".into(), "alice@localhost/a".into())),
        "{seen:?}"
    );
    settle(&mut alice, &mut bob);
    let roster = roster_get(&mut bob);
    assert_eq!(
        item_in(&roster, "alice@localhost").map(|(s, _)| s),
        Some("none".to_string()),
        "{roster}"
    );
    assert_eq!(item_in(&roster_get(&mut alice), "bob@localhost"), None);
}

/// §3.1.3 at the contact's server (from or both: approved on the contact's behalf, the
/// contact is not asked again) with §3.1.6 at the user's (a `subscribed` that changes
/// nothing is ignored: no roster push, no delivery).
#[test]
fn s3_1_3_request_from_an_approved_subscriber_is_not_shown_to_the_contact() {
    let server = TestServer::start("");
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    let mut carol = ready(&server, "carol", "c");
    subscribe(&mut alice, &mut bob);
    let (alice_seen, bob_seen) = (alice.transcript.len(), bob.transcript.len());
    // Alice asks again (e.g. a client that lost track of its roster).
    alice.send("<presence type='subscribe' to='bob@localhost' id='again'/>");
    subscription_barrier(&mut alice, &mut carol);
    bob.sync();
    assert_eq!(presences_in(&bob.transcript[bob_seen..]), vec![]);
    assert_eq!(presences_in(&alice.transcript[alice_seen..]), vec![]);
    let roster = roster_get(&mut alice);
    assert_eq!(
        item_in(&roster, "bob@localhost").map(|(s, _)| s),
        Some("to".to_string())
    );
    with_doc(&roster, |iq| {
        let item = iq
            .descendants()
            .find(|n| n.has_tag_name(("jabber:iq:roster", "item")))
            .unwrap();
        assert_eq!(item.attribute("ask"), None, "{roster}");
    });
}

#[test]
fn s4_3_2_probe_from_a_non_subscriber_reveals_nothing() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("mallory");
    let mut alice = ready(&server, "alice", "a");
    alice.send("<presence><show>dnd</show><status>secret meeting</status></presence>");
    alice.sync();
    let mut mallory = ready(&server, "mallory", "m");
    let (alice_seen, mallory_seen) = (alice.transcript.len(), mallory.transcript.len());
    mallory.send("<presence type='probe' to='alice@localhost'/>");
    mallory.send("<presence type='probe' to='alice@localhost/a'/>");
    // Mallory's request reaches alice only after both probes were handled.
    subscription_barrier(&mut mallory, &mut alice);
    let leaked: Vec<_> = presences_in(&mallory.transcript[mallory_seen..])
        .into_iter()
        .filter(|(ty, _)| ty.as_deref() != Some("unsubscribed"))
        .collect();
    assert_eq!(leaked, vec![], "{}", mallory.transcript);
    // Alice hears of no probe (the server handles probes), only the request.
    let to_alice = presences_in(&alice.transcript[alice_seen..]);
    assert_eq!(
        to_alice,
        vec![(Some("subscribe".into()), Some("mallory@localhost".into()))]
    );
}

#[test]
fn s4_7_2_3_priority_out_of_range_is_bad_request() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = ready(&server, "alice", "a");
    for bad in ["128", "-129", "high"] {
        alice.send(&format!(
            "<presence id='p{bad}'><priority>{bad}</priority></presence>"
        ));
        let reply = alice.expect(&format!("id='p{bad}'"));
        assert_eq!(shape(&reply).0, "presence");
        assert_eq!(error_of(&reply).0, "bad-request", "{reply}");
    }
}

#[test]
fn s8_5_2_1_1_negative_priority_resources_get_no_bare_jid_messages() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = Client::login(&server, "bob", "hidden");
    bob.send("<presence><priority>-1</priority></presence>");
    bob.sync();
    alice.send("<message to='bob@localhost' type='chat' id='n1'><body>stored</body></message>");
    alice.sync();
    // Only a negative-priority resource: treated as offline, so the message is stored.
    bob.expect_silence(QUIET);
    let mut phone = Client::online(&server, "bob", "phone");
    let got = phone.expect("id='n1'");
    with_doc(&got, |m| {
        assert!(
            m.children()
                .any(|n| n.has_tag_name(("urn:xmpp:delay", "delay"))),
            "stored, so delayed: {got}"
        );
    });
    // With a non-negative resource online, that one gets it and the hidden one still not.
    phone.sync();
    alice.send("<message to='bob@localhost' type='chat' id='n2'><body>live</body></message>");
    let live = phone.expect("id='n2'");
    // The `to` stays the bare JID it was sent to.
    assert_eq!(shape(&live).3.as_deref(), Some("bob@localhost"), "{live}");
    alice.sync();
    bob.sync();
    assert!(!bob.transcript.contains("id='n2'"), "{}", bob.transcript);
}

#[test]
fn s8_5_2_1_1_headline_to_bare_jid_goes_to_every_non_negative_resource() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut high = Client::login(&server, "bob", "high");
    high.send("<presence><priority>10</priority></presence>");
    let mut low = Client::online(&server, "bob", "low");
    let mut hidden = Client::login(&server, "bob", "hidden");
    hidden.send("<presence><priority>-5</priority></presence>");
    for c in [&mut high, &mut low, &mut hidden] {
        c.sync();
    }
    alice.send("<message to='bob@localhost' type='headline' id='h1'><body>news</body></message>");
    high.expect("id='h1'");
    low.expect("id='h1'");
    alice.sync();
    hidden.sync();
    assert!(
        !hidden.transcript.contains("id='h1'"),
        "{}",
        hidden.transcript
    );
}

#[test]
fn s8_5_2_1_2_presence_to_bare_jid_goes_to_every_available_resource() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut one = ready(&server, "bob", "one");
    let mut two = Client::login(&server, "bob", "two");
    two.send("<presence><priority>-1</priority></presence>");
    two.sync();
    one.sync();
    alice.send("<presence to='bob@localhost'><status>hello both</status></presence>");
    for c in [&mut one, &mut two] {
        let got = c.expect("from='alice@localhost/a'");
        assert_eq!(shape(&got).0, "presence");
        assert_eq!(shape(&got).1, None, "available: {got}");
        // The `to` is not rewritten to the resource.
        assert_eq!(shape(&got).3.as_deref(), Some("bob@localhost"), "{got}");
    }
}

#[test]
fn s8_5_2_1_3_iq_to_bare_jid_is_answered_by_the_server_online_or_not() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    // §8.5.2.2.3: bob has no resource at all.
    alice.send("<iq type='get' id='q1' to='bob@localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = alice.expect("id='q1'");
    assert_eq!(
        shape(&reply),
        (
            "iq".into(),
            Some("result".into()),
            Some("bob@localhost".into()),
            Some(alice.jid.clone())
        )
    );
    // §8.5.2.1.3: bob is online; the server still answers and bob sees nothing.
    let mut bob = ready(&server, "bob", "b");
    alice.send("<iq type='get' id='q2' to='bob@localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    let reply = alice.expect("id='q2'");
    assert_eq!(shape(&reply).1.as_deref(), Some("result"), "{reply}");
    alice.send("<iq type='get' id='q3' to='bob@localhost'><query xmlns='urn:example:none'/></iq>");
    let reply = alice.expect("id='q3'");
    assert_eq!(error_of(&reply).0, "service-unavailable", "{reply}");
    bob.expect_silence(QUIET);
}

#[test]
fn s8_5_2_2_1_headline_to_offline_user_is_dropped_chat_is_stored() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    alice.send("<message to='bob@localhost' type='headline' id='h1'><body>news</body></message>");
    alice.send("<message to='bob@localhost' type='chat' id='c1'><body>later</body></message>");
    alice.sync();
    // Neither is bounced to the sender.
    alice.expect_silence(QUIET);
    let mut bob = Client::online(&server, "bob", "b");
    bob.expect("id='c1'");
    bob.sync();
    assert!(!bob.transcript.contains("id='h1'"), "{}", bob.transcript);
}

#[test]
fn s8_5_3_2_1_message_to_unbound_resource_goes_to_the_bare_jid() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "phone");
    alice.send("<message to='bob@localhost/laptop' type='chat' id='m1'><body>hi</body></message>");
    let got = bob.expect("id='m1'");
    with_doc(&got, |m| {
        assert_eq!(m.attribute("from"), Some("alice@localhost/a"));
        let body = m.children().find(|n| n.has_tag_name("body")).unwrap();
        assert_eq!(body.text(), Some("hi"));
    });
}

#[test]
fn s8_5_3_2_2_presence_to_unbound_resource_is_dropped_unless_subscription() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "phone");
    alice.send("<presence to='bob@localhost/laptop'><status>directed</status></presence>");
    alice.sync();
    bob.expect_silence(QUIET);
    // A subscription request is handled as if sent to the bare JID.
    alice.send("<presence type='subscribe' to='bob@localhost/laptop'/>");
    let request = bob.expect("type='subscribe'");
    assert_eq!(
        shape(&request),
        (
            "presence".into(),
            Some("subscribe".into()),
            Some("alice@localhost".into()),
            Some("bob@localhost".into())
        )
    );
}

#[test]
fn s8_5_3_2_3_iq_to_unbound_resource_is_service_unavailable() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let _bob = ready(&server, "bob", "phone");
    alice.send(
        "<iq type='get' id='g1' to='bob@localhost/laptop'><query xmlns='jabber:iq:version'/></iq>",
    );
    let reply = alice.expect("id='g1'");
    assert_eq!(shape(&reply).2.as_deref(), Some("bob@localhost/laptop"));
    assert_eq!(error_of(&reply).0, "service-unavailable", "{reply}");
    // A result to a resource that is gone is dropped, not answered.
    alice.send("<iq type='result' id='g2' to='bob@localhost/laptop'/>");
    alice.sync();
    assert!(
        !alice.transcript.contains("id='g2'"),
        "{}",
        alice.transcript
    );
}

#[test]
fn s4_7_1_unknown_presence_type_is_bad_request() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = ready(&server, "alice", "a");
    alice.send("<presence type='invisible' id='t1'/>");
    let reply = alice.expect("id='t1'");
    assert_eq!(shape(&reply).0, "presence");
    assert_eq!(
        error_of(&reply),
        ("bad-request".into(), "modify".into()),
        "{reply}"
    );
}

/// Subscription stanzas are answered after their store write commits, so a ping is no
/// barrier for them: `client` asks `witness` for a subscription, and once the witness has
/// the request everything `client` sent before has been handled.
fn subscription_barrier(client: &mut Client, witness: &mut Client) {
    let to = bare(&witness.jid);
    client.send(&format!(
        "<presence type='subscribe' to='{to}' id='barrier'/>"
    ));
    witness.expect("id='barrier'");
    client.sync();
}

/// The presence stanzas in a piece of transcript, as (type, from).
fn presences_in(transcript: &str) -> Vec<(Option<String>, Option<String>)> {
    with_doc(&format!("<x>{transcript}</x>"), |x| {
        x.children()
            .filter(|n| n.has_tag_name("presence"))
            .map(|n| {
                (
                    n.attribute("type").map(str::to_owned),
                    n.attribute("from").map(str::to_owned),
                )
            })
            .collect()
    })
}

/// §8.5.1 (no such user): every presence but a probe is silently ignored, a probe is
/// ignored or answered with `unsubscribed`.
#[test]
fn s8_5_1_subscription_presence_to_no_such_user_is_silently_ignored() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("carol");
    let mut alice = ready(&server, "alice", "a");
    let mut carol = ready(&server, "carol", "c");
    let seen = alice.transcript.len();
    for ty in ["subscribe", "subscribed", "unsubscribe", "unsubscribed"] {
        for to in ["nobody@localhost", "nobody@localhost/r"] {
            alice.send(&format!("<presence type='{ty}' to='{to}' id='{ty}'/>"));
        }
    }
    subscription_barrier(&mut alice, &mut carol);
    let answers = presences_in(&alice.transcript[seen..]);
    assert!(answers.is_empty(), "{answers:?}");
}

/// §8.5.3.2.2: `subscribed`, `unsubscribe` and `unsubscribed` to a full JID with no such
/// resource are ignored: not delivered to the user's other resources, no error back.
#[test]
fn s8_5_3_2_2_subscription_answers_to_unbound_resource_are_ignored() {
    let server = TestServer::start("");
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "phone");
    let mut carol = ready(&server, "carol", "c");
    let (alice_seen, bob_seen) = (alice.transcript.len(), bob.transcript.len());
    for ty in ["subscribed", "unsubscribe", "unsubscribed"] {
        alice.send(&format!(
            "<presence type='{ty}' to='bob@localhost/laptop' id='{ty}'/>"
        ));
    }
    subscription_barrier(&mut alice, &mut carol);
    bob.sync();
    assert_eq!(presences_in(&alice.transcript[alice_seen..]), vec![]);
    assert_eq!(presences_in(&bob.transcript[bob_seen..]), vec![]);
}

/// §8.5.2.1.1: "For a message stanza of type "error", the server MUST silently ignore the
/// message" when it is addressed to a bare JID.
#[test]
fn s8_5_2_1_1_error_message_to_bare_jid_is_ignored() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "b");
    let seen = bob.transcript.len();
    alice.send(&format!(
        "<message type='error' to='bob@localhost' id='e1'><error type='cancel'>\
         <item-not-found xmlns='{NS_STANZAS}'/></error></message>"
    ));
    // A chat right after it: once bob has it, the error was handled.
    alice.send("<message type='chat' to='bob@localhost' id='after'><body>x</body></message>");
    bob.expect("id='after'");
    let ids: Vec<String> = with_doc(&format!("<x>{}</x>", &bob.transcript[seen..]), |x| {
        x.children()
            .filter(|n| n.has_tag_name("message"))
            .filter_map(|n| n.attribute("id").map(str::to_owned))
            .collect()
    });
    assert_eq!(ids, ["after"]);
}

/// §8.5.3.2.1: to a full JID with no such resource, only `chat` is handled as if to the bare
/// JID; `normal` (like groupchat and headline) is silently ignored or answered with an error.
/// hearth answers `<service-unavailable/>` (option b), so the sender learns it was not delivered.
#[test]
fn s8_5_3_2_1_normal_message_to_unbound_resource_is_not_delivered() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice", "a");
    let mut bob = ready(&server, "bob", "phone");
    let seen = bob.transcript.len();
    alice.send("<message to='bob@localhost/laptop' id='n1'><body>normal</body></message>");
    alice.send("<message type='chat' to='bob@localhost' id='after'><body>x</body></message>");
    bob.expect("id='after'");
    let ids: Vec<String> = with_doc(&format!("<x>{}</x>", &bob.transcript[seen..]), |x| {
        x.children()
            .filter(|n| n.has_tag_name("message"))
            .filter_map(|n| n.attribute("id").map(str::to_owned))
            .collect()
    });
    assert_eq!(ids, ["after"]);
    let bounce = alice.expect("id='n1'");
    assert_eq!(error_of(&bounce).0, "service-unavailable", "{bounce}");
}
