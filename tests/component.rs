//! External components (XEP-0114): a fake gateway written here connects to the component
//! port of a real server, serves `irc.localhost`, and exchanges stanzas with local users.

mod common;

use common::component::*;
use common::*;
use std::time::Duration;

const GATEWAY: &str = "irc.localhost";
const ROOM: &str = "#chan%irc.example@irc.localhost";
const IRC_USER: &str = "bob%irc.example@irc.localhost";

fn server_with_gateway(extra: &str) -> TestServer {
    let server = TestServer::start(&config(&[GATEWAY], extra));
    server.add_user("alice");
    server
}

/// The next stanza the component gets that is a `name` (skipping the server's queries).
fn component_gets(component: &mut Client, name: &str) -> Element {
    component.expect_where(|s| s.name() == name && s.ns() == NS_ACCEPT)
}

/// XEP-0114 §3: the handshake with the right secret is answered with an empty
/// `<handshake/>`; a port is bound only when a component is configured.
#[test]
fn handshake_with_the_secret_connects() {
    let server = TestServer::start(&config(&[GATEWAY, "bot.localhost"], ""));
    let _component = connect(&server, GATEWAY);
    server.wait_for_log(&format!("component {GATEWAY}: connected"));
    // The handshake may name the stream's namespace itself (biboumi's does).
    let (mut bot, id) = open(&server, "bot.localhost");
    bot.send(&format!(
        "<handshake xmlns='{NS_ACCEPT}'>{}</handshake>",
        handshake(&id.unwrap(), SECRET)
    ));
    assert!(bot.receive().is("handshake", NS_ACCEPT));
    let plain = TestServer::start("");
    assert!(plain.component.is_none(), "no [[components]], no port");
}

/// XEP-0114 §3: a wrong secret is `<not-authorized/>`, a domain no component is configured
/// for `<host-unknown/>`, a header in another namespace `<invalid-namespace/>`.
#[test]
fn wrong_secret_unknown_domain_and_namespace_are_refused() {
    let server = server_with_gateway("");
    let mut wrong = try_connect(&server, GATEWAY, "not the secret");
    wrong.expect_stream_error("not-authorized");
    let (mut unknown, _) = open(&server, "other.localhost");
    unknown.expect_stream_error("host-unknown");
    let (mut server_domain, _) = open(&server, DOMAIN);
    server_domain.expect_stream_error("host-unknown");
    let mut client_ns = Client::connect_to(server.component.unwrap(), server.tls_client_config());
    client_ns.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{GATEWAY}'>"
    ));
    client_ns.expect_stream_error("invalid-namespace");
    // Stanzas before the handshake are not taken.
    let (mut early, _) = open(&server, GATEWAY);
    early.send(&format!(
        "<message from='x@{GATEWAY}' to='alice@localhost'><body>early</body></message>"
    ));
    early.expect_stream_error("not-authorized");
}

/// A second connection for a connected domain is refused with `<conflict/>` and the first
/// keeps serving it; with `component.replace` it takes over and the first is closed.
#[test]
fn a_second_connection_conflicts_or_replaces() {
    let server = server_with_gateway("");
    let mut first = connect(&server, GATEWAY);
    let mut second = try_connect(&server, GATEWAY, SECRET);
    second.expect_stream_error("conflict");
    let mut alice = Client::online(&server, "alice", "phone");
    alice.send(&format!(
        "<message to='{ROOM}' type='groupchat'><body>still there</body></message>"
    ));
    let got = component_gets(&mut first, "message");
    assert_eq!(got.child_text("body", NS_ACCEPT), Some("still there"));

    let server = server_with_gateway("replace = true");
    let mut first = connect(&server, GATEWAY);
    let mut second = connect(&server, GATEWAY);
    first.expect_stream_error("conflict");
    let mut alice = Client::online(&server, "alice", "phone");
    alice.send(&format!(
        "<message to='{ROOM}' type='groupchat'><body>to the new one</body></message>"
    ));
    let got = component_gets(&mut second, "message");
    assert_eq!(got.child_text("body", NS_ACCEPT), Some("to the new one"));
}

