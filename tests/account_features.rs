//! Per-account features as clients see them: block lists (XEP-0191), in-band registration
//! and account management (XEP-0077), vCards with avatar hashes (XEP-0054/0153) and private
//! XML storage (XEP-0049), including persistence across restarts.

mod common;

use common::*;
use hearth::sasl::Mechanism;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const BLOCKED_ERROR: &str = "<error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><blocked xmlns='urn:xmpp:blocking:errors'/></error>";

/// Logs in with `password` over STARTTLS; None when authentication fails.
fn login_with(server: &TestServer, user: &str, password: &str, resource: &str) -> Option<Client> {
    let mut client = Client::connect(server);
    client.starttls();
    if !client.scram(Mechanism::ScramSha256, user, password) {
        return None;
    }
    client.bind(resource);
    Some(client)
}

/// Sends an iq and returns the answer with the same id.
fn iq(client: &mut Client, id: &str, xml: &str) -> String {
    client.send(xml);
    client.expect(&format!("id='{id}'"))
}

fn assert_error(reply: &str, condition: &str) {
    assert!(
        reply.contains("type='error'") && reply.contains(&format!("<{condition} ")),
        "wanted {condition}: {reply}"
    );
}

// ---- XEP-0191 ----

#[test]
fn block_unblock_and_unblock_all_are_pushed_to_every_resource() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut a1 = Client::online(&server, "alice", "one");
    let mut a2 = Client::online(&server, "alice", "two");
    a2.sync();
    let empty = iq(
        &mut a1,
        "g1",
        "<iq type='get' id='g1'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    );
    assert!(
        empty.contains("type='result'") && empty.contains("<blocklist xmlns='urn:xmpp:blocking'/>"),
        "{empty}"
    );

    let result = iq(&mut a1, "b1", "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='Bob@localhost'/><item jid='evil.example'/></block></iq>");
    assert!(result.contains("type='result'"), "{result}");
    for client in [&mut a1, &mut a2] {
        let push = client.expect("<block ");
        assert!(push.starts_with("<iq type='set'"), "{push}");
        assert!(push.contains(&format!("to='{}'", client.jid)), "{push}");
        assert!(
            push.contains("<item jid='bob@localhost'/><item jid='evil.example'/>"),
            "{push}"
        );
    }
    let list = iq(
        &mut a2,
        "g2",
        "<iq type='get' id='g2'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    );
    assert!(
        list.contains("<blocklist xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/><item jid='evil.example'/></blocklist>"),
        "{list}"
    );

    let result = iq(&mut a2, "u1", "<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock></iq>");
    assert!(result.contains("type='result'"), "{result}");
    for client in [&mut a1, &mut a2] {
        let push = client.expect("<unblock ");
        assert!(push.contains("<item jid='bob@localhost'/>"), "{push}");
    }

    let result = iq(
        &mut a1,
        "u2",
        "<iq type='set' id='u2'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    );
    assert!(result.contains("type='result'"), "{result}");
    for client in [&mut a1, &mut a2] {
        let push = client.expect("<unblock ");
        assert!(
            push.contains("<unblock xmlns='urn:xmpp:blocking'/>"),
            "{push}"
        );
    }
    let list = iq(
        &mut a1,
        "g3",
        "<iq type='get' id='g3'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    );
    assert!(
        list.contains("<blocklist xmlns='urn:xmpp:blocking'/>"),
        "{list}"
    );

    // §3.3: no items is a bad request; an unparsable JID is malformed.
    let reply = iq(
        &mut a1,
        "e1",
        "<iq type='set' id='e1'><block xmlns='urn:xmpp:blocking'/></iq>",
    );
    assert_error(&reply, "bad-request");
    let reply = iq(
        &mut a1,
        "e2",
        "<iq type='set' id='e2'><block xmlns='urn:xmpp:blocking'><item jid='a@b@c'/></block></iq>",
    );
    assert_error(&reply, "jid-malformed");
    a1.expect_silence(QUIET);
    a2.expect_silence(QUIET);
}

#[test]
fn nothing_passes_between_a_user_and_a_blocked_contact() {
    let mut server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    bob.sync();
    let result = iq(&mut alice, "b1", "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>");
    assert!(result.contains("type='result'"), "{result}");
    alice.expect("<block ");
    // §3.3: the blocked contact stops seeing the user as available.
    let gone = bob.expect("<presence");
    assert_eq!(
        gone,
        "<presence type='unavailable' from='alice@localhost/a' to='bob@localhost/b'/>"
    );

    // The contact's message and iq bounce as if the user were not there; presence vanishes.
    bob.send("<message to='alice@localhost' id='m1' type='chat'><body>hello?</body></message>");
    let reply = bob.expect("id='m1'");
    assert_error(&reply, "service-unavailable");
    assert!(reply.contains("from='alice@localhost'"), "{reply}");
    let reply = iq(
        &mut bob,
        "i1",
        "<iq type='get' id='i1' to='alice@localhost/a'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert_error(&reply, "service-unavailable");
    let reply = iq(
        &mut bob,
        "i2",
        "<iq type='get' id='i2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    );
    assert_error(&reply, "service-unavailable");
    bob.send("<presence to='alice@localhost/a'/>");
    bob.sync();
    alice.expect_silence(QUIET);

    // The user's own stanzas to the contact are refused with the blocked error.
    for (id, xml) in [
        (
            "o1",
            "<message to='bob@localhost' id='o1' type='chat'><body>x</body></message>",
        ),
        (
            "o2",
            "<iq type='get' id='o2' to='bob@localhost/b'><ping xmlns='urn:xmpp:ping'/></iq>",
        ),
        ("o3", "<presence to='bob@localhost' id='o3'/>"),
    ] {
        let reply = iq(&mut alice, id, xml);
        assert!(reply.contains(BLOCKED_ERROR), "{reply}");
        assert!(reply.contains("from='bob@localhost"), "{reply}");
    }
    bob.expect_silence(QUIET);

    // Offline: nothing is stored, and the block survives a restart.
    drop(alice);
    drop(bob);
    assert!(server.stop().success());
    server.spawn();
    let mut bob = Client::online(&server, "bob", "b");
    bob.send("<message to='alice@localhost' id='m2' type='chat'><body>stored?</body></message>");
    assert_error(&bob.expect("id='m2'"), "service-unavailable");
    let mut alice = Client::online(&server, "alice", "a");
    alice.expect_silence(QUIET);
    bob.send("<message to='alice@localhost' id='m3' type='chat'><body>now?</body></message>");
    assert_error(&bob.expect("id='m3'"), "service-unavailable");
    alice.expect_silence(QUIET);
}

#[test]
fn domain_and_full_jid_items_match_as_the_xep_says() {
    let server = TestServer::start("");
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let mut alice = Client::online(&server, "alice", "a");
    let mut alice2 = Client::online(&server, "alice", "a2");
    let mut phone = Client::online(&server, "bob", "phone");
    let mut laptop = Client::online(&server, "bob", "laptop");
    let mut carol = Client::online(&server, "carol", "c");
    carol.sync();
    laptop.sync();
    phone.sync();
    let result = iq(&mut alice, "b1", "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost/phone'/></block></iq>");
    assert!(result.contains("type='result'"), "{result}");
    phone.send(
        "<message to='alice@localhost/a' id='p1' type='chat'><body>from phone</body></message>",
    );
    assert_error(&phone.expect("id='p1'"), "service-unavailable");
    laptop.send(
        "<message to='alice@localhost/a' id='l1' type='chat'><body>from laptop</body></message>",
    );
    alice.expect("from laptop");

    let result = iq(&mut alice, "b2", "<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='localhost'/></block></iq>");
    assert!(result.contains("type='result'"), "{result}");
    carol.send(
        "<message to='alice@localhost' id='c1' type='chat'><body>from carol</body></message>",
    );
    assert_error(&carol.expect("id='c1'"), "service-unavailable");
    laptop.send("<message to='alice@localhost' id='l2' type='chat'><body>again</body></message>");
    assert_error(&laptop.expect("id='l2'"), "service-unavailable");
    // The user's own resources and the server itself are never blocked.
    alice2.send(
        "<message to='alice@localhost/a' id='s1' type='chat'><body>to myself</body></message>",
    );
    alice.expect("to myself");
    alice.sync();
}

// ---- XEP-0077 ----

const REGISTER_GET: &str = "<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>";

fn register(client: &mut Client, id: &str, user: &str, password: &str) -> String {
    iq(
        client,
        id,
        &format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:register'><username>{user}</username><password>{password}</password></query></iq>"),
    )
}

#[test]
fn registration_is_closed_by_default() {
    let server = TestServer::start("");
    let mut client = Client::connect(&server);
    let features = client.starttls();
    assert!(!features.contains("iq-register"), "{features}");
    assert_error(&iq(&mut client, "r1", REGISTER_GET), "service-unavailable");
    assert_error(
        &register(&mut client, "r2", "mallory", "pw"),
        "service-unavailable",
    );
    // Any other iq before login still ends the stream.
    client.send("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>");
    client.expect_stream_error("not-authorized");
    assert!(login_with(&server, "mallory", "pw", "r").is_none());
}

#[test]
fn open_registration_creates_accounts_with_conflict_and_rate_limit() {
    let server = TestServer::start("[registration]\nmode = \"open\"\nper_ip_per_hour = 2\n");
    server.add_user("taken");
    let mut client = Client::connect(&server);
    let features = client.starttls();
    assert!(
        features.contains("<register xmlns='http://jabber.org/features/iq-register'/>"),
        "{features}"
    );
    let form = iq(&mut client, "r1", REGISTER_GET);
    assert!(
        form.contains("type='result'") && form.contains("<username/><password/>"),
        "{form}"
    );
    assert!(register(&mut client, "r2", "Newbie", "first pass").contains("type='result'"));
    assert_error(&register(&mut client, "r3", "taken", "x"), "conflict");
    assert_error(&register(&mut client, "r4", "empty", ""), "not-acceptable");
    assert!(register(&mut client, "r5", "second", "pw2").contains("type='result'"));
    let limited = register(&mut client, "r6", "third", "pw3");
    assert!(limited.contains("type='wait'"), "{limited}");
    assert_error(&limited, "resource-constraint");
    // The same stream then logs in with the new account.
    assert!(client.scram(Mechanism::ScramSha256, "newbie", "first pass"));
    client.bind("r");
    assert!(login_with(&server, "second", "pw2", "r").is_some());
    assert!(login_with(&server, "third", "pw3", "r").is_none());
}

#[test]
fn password_change_and_account_removal() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut a1 = Client::online(&server, "alice", "one");
    let mut a2 = Client::online(&server, "alice", "two");
    a2.sync();
    let info = iq(&mut a1, "r1", REGISTER_GET);
    assert!(
        info.contains("<registered/><username>alice</username>"),
        "{info}"
    );
    assert_error(&register(&mut a1, "p0", "bob", "stolen"), "bad-request");
    assert_error(&register(&mut a1, "p1", "alice", ""), "bad-request");
    assert!(register(&mut a1, "p2", "alice", "new secret").contains("type='result'"));
    assert!(login_with(&server, "alice", PASSWORD, "x").is_none());
    let mut a3 = login_with(&server, "alice", "new secret", "three").expect("new password");
    a3.sync();

    let result = iq(
        &mut a1,
        "rm",
        "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>",
    );
    assert!(result.contains("type='result'"), "{result}");
    a1.expect_stream_error("not-authorized");
    a2.expect_stream_error("not-authorized");
    a3.expect_stream_error("not-authorized");
    assert!(login_with(&server, "alice", "new secret", "x").is_none());
}

// ---- XEP-0054 / XEP-0153 ----

const PHOTO_VCARD: &str = "<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVs\nbG8=</BINVAL></PHOTO></vCard>";
/// SHA-1 of "hello", the photo above.
const PHOTO_HASH: &str = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";

#[test]
fn vcards_are_read_by_anyone_written_by_their_owner_limited_and_kept() {
    let mut server = TestServer::start("[limits]\nmax_vcard_bytes = 2048\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let empty = iq(
        &mut alice,
        "v1",
        "<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>",
    );
    assert!(
        empty.contains("type='result'") && empty.contains("<vCard xmlns='vcard-temp'/>"),
        "{empty}"
    );
    let set = iq(
        &mut alice,
        "v2",
        "<iq type='set' id='v2'><vCard xmlns='vcard-temp'><FN>Alice &amp; Co</FN></vCard></iq>",
    );
    assert!(set.contains("type='result'"), "{set}");
    let got = iq(
        &mut bob,
        "v3",
        "<iq type='get' id='v3' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    );
    assert!(
        got.contains("from='alice@localhost'")
            && got.contains("<vCard xmlns='vcard-temp'><FN>Alice &amp; Co</FN></vCard>"),
        "{got}"
    );
    assert_error(
        &iq(
            &mut bob,
            "v4",
            "<iq type='set' id='v4' to='alice@localhost'><vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>",
        ),
        "forbidden",
    );
    let big = format!(
        "<iq type='set' id='v5'><vCard xmlns='vcard-temp'><DESC>{}</DESC></vCard></iq>",
        "x".repeat(2100)
    );
    assert_error(&iq(&mut alice, "v5", &big), "policy-violation");

    drop(alice);
    drop(bob);
    assert!(server.stop().success());
    server.spawn();
    let mut bob = Client::online(&server, "bob", "b");
    let got = iq(
        &mut bob,
        "v6",
        "<iq type='get' id='v6' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    );
    assert!(got.contains("<FN>Alice &amp; Co</FN>"), "{got}");
}

#[test]
fn photo_hash_is_added_to_available_presence() {
    let mut server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    bob.sync();
    alice.send("<presence to='bob@localhost/b'/>");
    let plain = bob.expect("<presence");
    assert!(!plain.contains("vcard-temp:x:update"), "{plain}");

    let set = iq(
        &mut alice,
        "v1",
        &format!("<iq type='set' id='v1'>{PHOTO_VCARD}</iq>"),
    );
    assert!(set.contains("type='result'"), "{set}");
    alice.send("<presence to='bob@localhost/b'><show>away</show></presence>");
    let stamped = bob.expect("<presence");
    assert!(
        stamped.contains("<show>away</show>")
            && stamped.contains(&format!(
                "<x xmlns='vcard-temp:x:update'><photo>{PHOTO_HASH}</photo></x>"
            )),
        "{stamped}"
    );
    // A client's own update element is left alone; unavailable presence gets none.
    alice.send(
        "<presence to='bob@localhost/b'><x xmlns='vcard-temp:x:update'><photo/></x></presence>",
    );
    let own = bob.expect("<presence");
    assert!(
        own.contains("<photo/>") && !own.contains(PHOTO_HASH),
        "{own}"
    );
    alice.send("<presence to='bob@localhost/b' type='unavailable'/>");
    let gone = bob.expect("<presence");
    assert!(!gone.contains("vcard-temp:x:update"), "{gone}");

    // The hash comes from the store after a restart.
    drop(alice);
    drop(bob);
    assert!(server.stop().success());
    server.spawn();
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    bob.sync();
    alice.send("<presence to='bob@localhost/b'/>");
    let stamped = bob.expect("<presence");
    assert!(stamped.contains(PHOTO_HASH), "{stamped}");
}

// ---- XEP-0049 ----

#[test]
fn private_storage_is_per_user_per_namespace_limited_and_kept() {
    let mut server = TestServer::start("[limits]\nmax_private_bytes = 1024\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let set = iq(&mut alice, "s1", "<iq type='set' id='s1'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus></query></iq>");
    assert!(set.contains("type='result'"), "{set}");
    let got = iq(&mut alice, "g1", "<iq type='get' id='g1'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>");
    assert!(
        got.contains("<query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus></query>"),
        "{got}"
    );
    let none = iq(&mut alice, "g2", "<iq type='get' id='g2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>");
    assert!(
        none.contains(
            "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>"
        ),
        "{none}"
    );
    for (id, ns) in [
        ("n1", "jabber:client"),
        ("n2", "jabber:server"),
        ("n3", "jabber:iq:private"),
    ] {
        let reply = iq(&mut alice, id, &format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:private'><x xmlns='{ns}'/></query></iq>"));
        assert_error(&reply, "not-acceptable");
    }
    assert_error(
        &iq(
            &mut alice,
            "n4",
            "<iq type='get' id='n4'><query xmlns='jabber:iq:private'/></iq>",
        ),
        "not-acceptable",
    );
    assert_error(
        &iq(&mut alice, "f1", "<iq type='get' id='f1' to='bob@localhost'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>"),
        "forbidden",
    );
    let big = format!("<iq type='set' id='b1'><query xmlns='jabber:iq:private'><big xmlns='x:big'>{}</big></query></iq>", "y".repeat(1100));
    assert_error(&iq(&mut alice, "b1", &big), "policy-violation");

    drop(alice);
    assert!(server.stop().success());
    server.spawn();
    let mut alice = Client::online(&server, "alice", "a");
    let got = iq(&mut alice, "g3", "<iq type='get' id='g3'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>");
    assert!(got.contains("<defaultnick>Hamlet</defaultnick>"), "{got}");
    let mut bob = Client::online(&server, "bob", "b");
    let theirs = iq(&mut bob, "g4", "<iq type='get' id='g4'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>");
    assert!(
        theirs.contains("<exodus xmlns='exodus:prefs'/>") && !theirs.contains("Hamlet"),
        "{theirs}"
    );
}

#[test]
fn disco_advertises_the_account_features() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    let info = iq(&mut alice, "d1", "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    for feature in ["urn:xmpp:blocking", "jabber:iq:register", "vcard-temp"] {
        assert!(
            info.contains(&format!("<feature var='{feature}'/>")),
            "{feature}: {info}"
        );
    }
}
