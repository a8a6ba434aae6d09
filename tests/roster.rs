//! The roster (RFC 6121 §2) and roster versioning (XEP-0237) as clients see them: pushes to
//! every interested resource, deltas across reconnects, limits and malformed requests.

mod common;

use common::roster::*;
use common::*;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

#[test]
fn get_set_remove_with_pushes_to_interested_resources() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut a1 = Client::online(&server, "alice", "one");
    let mut a2 = Client::online(&server, "alice", "two");
    let mut a3 = Client::online(&server, "alice", "three");
    assert_eq!(
        roster_get(&mut a1),
        "<iq type='result' id='rg' to='alice@localhost/one'><query xmlns='jabber:iq:roster'/></iq>"
    );
    roster_get(&mut a2);
    a3.sync();

    let reply = roster_set(
        &mut a1,
        "<item jid='bob@localhost' name='Bob &amp; co'><group>Friends</group><group>Work</group></item>",
    );
    assert_eq!(
        reply,
        "<iq type='result' id='rs' to='alice@localhost/one'/>"
    );
    let item = "<item jid='bob@localhost' name='Bob &amp; co' subscription='none'>\
                <group>Friends</group><group>Work</group></item>";
    assert_eq!(expect_push(&mut a1), item);
    assert_eq!(expect_push(&mut a2), item);
    // A resource that never asked for the roster gets no pushes (§2.1.6).
    a3.expect_silence(QUIET);
    assert_eq!(roster(&mut a2).items, [item]);

    // An update replaces name and groups; the subscription is untouched.
    roster_set(&mut a2, "<item jid='bob@localhost'/>");
    let plain = "<item jid='bob@localhost' subscription='none'/>";
    assert_eq!(expect_push(&mut a1), plain);
    assert_eq!(expect_push(&mut a2), plain);

    let reply = roster_set(&mut a1, "<item jid='bob@localhost' subscription='remove'/>");
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let removed = "<item jid='bob@localhost' subscription='remove'/>";
    assert_eq!(expect_push(&mut a1), removed);
    assert_eq!(expect_push(&mut a2), removed);
    let items = roster(&mut a1).items;
    assert!(items.is_empty(), "{items:?}");
    // Removing what is not there: item-not-found (§2.5.3), and no push.
    roster_set(&mut a1, "<item jid='bob@localhost' subscription='remove'/>")
        .assert_error("cancel", "item-not-found");
    a2.expect_silence(QUIET);
    a3.expect_silence(QUIET);
}

#[test]
fn versioning_sends_only_changes_across_reconnects() {
    let server = TestServer::start("");
    server.add_user("alice");
    let features = features_after_auth(&server, "alice");
    assert_eq!(
        features
            .find("ver", "urn:xmpp:features:rosterver")
            .map(Element::children),
        Some(&[][..]),
        "{features}"
    );

    let mut alice = Client::online(&server, "alice", "a");
    alice.send("<iq type='get' id='v0'><query xmlns='jabber:iq:roster' ver=''/></iq>");
    let v0 = Roster::of(&alice.expect_iq("v0")).ver.expect("ver");
    roster_set(&mut alice, "<item jid='x@localhost'/>");
    expect_push(&mut alice);
    roster_set(&mut alice, "<item jid='y@localhost' name='Y'/>");
    let v1 = expect_versioned_push(&mut alice).1.expect("ver");
    assert_ne!(v0, v1);
    drop(alice);

    // Offline changes by another resource.
    let mut other = Client::online(&server, "alice", "other");
    roster_set(
        &mut other,
        "<item jid='x@localhost' subscription='remove'/>",
    );
    roster_set(
        &mut other,
        "<item jid='z@localhost'><group>G</group></item>",
    );
    drop(other);

    let mut alice = Client::online(&server, "alice", "a");
    alice.send(&format!(
        "<iq type='get' id='v1'><query xmlns='jabber:iq:roster' ver='{v1}'/></iq>"
    ));
    // The result is empty; the changes follow as pushes, oldest first (XEP-0237 §4).
    assert_eq!(
        alice.expect_iq("v1"),
        "<iq type='result' id='v1' to='alice@localhost/a'/>"
    );
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='x@localhost' subscription='remove'/>"
    );
    let (item, v2) = expect_versioned_push(&mut alice);
    assert_eq!(
        item,
        "<item jid='z@localhost' subscription='none'><group>G</group></item>"
    );
    let v2 = v2.expect("ver");
    alice.expect_silence(QUIET);

    // The current version: an empty result and nothing else.
    alice.send(&format!(
        "<iq type='get' id='v2'><query xmlns='jabber:iq:roster' ver='{v2}'/></iq>"
    ));
    assert_eq!(
        alice.expect_iq("v2"),
        "<iq type='result' id='v2' to='alice@localhost/a'/>"
    );
    alice.expect_silence(QUIET);

    // An unknown version: the whole roster with the current version.
    alice.send("<iq type='get' id='v3'><query xmlns='jabber:iq:roster' ver='bogus'/></iq>");
    let full = Roster::of(&alice.expect_iq("v3"));
    assert_eq!(full.ver.as_deref(), Some(v2.as_str()));
    assert_eq!(full.items.len(), 2, "{full:?}");
    assert_eq!(
        full.item("y@localhost").expect("y"),
        &"<item jid='y@localhost' name='Y' subscription='none'/>"
    );
    assert_eq!(
        full.item("z@localhost").expect("z"),
        &"<item jid='z@localhost' subscription='none'><group>G</group></item>"
    );
}

