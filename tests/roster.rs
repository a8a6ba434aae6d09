//! The roster (RFC 6121 §2) and roster versioning (XEP-0237) as clients see them: pushes to
//! every interested resource, deltas across reconnects, limits and malformed requests.

mod common;

use common::roster::*;
use common::*;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

fn query_of(result: &str) -> String {
    let start = result.find("<query").expect("query");
    result[start..result.rfind("</iq>").unwrap()].to_string()
}

#[test]
fn get_set_remove_with_pushes_to_interested_resources() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut a1 = Client::online(&server, "alice", "one");
    let mut a2 = Client::online(&server, "alice", "two");
    let mut a3 = Client::online(&server, "alice", "three");
    let empty = roster_get(&mut a1);
    assert_eq!(
        empty,
        "<iq type='result' id='rg' to='alice@localhost/one'><query xmlns='jabber:iq:roster'></query></iq>"
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
    let item = "<item jid='bob@localhost' name='Bob &amp; co' subscription='none'><group>Friends</group><group>Work</group></item>";
    assert_eq!(expect_push(&mut a1), item);
    assert_eq!(expect_push(&mut a2), item);
    // A resource that never asked for the roster gets no pushes.
    a3.expect_silence(QUIET);
    assert_eq!(
        query_of(&roster_get(&mut a2)),
        format!("<query xmlns='jabber:iq:roster'>{item}</query>")
    );

    // An update replaces name and groups; the subscription is untouched.
    roster_set(&mut a2, "<item jid='bob@localhost'/>");
    assert_eq!(
        expect_push(&mut a1),
        "<item jid='bob@localhost' subscription='none'/>"
    );
    assert_eq!(
        expect_push(&mut a2),
        "<item jid='bob@localhost' subscription='none'/>"
    );

    let reply = roster_set(&mut a1, "<item jid='bob@localhost' subscription='remove'/>");
    assert!(reply.contains("type='result'"), "{reply}");
    assert_eq!(
        expect_push(&mut a1),
        "<item jid='bob@localhost' subscription='remove'/>"
    );
    assert_eq!(
        expect_push(&mut a2),
        "<item jid='bob@localhost' subscription='remove'/>"
    );
    assert_eq!(
        query_of(&roster_get(&mut a1)),
        "<query xmlns='jabber:iq:roster'></query>"
    );
    // Removing what is not there: item-not-found, and no push.
    let reply = roster_set(&mut a1, "<item jid='bob@localhost' subscription='remove'/>");
    assert!(reply.contains("<item-not-found "), "{reply}");
    a2.expect_silence(QUIET);
    a3.expect_silence(QUIET);
}

fn ver_of(result: &str) -> String {
    with_doc(result, |iq| {
        iq.first_element_child()
            .and_then(|q| q.attribute("ver"))
            .expect("ver")
            .to_string()
    })
}

