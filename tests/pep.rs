//! Personal eventing (XEP-0163) as clients see it: publishing with publish-options and the
//! access models, OMEMO's open device list read by a stranger, notifications to contacts
//! whose entity capabilities (XEP-0115, verified by the server's own disco#info query) ask
//! for them, last items at login, retraction, preconditions, limits, legacy bookmarks
//! mirrored into XEP-0402, explicit subscriptions, deletion events, last items on a later
//! approval, and what the server advertises.

mod common;

use common::caps::*;
use common::roster::*;
use common::*;
use hearth::sasl::Mechanism;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const OMEMO_NODE: &str = "eu.siacs.conversations.axolotl.devicelist";
const TEST_NODE: &str = "urn:example:mood";

fn options(fields: &[(&str, &str)]) -> String {
    let mut form = format!(
        "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>"
    );
    for (var, value) in fields {
        form.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    form + "</x></publish-options>"
}

/// Publishes `payload` as item `id` of `node` with publish-options `opts`; the answer.
fn publish(client: &mut Client, node: &str, id: &str, payload: &str, opts: &str) -> String {
    client.send(&format!(
        "<iq type='set' id='pub-{id}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{id}'>{payload}</item></publish>{opts}</pubsub></iq>"
    ));
    client.expect(&format!("id='pub-{id}'"))
}

fn items(client: &mut Client, owner: &str, node: &str) -> String {
    client.send(&format!(
        "<iq type='get' id='items' to='{owner}'><pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub></iq>"
    ));
    client.expect("id='items'")
}

/// Initial presence announcing capabilities `ver`; answers the server's disco#info query
/// with `answer` (the feature list) when one comes. Returns whether a query came.
fn caps_presence(client: &mut Client, ver: &str, answer: &[&str]) -> bool {
    client.send(&caps_announcement(ver));
    client.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>");
    let mut asked = false;
    loop {
        let stanza = client.stanza();
        if stanza.contains("id='sync'") {
            return asked;
        }
        asked |= answer_caps_query(client, &stanza, ver, answer);
    }
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

fn ready(server: &TestServer, user: &str) -> Client {
    let mut client = Client::login(server, user, "r");
    roster_get(&mut client);
    client
}

#[test]
fn omemo_device_list_with_open_access_is_read_by_a_stranger() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("carol");
    let mut alice = Client::online(&server, "alice", "phone");
    let mut carol = Client::online(&server, "carol", "pc");
    let list = "<list xmlns='eu.siacs.conversations.axolotl'><device id='12345'/></list>";
    let reply = publish(
        &mut alice,
        OMEMO_NODE,
        "current",
        list,
        &options(&[("pubsub#access_model", "open")]),
    );
    assert!(reply.contains("type='result'"), "{reply}");
    assert!(
        reply.contains(&format!(
            "<publish node='{OMEMO_NODE}'><item id='current'/></publish>"
        )),
        "{reply}"
    );
    let got = items(&mut carol, "alice@localhost", OMEMO_NODE);
    assert!(
        got.contains("type='result'") && got.contains("from='alice@localhost'"),
        "{got}"
    );
    assert!(
        got.contains(&format!(
            "<items node='{OMEMO_NODE}'><item id='current'>{list}</item></items>"
        )),
        "{got}"
    );
    // The default access model (presence) keeps strangers out.
    let reply = publish(
        &mut alice,
        TEST_NODE,
        "m",
        "<mood xmlns='http://jabber.org/protocol/mood'><happy/></mood>",
        "",
    );
    assert!(reply.contains("type='result'"), "{reply}");
    let got = items(&mut carol, "alice@localhost", TEST_NODE);
    assert!(got.contains("<not-authorized"), "{got}");
    assert!(
        got.contains(
            "<presence-subscription-required xmlns='http://jabber.org/protocol/pubsub#errors'/>"
        ),
        "{got}"
    );
    // Nobody but the owner publishes.
    let reply = {
        carol.send(&format!("<iq type='set' id='steal' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><publish node='{OMEMO_NODE}'><item id='current'><x xmlns='y'/></item></publish></pubsub></iq>"));
        carol.expect("id='steal'")
    };
    assert!(reply.contains("<forbidden"), "{reply}");
    // A node that does not exist.
    let got = items(&mut carol, "alice@localhost", "nothing");
    assert!(got.contains("<item-not-found"), "{got}");
}

#[test]
fn contacts_with_notify_caps_get_events_and_last_items_at_login() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice");
    alice.send("<presence/>");
    let mut bob0 = ready(&server, "bob");
    bob0.send("<presence/>");
    subscribe(&mut bob0, &mut alice);
    let mut bob = Client::login(&server, "bob", "notify");
    let notify = format!("{TEST_NODE}+notify");
    let features = ["http://jabber.org/protocol/disco#info", notify.as_str()];
    let ver = caps_ver(&features);
    assert!(
        caps_presence(&mut bob, &ver, &features),
        "the server asks once"
    );
    alice.sync();
    let payload = "<mood xmlns='http://jabber.org/protocol/mood'><happy/></mood>";
    let reply = publish(&mut alice, TEST_NODE, "m1", payload, "");
    assert!(reply.contains("type='result'"), "{reply}");
    let event = bob.expect("pubsub#event");
    assert_eq!(
        event,
        format!(
            "<message from='alice@localhost' to='{}' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='{TEST_NODE}'><item id='m1'>{payload}</item></items></event></message>",
            bob.jid
        )
    );
    // A second resource with the same ver is not asked again, and gets the last item.
    let mut bob2 = Client::login(&server, "bob", "tablet");
    assert!(!caps_presence(&mut bob2, &ver, &features), "ver is cached");
    assert!(
        bob2.transcript
            .contains(&format!("<item id='m1'>{payload}</item>")),
        "{}",
        bob2.transcript
    );
    // A resource whose answer does not match its ver is not trusted: no events.
    let mut liar = Client::login(&server, "bob", "liar");
    assert!(caps_presence(&mut liar, "bm90IHRoZSBoYXNo", &features));
    // Without +notify in verified caps, nothing either.
    let mut plain = Client::login(&server, "bob", "plain");
    let bare = ["http://jabber.org/protocol/disco#info"];
    assert!(caps_presence(&mut plain, &caps_ver(&bare), &bare));
    let reply = publish(&mut alice, TEST_NODE, "m2", payload, "");
    assert!(reply.contains("type='result'"), "{reply}");
    bob.expect("<item id='m2'>");
    bob2.expect("<item id='m2'>");
    std::thread::sleep(QUIET);
    sync_without(&mut liar, "pubsub#event");
    sync_without(&mut plain, "pubsub#event");
    // Retraction with notify: bob hears it, the node is empty afterwards.
    alice.send(&format!("<iq type='set' id='ret'><pubsub xmlns='{PUBSUB}'><retract node='{TEST_NODE}' notify='true'><item id='m2'/></retract></pubsub></iq>"));
    let reply = alice.expect("id='ret'");
    assert!(reply.contains("type='result'"), "{reply}");
    let event = bob.expect("pubsub#event");
    assert!(
        event.contains(&format!(
            "<items node='{TEST_NODE}'><retract id='m2'/></items>"
        )),
        "{event}"
    );
    let got = items(&mut alice, "alice@localhost", TEST_NODE);
    assert!(
        got.contains(&format!("<items node='{TEST_NODE}'></items>")),
        "{got}"
    );
    alice.send(&format!("<iq type='set' id='ret2'><pubsub xmlns='{PUBSUB}'><retract node='{TEST_NODE}'><item id='m2'/></retract></pubsub></iq>"));
    assert!(alice.expect("id='ret2'").contains("<item-not-found"));
    // Published again; a fresh login of bob gets it as soon as its caps are known.
    publish(&mut alice, TEST_NODE, "m3", payload, "");
    drop(bob);
    let mut bob3 = Client::login(&server, "bob", "laptop");
    caps_presence(&mut bob3, &ver, &features);
    assert!(
        bob3.transcript.contains(&format!(
            "<items node='{TEST_NODE}'><item id='m3'>{payload}</item></items>"
        )),
        "{}",
        bob3.transcript
    );
}