/// Everything addressed to the component's domain or a JID in it goes to the component,
/// with the sender's full JID; what the component sends from its domain reaches the user.
#[test]
fn stanzas_flow_both_ways() {
    let server = server_with_gateway("");
    let mut component = connect(&server, GATEWAY);
    let mut alice = Client::online(&server, "alice", "phone");
    alice.send(&format!(
        "<message to='{IRC_USER}' type='chat' id='m1'><body>hi bob</body></message>"
    ));
    let got = component_gets(&mut component, "message");
    assert!(got.is_from(&alice.jid), "{got}");
    assert_eq!(got.attr("to"), Some(IRC_USER));
    assert_eq!(got.child_text("body", NS_ACCEPT), Some("hi bob"));

    alice.send(&format!(
        "<iq type='get' id='v1' to='{GATEWAY}'><query xmlns='jabber:iq:version'/></iq>"
    ));
    let iq = component_gets(&mut component, "iq");
    assert_eq!(iq.attr("id"), Some("v1"));
    assert!(iq.is_from(&alice.jid), "{iq}");
    component.send(&format!(
        "<iq type='result' id='v1' from='{GATEWAY}' to='{}'><query xmlns='jabber:iq:version'>\
         <name>fake</name></query></iq>",
        alice.jid
    ));
    let answer = alice.expect_iq_result("v1");
    assert!(answer.is_from(GATEWAY), "{answer}");

    component.send(&format!(
        "<message from='{IRC_USER}' to='{}' type='chat'><body>hi alice</body></message>",
        alice.jid
    ));
    let got = alice.expect_message_from(IRC_USER);
    assert_eq!(got.child_text("body", CLIENT_NS), Some("hi alice"));
    // To the bare JID too, as any contact would (RFC 6121 §8.5.2).
    component.send(&format!(
        "<message from='{ROOM}/bob' to='alice@{DOMAIN}' type='chat'><body>bare</body></message>"
    ));
    let got = alice.expect_message_from(&format!("{ROOM}/bob"));
    assert_eq!(got.child_text("body", CLIENT_NS), Some("bare"));
    // A room's presence to the user's full JID (a MUC join's answer) reaches it.
    component.send(&format!(
        "<presence from='{ROOM}/bob' to='{}'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='participant'/></x></presence>",
        alice.jid
    ));
    let presence = alice.expect_presence_from(&format!("{ROOM}/bob"));
    assert_eq!(presence.attr("type"), None);
    // A stanza naming the component namespace itself reaches the user in the client one.
    component.send(&format!(
        "<message xmlns='{NS_ACCEPT}' from='{IRC_USER}' to='{}' type='chat'>\
         <body>explicit</body></message>",
        alice.jid
    ));
    let got = alice.expect_message_from(IRC_USER);
    assert_eq!(got.child_text("body", CLIENT_NS), Some("explicit"), "{got}");
}

/// A component may send only from its own domain (the issue's "never speak for a domain
/// that is not its own"): anything else is `<invalid-from/>` and nothing reaches the user.
#[test]
fn a_component_cannot_speak_for_another_domain() {
    for from in [
        "admin@localhost",
        "localhost",
        "x@other.localhost",
        "x@sub.irc.localhost",
    ] {
        let server = server_with_gateway("");
        let mut alice = Client::online(&server, "alice", "phone");
        let mut component = connect(&server, GATEWAY);
        component.send(&format!(
            "<message from='{from}' to='{}' type='chat'><body>forged</body></message>",
            alice.jid
        ));
        component.expect_stream_error("invalid-from");
        alice.expect_silence(patience(Duration::from_millis(300)));
    }
    let server = server_with_gateway("");
    let mut component = connect(&server, GATEWAY);
    component.send("<message to='alice@localhost' type='chat'><body>no from</body></message>");
    component.expect_stream_error("invalid-from");
}

