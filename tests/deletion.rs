//! Deleting an account (`hearth deluser`, XEP-0077 `<remove/>`) as its contacts see it: each
//! of its online resources goes unavailable, the subscriptions end both ways (RFC 6121 §3.2
//! `unsubscribed`, §3.3 `unsubscribe`, from its bare JID) and it leaves their rosters (a push
//! with `subscription='remove'` and a new roster version), online or not.

mod common;

use common::roster::*;
use common::*;
use std::collections::BTreeSet;

const NS_ROSTER: &str = "jabber:iq:roster";

/// The roster's version and its items' JIDs, as a versioned roster get (XEP-0237) answers.
fn roster(client: &mut Client) -> (String, Vec<String>) {
    client.send("<iq type='get' id='rv'><query xmlns='jabber:iq:roster' ver=''/></iq>");
    let result = client.expect("id='rv'");
    with_doc(&result, |iq| {
        assert_eq!(iq.attribute("type"), Some("result"), "{result}");
        let query = iq
            .children()
            .find(|c| c.has_tag_name((NS_ROSTER, "query")))
            .unwrap_or_else(|| panic!("{result}"));
        let jids = query
            .children()
            .filter(|c| c.has_tag_name((NS_ROSTER, "item")))
            .map(|item| item.attribute("jid").unwrap_or_default().to_string())
            .collect();
        (query.attribute("ver").unwrap_or_default().to_string(), jids)
    })
}

/// The people of these tests and what they know before bob's account goes.
struct Friends {
    alice: Client,
    alice_ver: u64,
    /// The roster version carol's client kept when she went offline.
    carol_ver: String,
    bob: Client,
    bob2: Client,
}

/// alice (online), bob on two resources and carol (gone offline again), bob subscribed with
/// each both ways.
fn friends_of_bob(server: &TestServer) -> Friends {
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let mut alice = Client::online(server, "alice", "a");
    let mut carol = Client::online(server, "carol", "c");
    let mut bob = Client::online(server, "bob", "b1");
    for client in [&mut alice, &mut carol, &mut bob] {
        roster_get(client);
    }
    for friend in [&mut alice, &mut carol] {
        subscribe(friend, &mut bob);
        subscribe(&mut bob, friend);
    }
    let bob2 = Client::online(server, "bob", "b2");
    carol.sync();
    let (carol_ver, items) = roster(&mut carol);
    assert_eq!(items, ["bob@localhost"]);
    carol.send("</stream:stream>");
    while !matches!(carol.next(), Got::Close | Got::Eof) {}
    server.wait_for_log("carol@localhost/c: session ended");
    settle(&mut alice, &mut bob);
    let (ver, items) = roster(&mut alice);
    assert_eq!(items, ["bob@localhost"]);
    Friends {
        alice,
        alice_ver: ver.parse().unwrap(),
        carol_ver,
        bob,
        bob2,
    }
}

/// What alice is sent about bob's deletion: every stanza until all of it came, checked as it
/// arrives; returns the version of the roster push.
fn alice_sees_bob_leave(alice: &mut Client, ver_before: u64) -> u64 {
    let mut waiting: BTreeSet<&str> = [
        "unavailable bob@localhost/b1",
        "unavailable bob@localhost/b2",
        "unsubscribe bob@localhost",
        "unsubscribed bob@localhost",
        "push",
    ]
    .into();
    let mut pushed = 0;
    while !waiting.is_empty() {
        let xml = alice.stanza();
        let seen = with_doc(&xml, |stanza| {
            let attr = |name| stanza.attribute(name).unwrap_or_default();
            match stanza.tag_name().name() {
                "presence" => {
                    assert_eq!(
                        stanza
                            .attribute("to")
                            .map(|to| to.starts_with("alice@localhost")),
                        Some(true),
                        "{xml}"
                    );
                    format!("{} {}", attr("type"), attr("from"))
                }
                "iq" => {
                    assert_eq!(attr("type"), "set", "{xml}");
                    let query = stanza.first_element_child().unwrap();
                    assert!(query.has_tag_name((NS_ROSTER, "query")), "{xml}");
                    pushed = query.attribute("ver").unwrap().parse().unwrap();
                    let item = query.first_element_child().unwrap();
                    assert_eq!(item.attribute("jid"), Some("bob@localhost"), "{xml}");
                    assert_eq!(item.attribute("subscription"), Some("remove"), "{xml}");
                    alice.send(&format!("<iq type='result' id='{}'/>", attr("id")));
                    "push".to_string()
                }
                other => panic!("unexpected {other}: {xml}"),
            }
        });
        assert!(
            waiting.remove(seen.as_str()),
            "{seen} twice or unexpected: {xml}"
        );
    }
    assert!(pushed > ver_before, "{pushed} after {ver_before}");
    pushed
}

