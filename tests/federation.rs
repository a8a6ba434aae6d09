//! Federation (RFC 6120 server-to-server streams, XEP-0220 dialback): two real servers,
//! `a.test` on 127.0.0.2 and `b.test` on 127.0.0.3, each with a self-signed certificate and
//! a static route to the other, and clients on each.

mod common;

use common::federation::{pair, A, B};
use common::*;

const NS_PING: &str = "urn:xmpp:ping";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// RFC 6120 §2.5 / §10.4: a message to a user of another domain reaches that user with
/// the sender's full JID, both ways, over dialback-authenticated streams.
#[test]
fn messages_cross_both_ways() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    b.add_user("bob");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut bob = Client::online(&b, "bob", "desk");
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='m1'><body>hi bob</body></message>"
    ));
    let got = bob.expect_message_from(&alice.jid);
    assert_eq!(got.attr("to"), Some(format!("bob@{B}").as_str()));
    assert_eq!(got.child_text("body", "jabber:client"), Some("hi bob"));
    bob.send(&format!(
        "<message to='{}' type='chat' id='m2'><body>hi alice</body></message>",
        alice.jid
    ));
    let got = alice.expect_message_from(&bob.jid);
    assert_eq!(got.child_text("body", "jabber:client"), Some("hi alice"));
    a.wait_for_log(&format!("s2s {A} → {B}: connected"));
    b.wait_for_log(&format!(
        "s2s {A} → {B}: incoming stream authenticated (dialback)"
    ));
}

/// An iq to the other server (XEP-0199 ping, XEP-0030 disco#info) is answered by it.
#[test]
fn iq_to_the_other_server_is_answered() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    alice.send(&format!(
        "<iq type='get' id='p1' to='{B}'><ping xmlns='{NS_PING}'/></iq>"
    ));
    let result = alice.expect_iq_result("p1");
    assert!(result.is_from(B), "{result}");
    alice.send(&format!(
        "<iq type='get' id='d1' to='{B}'><query xmlns='{NS_DISCO_INFO}'/></iq>"
    ));
    let info = alice.expect_iq_result("d1");
    let query = info.child("query", NS_DISCO_INFO);
    assert!(
        query
            .children()
            .iter()
            .any(|c| c.name() == "feature" && c.attr("var") == Some(NS_PING)),
        "{info}"
    );
    drop(b);
}

/// A remote user may not read a local account's private data: a roster request from
/// another server gets an error, never the roster of a local namesake.
#[test]
fn a_remote_user_gets_no_local_namesakes_roster() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    b.add_user("alice");
    let mut local_alice = Client::online(&a, "alice", "phone");
    local_alice.send("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='secret@x.test'/></query></iq>");
    local_alice.expect_iq_result("r1");
    let mut remote_alice = Client::online(&b, "alice", "desk");
    remote_alice.send(&format!(
        "<iq type='get' id='r2' to='alice@{A}'><query xmlns='jabber:iq:roster'/></iq>"
    ));
    let answer = remote_alice.expect_iq("r2");
    assert_eq!(answer.attr("type"), Some("error"), "{answer}");
    assert!(!answer.xml().contains("secret@x.test"), "{answer}");
    // Nor change anything of theirs: a vCard set is refused, the local one unchanged.
    local_alice
        .send("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Local</FN></vCard></iq>");
    local_alice.expect_iq_result("v1");
    remote_alice.send(&format!(
        "<iq type='set' id='v2' to='alice@{A}'><vCard xmlns='vcard-temp'><FN>Impostor</FN></vCard></iq>"
    ));
    remote_alice.expect_iq_error("v2", "auth", "forbidden");
    remote_alice.send(&format!(
        "<iq type='get' id='v3' to='alice@{A}'><vCard xmlns='vcard-temp'/></iq>"
    ));
    let card = remote_alice.expect_iq_result("v3");
    assert_eq!(
        card.child("vCard", "vcard-temp")
            .child_text("FN", "vcard-temp"),
        Some("Local"),
        "{card}"
    );
}