/// While the component is away, messages and iq requests to its domain bounce with
/// `service-unavailable` and presence is dropped; it comes back, and they reach it again.
#[test]
fn disconnected_component_bounces_then_reconnects() {
    let server = server_with_gateway("");
    let mut alice = Client::online(&server, "alice", "phone");
    let bounced = |alice: &mut Client, id: &str| {
        alice.send(&format!(
            "<message to='{IRC_USER}' type='chat' id='{id}'><body>anyone?</body></message>"
        ));
        let error = alice.expect_where(|s| s.name() == "message" && s.attr("id") == Some(id));
        error.assert_error("cancel", "service-unavailable");
        assert!(error.is_from(IRC_USER), "{error}");
        alice.send(&format!(
            "<iq type='get' id='{id}-iq' to='{GATEWAY}'><query xmlns='jabber:iq:version'/></iq>"
        ));
        alice.expect_iq_error(&format!("{id}-iq"), "cancel", "service-unavailable");
        alice.send(&format!("<presence to='{ROOM}/alice'/>"));
        alice.expect_silence(patience(Duration::from_millis(300)));
    };
    bounced(&mut alice, "never");

    let mut component = connect(&server, GATEWAY);
    component.send("</stream:stream>");
    assert_eq!(component.next(), Got::Close);
    server.wait_for_log(&format!("component {GATEWAY}: disconnected"));
    bounced(&mut alice, "gone");

    let mut component = connect(&server, GATEWAY);
    alice.send(&format!(
        "<message to='{IRC_USER}' type='chat'><body>back?</body></message>"
    ));
    let got = component_gets(&mut component, "message");
    assert_eq!(got.child_text("body", NS_ACCEPT), Some("back?"));
}

/// A component that vanishes leaves its entities unavailable to the users who had their
/// presence (RFC 6121 §4.3: presence is only as good as the path it came by).
#[test]
fn a_vanished_component_leaves_its_entities_unavailable() {
    let server = server_with_gateway("");
    let mut alice = Client::online(&server, "alice", "phone");
    let mut component = connect(&server, GATEWAY);
    let occupant = format!("{ROOM}/bob");
    component.send(&format!("<presence from='{occupant}' to='{}'/>", alice.jid));
    alice.expect_presence_from(&occupant);
    drop(component);
    let gone = alice.expect_presence_from(&occupant);
    assert_eq!(gone.attr("type"), Some("unavailable"));
}

/// XEP-0030 §4: the server's items list each connected component with the name of the
/// identity it reported; one that left is no longer listed.
#[test]
fn disco_items_list_connected_components() {
    let server = server_with_gateway("");
    let mut alice = Client::online(&server, "alice", "phone");
    let items = |alice: &mut Client, id: &str| -> Vec<(String, Option<String>)> {
        alice.send(&format!(
            "<iq type='get' id='{id}' to='{DOMAIN}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>"
        ));
        let result = alice.expect_iq_result(id);
        result
            .child("query", NS_DISCO_ITEMS)
            .children()
            .iter()
            .map(|i| {
                (
                    i.attr("jid").unwrap().to_owned(),
                    i.attr("name").map(str::to_owned),
                )
            })
            .collect()
    };
    assert!(!items(&mut alice, "i1")
        .iter()
        .any(|(jid, _)| jid == GATEWAY));
    let mut component = connect_named(&server, GATEWAY, "IRC gateway");
    alice.sync();
    // The disco#info answer was taken before anything else the component sent.
    component.send(&format!(
        "<message from='{IRC_USER}' to='{}'><body>x</body></message>",
        alice.jid
    ));
    alice.expect_message_from(IRC_USER);
    let listed = items(&mut alice, "i2");
    assert!(
        listed.contains(&(GATEWAY.to_owned(), Some("IRC gateway".to_owned()))),
        "{listed:?}"
    );
    component.send("</stream:stream>");
    server.wait_for_log(&format!("component {GATEWAY}: disconnected"));
    assert!(!items(&mut alice, "i3")
        .iter()
        .any(|(jid, _)| jid == GATEWAY));
}