/// After the deletion: alice's roster has no bob (at the pushed version), and neither has
/// carol's when she comes back.
fn nobody_keeps_bob(server: &TestServer, alice: &mut Client, pushed: u64, carol_ver: &str) {
    alice.sync();
    assert_eq!(roster(alice), (pushed.to_string(), vec![]));
    carol_comes_back(server, carol_ver);
}

/// carol logs in: her client's cached roster (version `carol_ver`) is told of bob's removal
/// (XEP-0237), her roster has no bob, and nothing of bob's reaches her.
fn carol_comes_back(server: &TestServer, carol_ver: &str) {
    let mut carol = Client::online(server, "carol", "c2");
    carol.send(&format!(
        "<iq type='get' id='cached'><query xmlns='{NS_ROSTER}' ver='{carol_ver}'/></iq>"
    ));
    let result = carol.stanza();
    with_doc(&result, |iq| {
        assert_eq!(iq.attribute("id"), Some("cached"), "{result}");
        assert_eq!(iq.attribute("type"), Some("result"), "{result}");
    });
    let push = carol.stanza();
    with_doc(&push, |iq| {
        let query = iq.first_element_child().unwrap();
        assert!(query.has_tag_name((NS_ROSTER, "query")), "{push}");
        let item = query.first_element_child().unwrap();
        assert_eq!(item.attribute("jid"), Some("bob@localhost"), "{push}");
        assert_eq!(item.attribute("subscription"), Some("remove"), "{push}");
    });
    assert_eq!(roster(&mut carol).1, Vec::<String>::new());
    carol.sync();
    assert!(
        !carol.transcript.contains("bob@localhost/"),
        "{}",
        carol.transcript
    );
}

/// The deleted account's session ends with `not-authorized` after whatever it was sent.
fn ends_not_authorized(client: &mut Client) {
    loop {
        match client.next() {
            Got::Stanza(xml) if xml.starts_with("<stream:error") => {
                with_doc(&xml, |error| {
                    let condition = error.first_element_child().unwrap();
                    assert_eq!(condition.tag_name().name(), "not-authorized", "{xml}");
                });
                return;
            }
            Got::Stanza(_) => continue,
            other => panic!("expected a stream error, got {other:?}"),
        }
    }
}

#[test]
fn deluser_takes_the_account_off_every_roster_rfc6121_3_2_3_3() {
    let server = TestServer::start("");
    let mut friends = friends_of_bob(&server);
    deluser_bob(&server);
    let pushed = alice_sees_bob_leave(&mut friends.alice, friends.alice_ver);
    ends_not_authorized(&mut friends.bob);
    ends_not_authorized(&mut friends.bob2);
    nobody_keeps_bob(&server, &mut friends.alice, pushed, &friends.carol_ver);
}

fn deluser_bob(server: &TestServer) {
    let out = server.hearth(&["deluser", "bob@localhost"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deluser_without_a_running_server_leaves_the_account_on_no_roster() {
    let mut server = TestServer::start("");
    let Friends { carol_ver, .. } = friends_of_bob(&server);
    assert!(server.stop().success());
    deluser_bob(&server);
    server.spawn();
    carol_comes_back(&server, &carol_ver);
    let mut alice = Client::online(&server, "alice", "a2");
    assert_eq!(roster(&mut alice).1, Vec::<String>::new());
    alice.sync();
}

#[test]
fn in_band_removal_takes_the_account_off_every_roster_xep0077() {
    let server = TestServer::start("");
    let Friends {
        mut alice,
        alice_ver,
        carol_ver,
        mut bob,
        mut bob2,
    } = friends_of_bob(&server);
    bob.send("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>");
    let pushed = alice_sees_bob_leave(&mut alice, alice_ver);
    ends_not_authorized(&mut bob2);
    let result = bob.expect("id='rm'");
    with_doc(&result, |iq| {
        assert_eq!(iq.attribute("type"), Some("result"))
    });
    ends_not_authorized(&mut bob);
    nobody_keeps_bob(&server, &mut alice, pushed, &carol_ver);
}