/// A server that cannot be reached: the message bounces to its sender with
/// `remote-server-timeout` (RFC 6120 §8.3.3.17) instead of vanishing.
#[test]
fn an_unreachable_peer_bounces_messages() {
    // A route to a port nobody listens on (bound and closed here).
    let dead = std::net::TcpListener::bind("127.0.0.4:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let a = TestServer::start_domain(
        A,
        "127.0.0.2",
        &format!(
            "[s2s]\nenabled = true\nlisten = [\"127.0.0.2:0\"]\nqueue_timeout_secs = 2\n\
             [s2s.routes]\n\"gone.test\" = \"127.0.0.4:{port}\"\n"
        ),
    );
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    alice.send("<message to='bob@gone.test' type='chat' id='lost'><body>anyone?</body></message>");
    let error = alice.expect_where(|e| e.name() == "message" && e.attr("id") == Some("lost"));
    error.assert_error("wait", "remote-server-timeout");
    assert!(error.is_from("bob@gone.test"), "{error}");
}

/// With federation off (the default) another domain is `remote-server-not-found`.
#[test]
fn without_federation_other_domains_are_not_found() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "phone");
    alice.send("<message to='bob@elsewhere.test' type='chat' id='x'><body>hi</body></message>");
    let error = alice.expect_where(|e| e.name() == "message" && e.attr("id") == Some("x"));
    error.assert_error("cancel", "remote-server-not-found");
}

/// XEP-0220 §2.1: a peer that proves its domain with the key its authoritative server
/// confirms is accepted, and its users' stanzas are delivered.
#[test]
fn a_peer_with_a_verified_key_is_accepted() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut peer = common::federation::authenticated_peer(&a, &b);
    peer.send(&format!(
        "<message from='bob@{B}/x' to='alice@{A}' type='chat' id='f1'><body>via a fake peer</body></message>"
    ));
    let got = alice.expect_message_from(&format!("bob@{B}/x"));
    assert_eq!(
        got.child_text("body", "jabber:client"),
        Some("via a fake peer")
    );
}

/// RFC 6120 §4.9.3.9: a stanza whose `from` is not a domain the stream authenticated
/// ends the stream with `invalid-from`, and nothing reaches the user.
#[test]
fn a_spoofed_from_domain_is_refused() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut peer = common::federation::authenticated_peer(&a, &b);
    peer.send(&format!(
        "<message from='mallory@c.test/x' to='alice@{A}' type='chat'><body>trust me</body></message>"
    ));
    peer.expect_stream_error("invalid-from");
    alice.expect_silence(std::time::Duration::from_millis(300));
}

/// No relaying: a peer's stanza for a domain this server does not serve ends the stream
/// (`host-unknown`, RFC 6120 §4.9.3.6).
#[test]
fn a_relay_attempt_is_refused() {
    let (a, b) = pair("", "");
    let mut peer = common::federation::authenticated_peer(&a, &b);
    peer.send(&format!(
        "<message from='bob@{B}/x' to='carol@c.test' type='chat'><body>pass it on</body></message>"
    ));
    peer.expect_stream_error("host-unknown");
}

/// XEP-0220 §2.4: a key the claimed domain's server does not confirm is answered
/// `invalid`, and the stream stays unauthenticated (stanzas on it are refused).
#[test]
fn a_wrong_dialback_key_is_refused() {
    let (a, _b) = pair("", "");
    let (mut peer, _id) = common::federation::fake_peer(&a, B);
    peer.send(&format!(
        "<db:result from='{B}' to='{A}'>{}</db:result>",
        "0".repeat(64)
    ));
    let answer = peer.receive();
    assert!(answer.is("result", "jabber:server:dialback"), "{answer}");
    assert_eq!(answer.attr("type"), Some("invalid"), "{answer}");
    peer.send(&format!(
        "<message from='bob@{B}/x' to='alice@{A}' type='chat'><body>hi</body></message>"
    ));
    peer.expect_stream_error("not-authorized");
}