/// RFC 6121 §3 toward a gateway JID, as toward any contact elsewhere: the subscription
/// request reaches the component from the user's bare JID, its approval updates the roster
/// and its presence reaches the user; the user's presence then goes to it.
#[test]
fn subscriptions_and_presence_with_gateway_contacts() {
    let server = server_with_gateway("");
    let mut alice = Client::online(&server, "alice", "phone");
    let mut component = connect(&server, GATEWAY);
    // Roster pushes go to resources that asked for the roster (RFC 6121 §2.1.6).
    common::roster::roster_get(&mut alice);
    alice.send(&format!("<presence to='{IRC_USER}' type='subscribe'/>"));
    let request = component_gets(&mut component, "presence");
    assert_eq!(request.attr("type"), Some("subscribe"));
    assert!(request.is_from(&format!("alice@{DOMAIN}")), "{request}");
    component.send(&format!(
        "<presence from='{IRC_USER}' to='alice@{DOMAIN}' type='subscribed'/>"
    ));
    let push = alice.expect_where(|s| {
        s.name() == "iq"
            && s.find("query", ROSTER_NS)
                .and_then(|q| q.find("item", ROSTER_NS))
                .is_some_and(|i| i.attr("subscription") == Some("to"))
    });
    let item = push.child("query", ROSTER_NS).child("item", ROSTER_NS);
    assert_eq!(item.attr("jid"), Some(IRC_USER));
    component.send(&format!(
        "<presence from='{IRC_USER}/irc' to='alice@{DOMAIN}'/>"
    ));
    alice.expect_presence_from(&format!("{IRC_USER}/irc"));
    // The gateway's user subscribes back and alice approves: her presence goes to it.
    component.send(&format!(
        "<presence from='{IRC_USER}' to='alice@{DOMAIN}' type='subscribe'/>"
    ));
    alice.expect_where(|s| s.name() == "presence" && s.attr("type") == Some("subscribe"));
    alice.send(&format!("<presence to='{IRC_USER}' type='subscribed'/>"));
    let approved = component_gets(&mut component, "presence");
    assert_eq!(approved.attr("type"), Some("subscribed"), "{approved}");
    alice.send("<presence><status>here</status></presence>");
    let presence = component.expect_where(|s| {
        s.name() == "presence"
            && s.attr("type").is_none()
            && s.child_text("status", NS_ACCEPT) == Some("here")
    });
    assert!(presence.is_from(&alice.jid), "{presence}");
    assert_eq!(presence.attr("to"), Some(IRC_USER));
    // Another resource's initial presence probes the contact (RFC 6121 §4.3).
    let _tablet = Client::online(&server, "alice", "tablet");
    let probe =
        component.expect_where(|s| s.name() == "presence" && s.attr("type") == Some("probe"));
    assert_eq!(probe.attr("to"), Some(IRC_USER));
}

/// Limits: a stanza over `component.max_stanza_bytes` ends the stream (`policy-violation`);
/// a component sending faster than its own `stanzas_per_sec` is read no faster (logged
/// once) and loses nothing.
#[test]
fn a_component_is_held_to_its_limits() {
    let server = TestServer::start(&format!(
        "[component]\nlisten = [\"127.0.0.1:0\"]\nmax_stanza_bytes = 4096\n\
         [[components]]\ndomain = \"{GATEWAY}\"\nsecret = \"{SECRET}\"\n\
         stanzas_per_sec = 5\nstanza_burst = 1\n"
    ));
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "phone");
    let mut component = connect(&server, GATEWAY);
    for n in 0..4 {
        component.send(&format!(
            "<message from='{IRC_USER}' to='{}' type='chat'><body>n{n}</body></message>",
            alice.jid
        ));
    }
    for n in 0..4 {
        let got = alice.expect_message_from(IRC_USER);
        assert_eq!(
            got.child_text("body", CLIENT_NS),
            Some(format!("n{n}").as_str())
        );
    }
    server.wait_for_log(&format!(
        "component {GATEWAY}: sending faster than its stanzas_per_sec (5), reading paused"
    ));
    let big = "x".repeat(5000);
    component.send(&format!(
        "<message from='{IRC_USER}' to='{}'><body>{big}</body></message>",
        alice.jid
    ));
    component.expect_stream_error("policy-violation");
}