#[test]
fn versioning_sends_only_changes_across_reconnects() {
    let server = TestServer::start("");
    server.add_user("alice");
    let features = features_after_auth(&server, "alice");
    assert!(
        features.contains("<ver xmlns='urn:xmpp:features:rosterver'/>"),
        "{features}"
    );

    let mut alice = Client::online(&server, "alice", "a");
    alice.send("<iq type='get' id='v0'><query xmlns='jabber:iq:roster' ver=''/></iq>");
    let first = alice.expect("id='v0'");
    let v0 = ver_of(&first);
    roster_set(&mut alice, "<item jid='x@localhost'/>");
    expect_push(&mut alice);
    roster_set(&mut alice, "<item jid='y@localhost' name='Y'/>");
    let push = alice.expect("<query xmlns='jabber:iq:roster'");
    let v1 = ver_of(&push);
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
    // The result is empty; the changes follow as pushes, oldest first.
    assert_eq!(
        alice.expect("id='v1'"),
        "<iq type='result' id='v1' to='alice@localhost/a'/>"
    );
    assert_eq!(
        expect_push(&mut alice),
        "<item jid='x@localhost' subscription='remove'/>"
    );
    let push = alice.expect("<query xmlns='jabber:iq:roster'");
    assert!(
        push.contains("<item jid='z@localhost' subscription='none'><group>G</group></item>"),
        "{push}"
    );
    let v2 = ver_of(&push);
    alice.expect_silence(QUIET);

    // The current version: an empty result and nothing else.
    alice.send(&format!(
        "<iq type='get' id='v2'><query xmlns='jabber:iq:roster' ver='{v2}'/></iq>"
    ));
    assert_eq!(
        alice.expect("id='v2'"),
        "<iq type='result' id='v2' to='alice@localhost/a'/>"
    );
    alice.expect_silence(QUIET);

    // An unknown version: the whole roster with the current version.
    alice.send("<iq type='get' id='v3'><query xmlns='jabber:iq:roster' ver='bogus'/></iq>");
    let full = alice.expect("id='v3'");
    assert_eq!(ver_of(&full), v2);
    assert!(full.contains("<item jid='y@localhost' name='Y' subscription='none'/>"));
    assert!(full.contains("<item jid='z@localhost'"));
    assert!(!full.contains("x@localhost"), "{full}");
}

#[test]
fn roster_size_is_limited() {
    let server = TestServer::start("[roster]\nmax_items = 2\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    roster_get(&mut alice);
    assert!(roster_set(&mut alice, "<item jid='x@localhost'/>").contains("type='result'"));
    assert!(roster_set(&mut alice, "<item jid='y@localhost'/>").contains("type='result'"));
    let reply = roster_set(&mut alice, "<item jid='z@localhost'/>");
    assert!(
        reply.contains("type='error'") && reply.contains("<not-allowed "),
        "{reply}"
    );
    // Changing an existing item is still fine.
    assert!(roster_set(&mut alice, "<item jid='y@localhost' name='Y'/>").contains("type='result'"));
    // A subscription that would add a third item is refused too.
    alice.send("<presence type='subscribe' to='bob@localhost' id='s1'/>");
    let error = alice.expect("id='s1'");
    assert!(
        error.contains("type='error'") && error.contains("<resource-constraint "),
        "{error}"
    );
    assert_eq!(
        query_of(&roster_get(&mut alice)).matches("<item ").count(),
        2
    );
}

#[test]
fn malformed_items_are_bad_requests() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    roster_get(&mut alice);
    for item in [
        "<item jid='b@localhost'/><item jid='c@localhost'/>",
        "<item jid='b@@localhost'/>",
        "<item name='no jid'/>",
        "<item jid='b@localhost' subscription='both'/>",
        "<item jid='b@localhost' subscription='from'/>",
        "<item jid='b@localhost'><group/></item>",
        "<item jid='b@localhost'><group>G</group><group>G</group></item>",
        "",
    ] {
        let reply = roster_set(&mut alice, item);
        assert!(
            reply.contains("type='error'") && reply.contains("<bad-request "),
            "{item}: {reply}"
        );
    }
    alice.expect_silence(QUIET);
    assert_eq!(
        query_of(&roster_get(&mut alice)),
        "<query xmlns='jabber:iq:roster'></query>"
    );
}

#[test]
fn another_users_roster_is_forbidden() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    roster_get(&mut bob);
    alice.send("<iq type='set' id='f1' to='bob@localhost'><query xmlns='jabber:iq:roster'><item jid='eve@localhost'/></query></iq>");
    let reply = alice.expect("id='f1'");
    assert!(reply.contains("<forbidden "), "{reply}");
    alice.send("<iq type='get' id='f2' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(alice.expect("id='f2'").contains("<forbidden "));
    bob.expect_silence(QUIET);
    // The user's own bare JID is the roster's address too.
    alice
        .send("<iq type='get' id='f3' to='alice@localhost'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(alice.expect("id='f3'").contains("type='result'"));
}