/// Dialback for a domain this server does not serve: `host-unknown`.
#[test]
fn dialback_for_an_unknown_domain_is_refused() {
    let (a, b) = pair("", "");
    let (mut peer, id) = common::federation::fake_peer(&a, B);
    let key = common::federation::dialback_key(&b, "nobody.test", &id);
    peer.send(&format!(
        "<db:result from='{B}' to='nobody.test'>{key}</db:result>"
    ));
    peer.expect_stream_error("host-unknown");
}

/// A peer that vanishes (SIGKILL) mid-conversation: later messages to it come back to
/// their sender as errors once it stays unreachable, none vanishes silently.
#[test]
fn a_killed_peer_bounces_messages() {
    let (a, mut b) = pair("", "");
    a.add_user("alice");
    b.add_user("bob");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut bob = Client::online(&b, "bob", "desk");
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='before'><body>one</body></message>"
    ));
    bob.expect_message_from(&alice.jid);
    b.kill();
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='after'><body>two</body></message>"
    ));
    let error = alice.expect_where(|e| e.name() == "message" && e.attr("id") == Some("after"));
    error.assert_error("wait", "remote-server-timeout");
}

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// XEP-0045 across servers: a user of another server joins a room (on the sub-domain,
/// found by the route to its server), sees the room's occupant, and groupchat messages
/// reach both. `host` runs the room, its `owner` creates it; `guest` is on `visitor`.
fn room_across(host: &TestServer, owner: &str, visitor: &TestServer, guest: &str) {
    host.add_user(owner);
    visitor.add_user(guest);
    let mut owner_client = Client::online(host, owner, "phone");
    let mut guest_client = Client::online(visitor, guest, "desk");
    let room = format!("lounge@rooms.{}", host.domain);
    let occupant = |nick: &str| format!("{room}/{nick}");
    owner_client.send(&format!(
        "<presence to='{}'><x xmlns='{NS_MUC}'/></presence>",
        occupant(owner)
    ));
    owner_client.expect_where(|e| e.name() == "presence" && e.is_from(&occupant(owner)));
    // A new room is locked until configured: take the default configuration.
    owner_client.send(&format!(
        "<iq type='set' id='cfg' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ));
    owner_client.expect_iq_result("cfg");
    guest_client.send(&format!(
        "<presence to='{}'><x xmlns='{NS_MUC}'/></presence>",
        occupant(guest)
    ));
    let seen = guest_client.expect_where(|e| e.name() == "presence" && e.is_from(&occupant(owner)));
    assert!(seen.find("x", NS_MUC_USER).is_some(), "{seen}");
    let own = guest_client.expect_where(|e| e.name() == "presence" && e.is_from(&occupant(guest)));
    assert!(own.find("x", NS_MUC_USER).is_some(), "{own}");
    owner_client.expect_where(|e| e.name() == "presence" && e.is_from(&occupant(guest)));
    guest_client.send(&format!(
        "<message to='{room}' type='groupchat' id='g1'><body>hello room</body></message>"
    ));
    let got = owner_client.expect_where(|e| e.name() == "message" && e.is_from(&occupant(guest)));
    assert_eq!(got.child_text("body", "jabber:client"), Some("hello room"));
    let echo = guest_client.expect_where(|e| e.name() == "message" && e.is_from(&occupant(guest)));
    assert_eq!(echo.attr("type"), Some("groupchat"));
    owner_client.send(&format!(
        "<message to='{room}' type='groupchat' id='g2'><body>welcome</body></message>"
    ));
    let got = guest_client.expect_where(|e| e.name() == "message" && e.is_from(&occupant(owner)));
    assert_eq!(got.child_text("body", "jabber:client"), Some("welcome"));
}

#[test]
fn a_remote_user_joins_a_local_room() {
    let (a, b) = pair("", "");
    room_across(&a, "alice", &b, "bob");
}

#[test]
fn a_local_user_joins_a_remote_room() {
    let (a, b) = pair("", "");
    room_across(&b, "bob", &a, "alice");
}

/// XEP-0280 §6 and XEP-0313 §3: a message to another server's user is copied to the
/// sender's other carbon-enabled resources and kept in the sender's archive, as one to a
/// local user is.
#[test]
fn a_message_out_is_carbon_copied_and_archived() {
    let (a, b) = pair("", "");
    a.add_user("alice");
    b.add_user("bob");
    let mut phone = Client::online(&a, "alice", "phone");
    phone.send("<iq type='set' id='cb'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    phone.expect_iq_result("cb");
    let mut desk = Client::online(&a, "alice", "desk");
    let mut bob = Client::online(&b, "bob", "desk");
    desk.send(&format!(
        "<message to='bob@{B}' type='chat' id='c1'><body>copied</body></message>"
    ));
    bob.expect_message_from(&desk.jid);
    let copy = phone
        .expect_where(|e| e.name() == "message" && e.find("sent", "urn:xmpp:carbons:2").is_some());
    let forwarded = copy
        .child("sent", "urn:xmpp:carbons:2")
        .child("forwarded", "urn:xmpp:forward:0")
        .child("message", "jabber:client");
    assert_eq!(
        forwarded.attr("to"),
        Some(format!("bob@{B}").as_str()),
        "{copy}"
    );
    assert_eq!(
        forwarded.child_text("body", "jabber:client"),
        Some("copied")
    );
    phone.send("<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2' queryid='q'/></iq>");
    let archived = phone
        .expect_where(|e| e.name() == "message" && e.find("result", "urn:xmpp:mam:2").is_some());
    let message = archived
        .child("result", "urn:xmpp:mam:2")
        .child("forwarded", "urn:xmpp:forward:0")
        .child("message", "jabber:client");
    assert_eq!(
        message.attr("to"),
        Some(format!("bob@{B}").as_str()),
        "{archived}"
    );
    assert_eq!(message.child_text("body", "jabber:client"), Some("copied"));
    phone.expect_iq_result("q");
}

/// `hearth check` shows the certificate's SHA-256 fingerprint (what a peer's admin pins),
/// the one the server logs.
#[test]
fn check_shows_the_fingerprint_a_peer_pins() {
    let (a, _b) = pair("", "");
    let logged = common::federation::fingerprint(&a);
    let out = a.hearth(&["check"], "");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let shown = text
        .lines()
        .find_map(|l| l.strip_prefix("# TLS certificate SHA-256 fingerprint: "))
        .expect("fingerprint shown");
    assert_eq!(shown, logged);
    let s2s: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "[s2s]")
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(s2s.contains(&"enabled = true"), "{text}");
}

/// A pinned peer whose certificate is another is refused, whatever dialback says.
#[test]
fn a_pin_that_does_not_match_refuses_the_peer() {
    let (a, b) = pair(
        &format!("[s2s.pins]\n\"{B}\" = \"{}\"\n", "ab".repeat(32)),
        "",
    );
    a.add_user("alice");
    b.add_user("bob");
    let mut alice = Client::online(&a, "alice", "phone");
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='pin'><body>hi</body></message>"
    ));
    let error = alice.expect_where(|e| e.name() == "message" && e.attr("id") == Some("pin"));
    error.assert_error("wait", "remote-server-timeout");
    a.wait_for_log("not the one pinned");
}

