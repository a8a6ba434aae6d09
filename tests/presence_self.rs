//! A user's presence reaches the resource that sent it (RFC 6121 §4.2.2, §4.4.2, §4.5.2: an
//! entity is implicitly subscribed to its own presence), `from` its full JID, before the
//! presence its initial presence brings back; across stream resumption (XEP-0198), while
//! inactive (XEP-0352), and whatever the user's block list (XEP-0191) or privacy lists
//! (XEP-0016) say: nobody blocks themself.

mod common;

use common::roster::*;
use common::*;
use hearth::sasl::Mechanism;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const NS_SM: &str = "urn:xmpp:sm:3";
const NS_PRIVACY: &str = "jabber:iq:privacy";
const ACTIVATE: &str = "<query xmlns='jabber:iq:privacy'><active name='none'/></query>";

/// What a client reads in a presence stanza.
#[derive(Debug, PartialEq, Eq)]
struct Presence {
    from: String,
    ty: Option<String>,
    show: Option<String>,
    status: Option<String>,
    priority: Option<String>,
}

/// Parses `xml`, which must be a presence stanza.
fn presence(xml: &str) -> Presence {
    with_doc(xml, |p| {
        assert!(p.has_tag_name(("jabber:client", "presence")), "{xml}");
        let child = |name: &str| {
            p.children()
                .find(|c| c.has_tag_name(("jabber:client", name)))
                .map(|c| c.text().unwrap_or_default().to_string())
        };
        Presence {
            from: p.attribute("from").unwrap_or_default().to_string(),
            ty: p.attribute("type").map(str::to_string),
            show: child("show"),
            status: child("status"),
            priority: child("priority"),
        }
    })
}

/// The next stanza that is not a XEP-0198 ack request or answer.
fn next_stanza(client: &mut Client) -> String {
    loop {
        let xml = client.stanza();
        let sm = with_doc(&xml, |n| n.tag_name().namespace() == Some(NS_SM));
        if !sm {
            return xml;
        }
    }
}

/// The next stanza, which must be a presence.
fn next_presence(client: &mut Client) -> Presence {
    presence(&next_stanza(client))
}

fn available(from: &str, show: Option<&str>, status: Option<&str>, prio: &str) -> Presence {
    Presence {
        from: from.to_string(),
        ty: None,
        show: show.map(str::to_string),
        status: status.map(str::to_string),
        priority: (!prio.is_empty()).then(|| prio.to_string()),
    }
}

/// Online with the roster requested (so it gets pushes) and everything read.
fn ready(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut client = Client::online(server, user, resource);
    roster_get(&mut client);
    client.sync();
    client
}

#[test]
fn initial_presence_is_echoed_to_its_only_resource_rfc6121_4_2_2() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::login(&server, "alice", "phone");
    alice
        .send("<presence><show>away</show><status>lunch</status><priority>3</priority></presence>");
    assert_eq!(
        next_presence(&mut alice),
        available("alice@localhost/phone", Some("away"), Some("lunch"), "3")
    );
    alice.sync();
    alice.expect_silence(QUIET);
}

#[test]
fn initial_presence_reaches_both_resources_then_the_others_and_contacts_rfc6121_4_2_2() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut phone = ready(&server, "alice", "phone");
    let mut bob = ready(&server, "bob", "b");
    subscribe(&mut phone, &mut bob);
    subscribe(&mut bob, &mut phone);
    bob.send("<presence><show>chat</show></presence>");
    phone.expect("from='bob@localhost/b'");
    settle(&mut phone, &mut bob);

    let mut desk = Client::login(&server, "alice", "desk");
    desk.send("<presence><show>dnd</show><status>busy</status><priority>7</priority></presence>");
    let sent = available("alice@localhost/desk", Some("dnd"), Some("busy"), "7");
    // The echo first, then the user's other resource, then the contact's probe answer.
    assert_eq!(next_presence(&mut desk), sent);
    assert_eq!(
        next_presence(&mut desk),
        available("alice@localhost/phone", None, None, "")
    );
    assert_eq!(
        next_presence(&mut desk),
        available("bob@localhost/b", Some("chat"), None, "")
    );
    desk.sync();
    assert_eq!(next_presence(&mut phone), sent);
    assert_eq!(next_presence(&mut bob), sent);
    phone.sync();
    bob.sync();
}