#[test]
fn first_login_gets_last_item_once_caps_are_verified() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice");
    alice.send("<presence/>");
    let mut bob = ready(&server, "bob");
    bob.send("<presence/>");
    subscribe(&mut bob, &mut alice);
    publish(
        &mut alice,
        TEST_NODE,
        "only",
        "<x xmlns='urn:example'/>",
        "",
    );
    drop(bob);
    let mut bob = Client::login(&server, "bob", "new");
    let notify = format!("{TEST_NODE}+notify");
    let features = [notify.as_str()];
    assert!(caps_presence(&mut bob, &caps_ver(&features), &features));
    bob.expect("<item id='only'><x xmlns='urn:example'/></item>");
}

#[test]
fn publish_options_preconditions_and_configuration() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("carol");
    let mut alice = Client::online(&server, "alice", "r");
    let mut carol = Client::online(&server, "carol", "r");
    let open = options(&[("pubsub#access_model", "open")]);
    assert!(
        publish(&mut alice, OMEMO_NODE, "a", "<x xmlns='u'/>", &open).contains("type='result'")
    );
    let reply = publish(
        &mut alice,
        OMEMO_NODE,
        "b",
        "<x xmlns='u'/>",
        &options(&[("pubsub#access_model", "presence")]),
    );
    assert!(
        reply.contains("type='error'") && reply.contains("<conflict"),
        "{reply}"
    );
    assert!(
        reply.contains("<precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/>"),
        "{reply}"
    );
    // The same options again are fine.
    assert!(
        publish(&mut alice, OMEMO_NODE, "c", "<x xmlns='u'/>", &open).contains("type='result'")
    );
    // An unsupported model is a precondition that cannot be met, even for a new node.
    let reply = publish(
        &mut alice,
        "n2",
        "a",
        "<x xmlns='u'/>",
        &options(&[("pubsub#access_model", "roster")]),
    );
    assert!(reply.contains("<precondition-not-met"), "{reply}");
    // Owner configuration: read, change to whitelist, strangers are then kept out.
    alice.send(&format!("<iq type='get' id='cfg'><pubsub xmlns='{PUBSUB}#owner'><configure node='{OMEMO_NODE}'/></pubsub></iq>"));
    let form = alice.expect("id='cfg'");
    assert!(
        form.contains("<field var='pubsub#access_model' type='list-single'><value>open</value>"),
        "{form}"
    );
    alice.send(&format!("<iq type='set' id='cfg2'><pubsub xmlns='{PUBSUB}#owner'><configure node='{OMEMO_NODE}'><x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>whitelist</value></field></x></configure></pubsub></iq>"));
    assert!(alice.expect("id='cfg2'").contains("type='result'"));
    let got = items(&mut carol, "alice@localhost", OMEMO_NODE);
    assert!(
        got.contains("<not-allowed") && got.contains("<closed-node"),
        "{got}"
    );
    // Deletion: the node is gone for everybody.
    alice.send(&format!("<iq type='set' id='del'><pubsub xmlns='{PUBSUB}#owner'><delete node='{OMEMO_NODE}'/></pubsub></iq>"));
    assert!(alice.expect("id='del'").contains("type='result'"));
    assert!(items(&mut alice, "alice@localhost", OMEMO_NODE).contains("<item-not-found"));
    // Only the owner configures.
    carol.send(&format!("<iq type='set' id='del2' to='alice@localhost'><pubsub xmlns='{PUBSUB}#owner'><delete node='{TEST_NODE}'/></pubsub></iq>"));
    assert!(carol.expect("id='del2'").contains("<forbidden"));
}