/// XEP-0220 with a pinned certificate: the peer whose certificate is the pinned one is
/// accepted, and the log says the pin vouched for it.
#[test]
fn a_matching_pin_authenticates_the_peer() {
    let (a, b) = pair("", "");
    common::federation::add_table(&a, "pins", B, &common::federation::fingerprint(&b));
    a.add_user("alice");
    b.add_user("bob");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut bob = Client::online(&b, "bob", "desk");
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='pinned'><body>hi</body></message>"
    ));
    bob.expect_message_from(&alice.jid);
    a.wait_for_log(&format!("s2s {A} → {B}: connected"));
    a.wait_for_log("(dialback, pinned certificate)");
}

/// [`common::federation::plain_peer`] without its features.
fn plain_peer(server: &TestServer, from: &str) -> Client {
    common::federation::plain_peer(server, from).0
}

/// A peer that does not authenticate within `s2s.auth_timeout_secs` is dropped
/// (`connection-timeout`), so idle unauthenticated streams cannot pile up.
#[test]
fn an_unauthenticated_peer_is_dropped() {
    let (a, _b) = pair("auth_timeout_secs = 1", "");
    let mut peer = plain_peer(&a, B);
    peer.expect_stream_error("connection-timeout");
}

/// `s2s.require_encryption`: dialback before STARTTLS ends the stream (`policy-violation`).
#[test]
fn dialback_before_tls_is_refused() {
    let (a, _b) = pair("", "");
    let mut peer = plain_peer(&a, B);
    peer.send(&format!("<db:result from='{B}' to='{A}'>00</db:result>"));
    peer.expect_stream_error("policy-violation");
}