#[test]
fn an_update_is_echoed_to_every_resource_rfc6121_4_4_2() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut phone = Client::online(&server, "alice", "phone");
    let mut desk = Client::online(&server, "alice", "desk");
    assert_eq!(
        next_presence(&mut phone),
        available("alice@localhost/desk", None, None, "")
    );
    desk.sync();
    desk.send(
        "<presence><show>xa</show><status>gone fishing</status><priority>-1</priority></presence>",
    );
    let update = available(
        "alice@localhost/desk",
        Some("xa"),
        Some("gone fishing"),
        "-1",
    );
    assert_eq!(next_presence(&mut desk), update);
    assert_eq!(next_presence(&mut phone), update);
    desk.sync();
    phone.sync();
}

#[test]
fn unavailable_reaches_the_sender_and_the_other_resources_rfc6121_4_5_2() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut phone = Client::online(&server, "alice", "phone");
    let mut desk = Client::online(&server, "alice", "desk");
    next_presence(&mut phone);
    desk.sync();
    desk.send("<presence type='unavailable'><status>bye</status></presence>");
    let gone = Presence {
        from: "alice@localhost/desk".into(),
        ty: Some("unavailable".into()),
        show: None,
        status: Some("bye".into()),
        priority: None,
    };
    assert_eq!(next_presence(&mut desk), gone);
    assert_eq!(next_presence(&mut phone), gone);
    // The stream stays open; the session no longer being available, nothing is echoed again.
    desk.send("<presence type='unavailable'/>");
    desk.sync();
    desk.expect_silence(QUIET);
    phone.expect_silence(QUIET);
}

#[test]
fn a_resumed_session_sees_its_echo_once_and_its_updates_as_before_xep0198() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut desk = Client::online(&server, "alice", "desk");
    let mut phone = Client::login(&server, "alice", "phone");
    phone.send(&format!("<enable xmlns='{NS_SM}' resume='true'/>"));
    let id = with_doc(&phone.stanza(), |n| n.attribute("id").unwrap().to_string());
    phone.send("<presence><status>on the bus</status></presence>");
    let initial = available("alice@localhost/phone", None, Some("on the bus"), "");
    let desk_online = available("alice@localhost/desk", None, None, "");
    assert_eq!(next_presence(&mut phone), initial);
    assert_eq!(next_presence(&mut phone), desk_online);
    assert_eq!(next_presence(&mut desk), initial);
    // The connection drops before the client acknowledged any of it.
    drop(phone);
    server.wait_for_log("session kept for resumption");
    desk.send("<presence><show>away</show></presence>");
    assert_eq!(
        next_presence(&mut desk),
        available("alice@localhost/desk", Some("away"), None, "")
    );

    let mut phone = Client::connect(&server);
    phone.starttls();
    assert!(phone.scram(Mechanism::ScramSha256, "alice", PASSWORD));
    phone.open_stream();
    phone.header();
    phone.stanza();
    phone.send(&format!("<resume xmlns='{NS_SM}' previd='{id}' h='0'/>"));
    assert!(phone.stanza().starts_with("<resumed"));
    // The unacknowledged echo and desk presence again, then what came while parked: each once.
    assert_eq!(next_presence(&mut phone), initial);
    assert_eq!(next_presence(&mut phone), desk_online);
    assert_eq!(
        next_presence(&mut phone),
        available("alice@localhost/desk", Some("away"), None, "")
    );
    phone.sync();
    // Still available as the same resource: updates are echoed as before the drop.
    phone.send("<presence><status>home</status></presence>");
    let home = available("alice@localhost/phone", None, Some("home"), "");
    assert_eq!(next_presence(&mut phone), home);
    assert_eq!(next_presence(&mut desk), home);
    // The other resource never saw the phone go away.
    desk.sync();
    assert!(
        !desk.transcript.contains("unavailable"),
        "{}",
        desk.transcript
    );
}