#[test]
fn limits_on_nodes_items_and_payloads() {
    let server = TestServer::start("[pep]\nmax_nodes = 2\nmax_items = 3\nmax_item_bytes = 200\n");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "r");
    let max = options(&[("pubsub#max_items", "max")]);
    for id in ["1", "2", "3", "4"] {
        let reply = publish(&mut alice, "a", id, "<x xmlns='u'/>", &max);
        assert!(reply.contains("type='result'"), "{reply}");
    }
    let got = items(&mut alice, "alice@localhost", "a");
    assert!(got.contains("<items node='a'><item id='2'><x xmlns='u'/></item><item id='3'><x xmlns='u'/></item><item id='4'><x xmlns='u'/></item></items>"), "{got}");
    let reply = publish(
        &mut alice,
        "b",
        "1",
        "<x xmlns='u'/>",
        &options(&[("pubsub#max_items", "4")]),
    );
    assert!(reply.contains("<precondition-not-met"), "{reply}");
    let big = format!("<x xmlns='u'>{}</x>", "z".repeat(300));
    let reply = publish(&mut alice, "b", "1", &big, "");
    assert!(
        reply.contains("<not-acceptable") && reply.contains("<payload-too-big"),
        "{reply}"
    );
    assert!(publish(&mut alice, "b", "1", "<x xmlns='u'/>", "").contains("type='result'"));
    let reply = publish(&mut alice, "c", "1", "<x xmlns='u'/>", "");
    assert!(reply.contains("<not-allowed"), "{reply}");
    // Default max_items is 1.
    assert!(publish(&mut alice, "b", "2", "<y xmlns='u'/>", "").contains("type='result'"));
    let got = items(&mut alice, "alice@localhost", "b");
    assert!(
        got.contains("<items node='b'><item id='2'><y xmlns='u'/></item></items>"),
        "{got}"
    );
    let reply = {
        alice.send(&format!("<iq type='set' id='two'><pubsub xmlns='{PUBSUB}'><publish node='b'><item id='3'><x xmlns='u'/><y xmlns='u'/></item></publish></pubsub></iq>"));
        alice.expect("id='two'")
    };
    assert!(
        reply.contains("<bad-request") && reply.contains("<invalid-payload"),
        "{reply}"
    );
}