#[test]
fn roster_size_is_limited() {
    let server = TestServer::start("[roster]\nmax_items = 2\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    roster_get(&mut alice);
    let result = |reply: Element| assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    result(roster_set(&mut alice, "<item jid='x@localhost'/>"));
    result(roster_set(&mut alice, "<item jid='y@localhost'/>"));
    roster_set(&mut alice, "<item jid='z@localhost'/>").assert_error("cancel", "not-allowed");
    // Changing an existing item is still fine.
    result(roster_set(&mut alice, "<item jid='y@localhost' name='Y'/>"));
    // A subscription that would add a third item is refused too.
    alice.send("<presence type='subscribe' to='bob@localhost' id='s1'/>");
    let error = alice.expect_where(|s| s.name() == "presence" && s.attr("id") == Some("s1"));
    error.assert_error("wait", "resource-constraint");
    let items = roster(&mut alice).items;
    assert_eq!(items.len(), 2, "{items:?}");
}

#[test]
fn malformed_items_are_bad_requests() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    roster_get(&mut alice);
    // RFC 6121 §2.3.3 and §2.1.2.
    for item in [
        "<item jid='b@localhost'/><item jid='c@localhost'/>",
        "<item jid='b@@localhost'/>",
        "<item name='no jid'/>",
        "<item jid='b@localhost'><group>G</group><group>G</group></item>",
        "",
    ] {
        let reply = roster_set(&mut alice, item);
        assert_eq!(reply.attr("type"), Some("error"), "{item}: {reply}");
        assert_eq!(
            reply.error_condition(),
            Some(("modify", "bad-request")),
            "{item}: {reply}"
        );
    }
    // §2.3.3: an empty group is not acceptable (a `subscription` other than `remove` is
    // ignored, §2.1.5: tests/rfc6121.rs).
    let reply = roster_set(&mut alice, "<item jid='b@localhost'><group/></item>");
    assert_eq!(
        reply.error_condition(),
        Some(("modify", "not-acceptable")),
        "{reply}"
    );
    alice.expect_silence(QUIET);
    let items = roster(&mut alice).items;
    assert!(items.is_empty(), "{items:?}");
}

#[test]
fn another_users_roster_is_forbidden() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    roster_get(&mut bob);
    // RFC 6121 §2.1.5: only the user's own account may be addressed.
    alice.send("<iq type='set' id='f1' to='bob@localhost'><query xmlns='jabber:iq:roster'><item jid='eve@localhost'/></query></iq>");
    alice.expect_iq_error("f1", "auth", "forbidden");
    alice.send("<iq type='get' id='f2' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>");
    alice.expect_iq_error("f2", "auth", "forbidden");
    bob.expect_silence(QUIET);
    // The user's own bare JID is the roster's address too.
    alice
        .send("<iq type='get' id='f3' to='alice@localhost'><query xmlns='jabber:iq:roster'/></iq>");
    Roster::of(&alice.expect_iq_result("f3"));
}