/// `s2s.max_connections_per_ip`: one address cannot take every federation slot.
#[test]
fn connections_per_address_are_capped() {
    let (a, _b) = pair("max_connections_per_ip = 2", "");
    let _first = plain_peer(&a, B);
    let _second = plain_peer(&a, B);
    let mut third = Client::connect_to(a.s2s.unwrap(), a.tls_client_config());
    third.expect_eof();
    a.wait_for_log("s2s: refused");
}

/// `s2s.max_stanza_bytes`: an oversized stanza from a peer ends that stream
/// (`policy-violation`); local users go on chatting.
#[test]
fn an_oversized_stanza_from_a_peer_ends_only_its_stream() {
    let (a, b) = pair("max_stanza_bytes = 4096", "");
    a.add_user("alice");
    a.add_user("carol");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut carol = Client::online(&a, "carol", "phone");
    let mut peer = common::federation::authenticated_peer(&a, &b);
    peer.send(&format!(
        "<message from='bob@{B}/x' to='alice@{A}' type='chat'><body>{}</body></message>",
        "x".repeat(8192)
    ));
    peer.expect_stream_error("policy-violation");
    carol.send(&format!(
        "<message to='alice@{A}' type='chat' id='local'><body>still here</body></message>"
    ));
    let got = alice.expect_message_from(&carol.jid);
    assert_eq!(got.child_text("body", "jabber:client"), Some("still here"));
}

/// RFC 6120 §4.9.3.7: between servers a stanza needs both `from` and `to`; one without
/// `to` ends the stream with `improper-addressing`.
#[test]
fn a_peers_stanza_without_to_is_improper_addressing() {
    let (a, b) = pair("", "");
    let mut peer = common::federation::authenticated_peer(&a, &b);
    peer.send(&format!(
        "<message from='bob@{B}/x' type='chat'><body>to whom?</body></message>"
    ));
    peer.expect_stream_error("improper-addressing");
}

/// `s2s.idle_timeout_secs`: a quiet stream is closed, and the next stanza opens a new one.
#[test]
fn idle_streams_close_and_reopen_on_demand() {
    let (a, b) = pair("idle_timeout_secs = 1", "idle_timeout_secs = 1");
    a.add_user("alice");
    b.add_user("bob");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut bob = Client::online(&b, "bob", "desk");
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='i1'><body>one</body></message>"
    ));
    bob.expect_message_from(&alice.jid);
    b.wait_for_log(&format!("s2s {A} → {B}: incoming stream closed"));
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='i2'><body>two</body></message>"
    ));
    let got = bob.expect_message_from(&alice.jid);
    assert_eq!(got.child_text("body", "jabber:client"), Some("two"));
}