#[test]
fn legacy_private_bookmarks_appear_in_pep() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("carol");
    let mut alice = Client::online(&server, "alice", "r");
    let mut carol = Client::online(&server, "carol", "r");
    alice.send("<iq type='set' id='priv'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>\
        <conference name='Council' autojoin='true' jid='council@rooms.localhost'><nick>Alice</nick></conference>\
        <conference jid='garden@rooms.localhost'/></storage></query></iq>");
    assert!(alice.expect("id='priv'").contains("type='result'"));
    let got = items(&mut alice, "alice@localhost", "urn:xmpp:bookmarks:1");
    assert!(got.contains("<item id='council@rooms.localhost'><conference xmlns='urn:xmpp:bookmarks:1' autojoin='true' name='Council'><nick>Alice</nick></conference></item>"), "{got}");
    assert!(got.contains("<item id='garden@rooms.localhost'><conference xmlns='urn:xmpp:bookmarks:1' autojoin='false'/></item>"), "{got}");
    // Replaced as a whole by the next legacy store.
    alice.send("<iq type='set' id='priv2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>\
        <conference jid='garden@rooms.localhost'/></storage></query></iq>");
    assert!(alice.expect("id='priv2'").contains("type='result'"));
    let got = items(&mut alice, "alice@localhost", "urn:xmpp:bookmarks:1");
    assert!(!got.contains("council") && got.contains("garden"), "{got}");
    // Bookmarks are the owner's only.
    let got = items(&mut carol, "alice@localhost", "urn:xmpp:bookmarks:1");
    assert!(got.contains("<closed-node"), "{got}");
    // A XEP-0402 publish shows up in the legacy storage.
    let bookmark = "<conference xmlns='urn:xmpp:bookmarks:1' name='Tea' autojoin='true'><nick>Al</nick></conference>";
    let opts = options(&[
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ]);
    let reply = publish(
        &mut alice,
        "urn:xmpp:bookmarks:1",
        "tea@rooms.localhost",
        bookmark,
        &opts,
    );
    assert!(reply.contains("type='result'"), "{reply}");
    alice.send("<iq type='get' id='pg'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>");
    let got = alice.expect("id='pg'");
    assert!(got.contains("<storage xmlns='storage:bookmarks'><conference jid='garden@rooms.localhost' autojoin='false'></conference><conference jid='tea@rooms.localhost' autojoin='true' name='Tea'><nick>Al</nick></conference></storage>"), "{got}");
}