#[test]
fn an_inactive_client_gets_its_own_echo_and_its_other_resources_wait_xep0352() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut phone = Client::online(&server, "alice", "phone");
    let mut desk = Client::online(&server, "alice", "desk");
    next_presence(&mut phone);
    phone.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    phone.sync();
    desk.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    desk.sync();
    // The inactive sender learns at once that its presence went out…
    for n in 1..=3 {
        desk.send(&format!("<presence><status>{n}</status></presence>"));
        assert_eq!(
            next_presence(&mut desk),
            available("alice@localhost/desk", None, Some(&n.to_string()), "")
        );
    }
    desk.sync();
    // …while the user's other inactive resource gets only the latest, once active.
    phone.expect_silence(QUIET);
    phone.send("<active xmlns='urn:xmpp:csi:0'/>");
    assert_eq!(
        next_presence(&mut phone),
        available("alice@localhost/desk", None, Some("3"), "")
    );
    phone.sync();
}

/// Sends a block or privacy request and reads its result and, in whatever order, the push it
/// causes to the sender (a child of `push_ns`), which is acknowledged.
fn request(client: &mut Client, id: &str, payload: &str, push_ns: Option<&str>) {
    client.send(&format!("<iq type='set' id='{id}'>{payload}</iq>"));
    let (mut answered, mut pushed) = (false, push_ns.is_none());
    while !(answered && pushed) {
        let xml = next_stanza(client);
        let (ty, iq_id, ns) = with_doc(&xml, |iq| {
            assert!(iq.has_tag_name(("jabber:client", "iq")), "{xml}");
            let ns = iq
                .first_element_child()
                .and_then(|c| c.tag_name().namespace().map(str::to_string));
            let attr = |name| iq.attribute(name).unwrap_or_default().to_string();
            (attr("type"), attr("id"), ns)
        });
        if iq_id == id {
            assert_eq!(ty, "result", "{xml}");
            answered = true;
        } else {
            assert_eq!((ty.as_str(), ns.as_deref()), ("set", push_ns), "{xml}");
            client.send(&format!("<iq type='result' id='{iq_id}'/>"));
            pushed = true;
        }
    }
}

/// phone and desk of alice online with alice's lists applied to both; the desk's update and
/// the phone's initial presence still reach every resource of alice's.
fn own_resources_hear_each_other(server: &TestServer, lists: &[(&str, &str, Option<&str>)]) {
    server.add_user("alice");
    let mut phone = Client::online(server, "alice", "phone");
    for (id, payload, push_ns) in lists {
        request(&mut phone, id, payload, *push_ns);
    }
    let mut desk = Client::login(server, "alice", "desk");
    if lists
        .iter()
        .any(|(_, _, push_ns)| *push_ns == Some(NS_PRIVACY))
    {
        request(&mut desk, "activate", ACTIVATE, None);
    }
    desk.send("<presence><show>away</show></presence>");
    let desk_away = available("alice@localhost/desk", Some("away"), None, "");
    assert_eq!(next_presence(&mut desk), desk_away);
    assert_eq!(
        next_presence(&mut desk),
        available("alice@localhost/phone", None, None, "")
    );
    assert_eq!(next_presence(&mut phone), desk_away);
    desk.send("<presence><show>dnd</show></presence>");
    let desk_dnd = available("alice@localhost/desk", Some("dnd"), None, "");
    assert_eq!(next_presence(&mut desk), desk_dnd);
    assert_eq!(next_presence(&mut phone), desk_dnd);
    phone.send("<presence><status>still here</status></presence>");
    let phone_update = available("alice@localhost/phone", None, Some("still here"), "");
    assert_eq!(next_presence(&mut phone), phone_update);
    assert_eq!(next_presence(&mut desk), phone_update);
    phone.sync();
    desk.sync();
}

#[test]
fn a_privacy_list_denying_everything_never_hides_the_user_from_themself_xep0016() {
    let server = TestServer::start("");
    own_resources_hear_each_other(
        &server,
        &[
            (
                "list",
                "<query xmlns='jabber:iq:privacy'><list name='none'>\
                 <item action='deny' order='1'/></list></query>",
                Some(NS_PRIVACY),
            ),
            ("activate", ACTIVATE, None),
        ],
    );
}

#[test]
fn blocking_the_own_domain_or_jid_never_hides_the_user_from_themself_xep0191() {
    let server = TestServer::start("");
    own_resources_hear_each_other(
        &server,
        &[(
            "block",
            "<block xmlns='urn:xmpp:blocking'><item jid='localhost'/>\
             <item jid='alice@localhost'/><item jid='alice@localhost/desk'/></block>",
            Some("urn:xmpp:blocking"),
        )],
    );
}