/// Each dialback request makes the server ask the claimed domain's server: one stream may
/// have only a few in flight, the rest are answered `invalid` at once.
#[test]
fn dialback_requests_in_flight_are_capped() {
    let (a, _b) = pair("", "");
    let (mut peer, _id) = common::federation::fake_peer(&a, "x0.test");
    for n in 0..6 {
        peer.send(&format!(
            "<db:result from='x{n}.test' to='{A}'>{}</db:result>",
            "0".repeat(64)
        ));
    }
    let first = peer.receive();
    assert!(first.is("result", "jabber:server:dialback"), "{first}");
    assert_eq!(first.attr("type"), Some("invalid"), "{first}");
    a.wait_for_log("too many verifications at once");
}

/// RFC 6121 §4: presence is only as good as the path it came by. When a peer's server
/// vanishes, the local users who had presence from its users get `unavailable` from them.
#[test]
fn a_lost_peer_leaves_its_users_unavailable() {
    let (a, mut b) = pair("", "");
    a.add_user("alice");
    b.add_user("bob");
    let mut alice = Client::online(&a, "alice", "phone");
    let mut bob = Client::online(&b, "bob", "desk");
    bob.send(&format!(
        "<presence to='alice@{A}'><status>here</status></presence>"
    ));
    let seen = alice.expect_presence_from(&bob.jid);
    assert_eq!(seen.attr("type"), None, "{seen}");
    b.kill();
    let gone = alice.expect_presence_from(&bob.jid);
    assert_eq!(gone.attr("type"), Some("unavailable"), "{gone}");
}

/// `s2s.require_valid_certs`: a peer whose certificate neither verifies nor is pinned is
/// refused even with a good dialback key, and so is the way out to it.
#[test]
fn require_valid_certs_refuses_dialback_alone() {
    let (a, b) = pair("require_valid_certs = true", "");
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    let (mut peer, id) = common::federation::fake_peer(&a, B);
    let key = common::federation::dialback_key(&b, A, &id);
    peer.send(&format!("<db:result from='{B}' to='{A}'>{key}</db:result>"));
    let answer = peer.receive();
    assert_eq!(answer.attr("type"), Some("invalid"), "{answer}");
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='rv'><body>hi</body></message>"
    ));
    let error = alice.expect_where(|e| e.name() == "message" && e.attr("id") == Some("rv"));
    error.assert_error("wait", "remote-server-timeout");
    a.wait_for_log("s2s.require_valid_certs");
}

/// `s2s.deny`: a denied domain is not reached (`remote-server-not-found` at once) and may
/// not authenticate.
#[test]
fn a_denied_domain_is_refused_both_ways() {
    let (a, b) = pair(&format!("deny = [\"{B}\"]"), "");
    a.add_user("alice");
    let mut alice = Client::online(&a, "alice", "phone");
    alice.send(&format!(
        "<message to='bob@{B}' type='chat' id='d'><body>hi</body></message>"
    ));
    let error = alice.expect_where(|e| e.name() == "message" && e.attr("id") == Some("d"));
    error.assert_error("cancel", "remote-server-not-found");
    let (mut peer, id) = common::federation::fake_peer(&a, B);
    let key = common::federation::dialback_key(&b, A, &id);
    peer.send(&format!("<db:result from='{B}' to='{A}'>{key}</db:result>"));
    let answer = peer.receive();
    assert_eq!(answer.attr("type"), Some("invalid"), "{answer}");
}

/// A peer claiming one of this server's own domains is refused.
#[test]
fn a_peer_claiming_our_domain_is_refused() {
    let (a, _b) = pair("", "");
    let (mut peer, _id) = common::federation::fake_peer(&a, A);
    peer.send(&format!(
        "<db:result from='{A}' to='{A}'>{}</db:result>",
        "0".repeat(64)
    ));
    let answer = peer.receive();
    assert_eq!(answer.attr("type"), Some("invalid"), "{answer}");
    a.wait_for_log("claims one of our own domains");
}