#[test]
fn pep_and_server_caps_are_advertised() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut client = Client::connect(&server);
    client.starttls();
    assert!(client.scram(Mechanism::ScramSha256, "alice", PASSWORD));
    client.open_stream();
    client.header();
    let features = client.stanza();
    let start = features
        .find("<c xmlns='http://jabber.org/protocol/caps'")
        .unwrap_or_else(|| panic!("{features}"));
    let c = &features[start..];
    let c = &c[..c.find("/>").unwrap() + 2];
    let ver = with_doc(c, |c| c.attribute("ver").unwrap().to_string());
    let node = with_doc(c, |c| c.attribute("node").unwrap().to_string());
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    client.expect("id='b'");
    // The server's disco#info, also under node#ver, hashes to the announced ver.
    client.send(&format!("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='{node}#{ver}'/></iq>"));
    let info = client.expect("id='d'");
    assert!(info.contains("type='result'"), "{info}");
    let string = with_doc(&info, |iq| {
        let query = iq.first_element_child().unwrap();
        let mut s = String::new();
        for id in query.children().filter(|c| c.has_tag_name("identity")) {
            s += &format!(
                "{}/{}//{}<",
                id.attribute("category").unwrap(),
                id.attribute("type").unwrap(),
                id.attribute("name").unwrap_or("")
            );
        }
        let mut features: Vec<&str> = query
            .children()
            .filter(|c| c.has_tag_name("feature"))
            .map(|f| f.attribute("var").unwrap())
            .collect();
        features.sort_unstable();
        for f in features {
            s += f;
            s.push('<');
        }
        s
    });
    assert_eq!(sha1_base64(&string), ver, "{string}");
    client.send("<iq type='get' id='a' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = client.expect("id='a'");
    for needle in [
        "<identity category='pubsub' type='pep'/>",
        "<feature var='http://jabber.org/protocol/pubsub#publish'/>",
        "<feature var='http://jabber.org/protocol/pubsub#publish-options'/>",
        "<feature var='http://jabber.org/protocol/pubsub#access-open'/>",
        "<feature var='http://jabber.org/protocol/pubsub#subscribe'/>",
        "<feature var='http://jabber.org/protocol/pubsub#retract-items'/>",
        "<feature var='http://jabber.org/protocol/pubsub#delete-nodes'/>",
        "<feature var='urn:xmpp:pep-vcard-conversion:0'/>",
        "<feature var='urn:xmpp:bookmarks-conversion:0'/>",
    ] {
        assert!(info.contains(needle), "{needle}: {info}");
    }
}

#[test]
fn avatars_follow_between_pep_and_vcard() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "r");
    // SHA-1("hello"), the XEP-0084 id and the XEP-0153 hash alike.
    let id = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    let data = "<data xmlns='urn:xmpp:avatar:data'>aGVsbG8=</data>";
    assert!(publish(&mut alice, "urn:xmpp:avatar:data", id, data, "").contains("type='result'"));
    let metadata = format!("<metadata xmlns='urn:xmpp:avatar:metadata'><info id='{id}' bytes='5' type='image/png'/></metadata>");
    assert!(
        publish(&mut alice, "urn:xmpp:avatar:metadata", id, &metadata, "")
            .contains("type='result'")
    );
    alice.send("<iq type='get' id='vc'><vCard xmlns='vcard-temp'/></iq>");
    let vcard = alice.expect("id='vc'");
    assert!(
        vcard.contains("<PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO>"),
        "{vcard}"
    );
    // A later login's presence carries the photo hash (XEP-0153).
    let mut other = Client::login(&server, "alice", "other");
    other.send("<presence/>");
    let own = alice.expect("from='alice@localhost/other'");
    assert!(own.contains(&format!("<photo>{id}</photo>")), "{own}");
    // Disabling the avatar removes the photo.
    let empty = "<metadata xmlns='urn:xmpp:avatar:metadata'/>";
    assert!(
        publish(&mut alice, "urn:xmpp:avatar:metadata", "off", empty, "").contains("type='result'")
    );
    alice.send("<iq type='get' id='vc2'><vCard xmlns='vcard-temp'/></iq>");
    assert!(!alice.expect("id='vc2'").contains("PHOTO"));
    // An image that does not hash to its id is not copied.
    publish(&mut alice, "urn:xmpp:avatar:data", "0000", data, "");
    let wrong = "<metadata xmlns='urn:xmpp:avatar:metadata'><info id='0000' bytes='5' type='image/png'/></metadata>";
    assert!(
        publish(&mut alice, "urn:xmpp:avatar:metadata", "0000", wrong, "")
            .contains("type='result'")
    );
    alice.send("<iq type='get' id='vc3'><vCard xmlns='vcard-temp'/></iq>");
    assert!(!alice.expect("id='vc3'").contains("PHOTO"));
    // The other way: a vCard photo becomes bob's PEP avatar.
    let mut bob = Client::online(&server, "bob", "r");
    bob.send("<iq type='set' id='vs'><vCard xmlns='vcard-temp'><FN>Bob</FN><PHOTO><TYPE>image/jpeg</TYPE><BINVAL>aGk=</BINVAL></PHOTO></vCard></iq>");
    assert!(bob.expect("id='vs'").contains("type='result'"));
    let got = items(&mut bob, "bob@localhost", "urn:xmpp:avatar:metadata");
    assert!(
        got.contains(
            "<info id='c22b5f9178342609428d6f51b2c5af4c0bde6a42' bytes='2' type='image/jpeg'/>"
        ),
        "{got}"
    );
    let got = items(&mut bob, "bob@localhost", "urn:xmpp:avatar:data");
    assert!(
        got.contains("<data xmlns='urn:xmpp:avatar:data'>aGk=</data>"),
        "{got}"
    );
}

/// Sends a (un)subscribe of `jid` (none when empty) to `owner`'s `node`; the answer.
fn subscription(client: &mut Client, action: &str, owner: &str, node: &str, jid: &str) -> String {
    let jid = if jid.is_empty() {
        String::new()
    } else {
        format!(" jid='{jid}'")
    };
    client.send(&format!(
        "<iq type='set' id='sub' to='{owner}'><pubsub xmlns='{PUBSUB}'><{action} node='{node}'{jid}/></pubsub></iq>"
    ));
    client.expect("id='sub'")
}

#[test]
fn explicit_subscriptions_follow_the_access_model() {
    let server = TestServer::start("");
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let mut alice = ready(&server, "alice");
    alice.send("<presence/>");
    let mut carol = Client::online(&server, "carol", "pc");
    let open = options(&[("pubsub#access_model", "open")]);
    let closed = options(&[("pubsub#access_model", "whitelist")]);
    publish(
        &mut alice,
        OMEMO_NODE,
        "current",
        "<list xmlns='eu.siacs.conversations.axolotl'/>",
        &open,
    );
    publish(
        &mut alice,
        TEST_NODE,
        "m",
        "<mood xmlns='http://jabber.org/protocol/mood'/>",
        "",
    );
    publish(
        &mut alice,
        "urn:example:secret",
        "s",
        "<x xmlns='urn:example'/>",
        &closed,
    );

    // Refusals: another's JID, no JID, the access models, a missing node.
    let got = subscription(
        &mut carol,
        "subscribe",
        "alice@localhost",
        OMEMO_NODE,
        "bob@localhost",
    );
    assert!(
        got.contains("<bad-request ") && got.contains("<invalid-jid "),
        "{got}"
    );
    let got = subscription(&mut carol, "subscribe", "alice@localhost", OMEMO_NODE, "");
    assert!(got.contains("<jid-required "), "{got}");
    let got = subscription(
        &mut carol,
        "subscribe",
        "alice@localhost",
        TEST_NODE,
        "carol@localhost",
    );
    assert!(
        got.contains("<not-authorized ") && got.contains("<presence-subscription-required "),
        "{got}"
    );
    let got = subscription(
        &mut carol,
        "subscribe",
        "alice@localhost",
        "urn:example:secret",
        "carol@localhost",
    );
    assert!(
        got.contains("<not-allowed ") && got.contains("<closed-node "),
        "{got}"
    );
    let got = subscription(
        &mut carol,
        "subscribe",
        "alice@localhost",
        "nothing",
        "carol@localhost",
    );
    assert!(got.contains("<item-not-found "), "{got}");

    // The open node: subscribed, and the last item follows at once (carol has no caps).
    let got = subscription(
        &mut carol,
        "subscribe",
        "alice@localhost",
        OMEMO_NODE,
        "carol@localhost/pc",
    );
    assert!(
        got.contains(&format!(
            "<subscription node='{OMEMO_NODE}' jid='carol@localhost/pc' subscription='subscribed'/>"
        )),
        "{got}"
    );
    let event = carol.expect("pubsub#event");
    assert!(event.contains("<item id='current'>"), "{event}");
    // New items and retractions with notify reach the subscriber.
    publish(
        &mut alice,
        OMEMO_NODE,
        "current",
        "<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list>",
        &open,
    );
    assert!(carol.expect("pubsub#event").contains("<device id='1'/>"));
    alice.send(&format!("<iq type='set' id='ret'><pubsub xmlns='{PUBSUB}'><retract node='{OMEMO_NODE}' notify='true'><item id='current'/></retract></pubsub></iq>"));
    assert!(alice.expect("id='ret'").contains("type='result'"));
    let event = carol.expect("pubsub#event");
    assert!(
        event.contains(&format!(
            "<items node='{OMEMO_NODE}'><retract id='current'/></items>"
        )),
        "{event}"
    );

    // Unsubscribing: only one's own, once; nothing more arrives.
    let got = subscription(
        &mut carol,
        "unsubscribe",
        "alice@localhost",
        OMEMO_NODE,
        "bob@localhost",
    );
    assert!(got.contains("<forbidden "), "{got}");
    let got = subscription(
        &mut carol,
        "unsubscribe",
        "alice@localhost",
        OMEMO_NODE,
        "carol@localhost/pc",
    );
    assert!(got.contains("type='result'"), "{got}");
    let got = subscription(
        &mut carol,
        "unsubscribe",
        "alice@localhost",
        OMEMO_NODE,
        "carol@localhost/pc",
    );
    assert!(
        got.contains("<unexpected-request ") && got.contains("<not-subscribed "),
        "{got}"
    );
    publish(
        &mut alice,
        OMEMO_NODE,
        "again",
        "<list xmlns='eu.siacs.conversations.axolotl'/>",
        &open,
    );
    std::thread::sleep(QUIET);
    sync_without(&mut carol, "pubsub#event");

    // A bare JID covers every resource; deleting the node tells them and ends it.
    let got = subscription(
        &mut carol,
        "subscribe",
        "alice@localhost",
        OMEMO_NODE,
        "carol@localhost",
    );
    assert!(got.contains("subscription='subscribed'"), "{got}");
    carol.expect("<item id='again'>");
    let mut carol2 = Client::online(&server, "carol", "phone");
    alice.send(&format!("<iq type='set' id='del'><pubsub xmlns='{PUBSUB}#owner'><delete node='{OMEMO_NODE}'/></pubsub></iq>"));
    assert!(alice.expect("id='del'").contains("type='result'"));
    let deleted = format!("<event xmlns='http://jabber.org/protocol/pubsub#event'><delete node='{OMEMO_NODE}'/></event>");
    assert!(carol.expect("pubsub#event").contains(&deleted));
    assert!(carol2.expect("pubsub#event").contains(&deleted));
    publish(
        &mut alice,
        OMEMO_NODE,
        "new",
        "<list xmlns='eu.siacs.conversations.axolotl'/>",
        &open,
    );
    std::thread::sleep(QUIET);
    sync_without(&mut carol, "pubsub#event");
}

#[test]
fn approval_sends_last_items_at_once_and_deletion_is_announced() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = ready(&server, "alice");
    alice.send("<presence/>");
    let payload = "<mood xmlns='http://jabber.org/protocol/mood'><happy/></mood>";
    publish(&mut alice, TEST_NODE, "m1", payload, "");
    let mut bob = ready(&server, "bob");
    let notify = format!("{TEST_NODE}+notify");
    let features = [notify.as_str()];
    caps_presence(&mut bob, &caps_ver(&features), &features);
    assert!(
        !bob.transcript.contains("<item id='m1'>"),
        "{}",
        bob.transcript
    );

    // Alice approves bob's request later: the item comes now, not at bob's next login.
    bob.send("<presence type='subscribe' to='alice@localhost'/>");
    alice.expect("type='subscribe'");
    alice.send("<presence type='subscribed' to='bob@localhost'/>");
    let event = bob.expect("pubsub#event");
    assert!(
        event.contains(&format!(
            "<items node='{TEST_NODE}'><item id='m1'>{payload}</item></items>"
        )),
        "{event}"
    );
    settle(&mut alice, &mut bob);

    // Deleting the node tells the interested contact.
    alice.send(&format!("<iq type='set' id='del'><pubsub xmlns='{PUBSUB}#owner'><delete node='{TEST_NODE}'/></pubsub></iq>"));
    assert!(alice.expect("id='del'").contains("type='result'"));
    let event = bob.expect("pubsub#event");
    assert_eq!(
        event,
        format!(
            "<message from='alice@localhost' to='{}' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'><delete node='{TEST_NODE}'/></event></message>",
            bob.jid
        )
    );
}
