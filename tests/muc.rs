//! XEP-0045 chat rooms as clients see them: discovery, creation, joining and its refusals,
//! messages, history and subject, moderation, invitations, self-ping, flood control and
//! persistence across a restart. Every client is a real TLS session.

mod common;

use common::muc::*;
use common::*;
use std::time::Duration;

const NS_USER: &str = "http://jabber.org/protocol/muc#user";

fn server_with(users: &[&str], extra: &str) -> TestServer {
    let server = TestServer::start(extra);
    for user in users {
        server.add_user(user);
    }
    server
}

/// Sends a MUC join and returns the own presence (the one with status 110).
fn join(client: &mut Client, room: &str, nick: &str, extra: &str) -> String {
    client.send(&format!(
        "<presence to='{room}@{MUC}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>"
    ));
    client.expect("code='110'")
}

/// Creates an instant room (§10.1.2) owned by `client`, unlocked when this returns.
fn create_instant(client: &mut Client, room: &str, nick: &str) {
    let own = join(client, room, nick, "");
    assert!(
        own.contains("code='201'") && own.contains("affiliation='owner' role='moderator'"),
        "{own}"
    );
    client.expect("<subject/>");
    configure(client, room, "");
}

fn admin_set(client: &mut Client, room: &str, item: &str) -> String {
    client.send(&format!(
        "<iq type='set' id='adm' to='{room}@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'>{item}</query></iq>"
    ));
    client.expect("id='adm'")
}

fn error_condition(stanza: &str, condition: &str) {
    assert!(
        stanza.contains("type='error'") && stanza.contains(&format!("<{condition} ")),
        "wanted {condition}: {stanza}"
    );
}

#[test]
fn service_and_room_discovery() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send("<iq type='get' id='i1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    let items = alice.expect("id='i1'");
    assert!(items.contains(&format!("<item jid='{MUC}'")), "{items}");
    alice.send(&format!("<iq type='get' id='i2' to='{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    let info = alice.expect("id='i2'");
    assert!(info.contains("category='conference' type='text'"), "{info}");
    assert!(
        info.contains("<feature var='http://jabber.org/protocol/muc'/>"),
        "{info}"
    );

    create_instant(&mut alice, "lounge", "al");
    configure(
        &mut alice,
        "lounge",
        &(field("roomname", "The Lounge") + &field("roomdesc", "sofas")),
    );
    // A hidden room stays out of the directory.
    create_instant(&mut alice, "secret", "al");
    configure(&mut alice, "secret", &field("publicroom", "0"));
    let mut bob = Client::online(&server, "bob", "b");
    bob.send(&format!("<iq type='get' id='i3' to='{MUC}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"));
    let items = bob.expect("id='i3'");
    assert!(
        items.contains(&format!("<item jid='lounge@{MUC}' name='The Lounge (1)'/>")),
        "{items}"
    );
    assert!(!items.contains("secret"), "{items}");
    bob.send(&format!("<iq type='get' id='i4' to='secret@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    let info = bob.expect("id='i4'");
    for feature in [
        "muc_hidden",
        "muc_temporary",
        "muc_open",
        "muc_unmoderated",
        "muc_unsecured",
        "muc_semianonymous",
    ] {
        assert!(
            info.contains(&format!("var='{feature}'")),
            "{feature}: {info}"
        );
    }
    bob.send(&format!("<iq type='get' id='i5' to='lounge@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    let info = bob.expect("id='i5'");
    assert!(
        info.contains("muc#roominfo_occupants'><value>1</value>"),
        "{info}"
    );
    assert!(
        info.contains("<value>sofas</value>") && info.contains("muc_public"),
        "{info}"
    );
    bob.send(&format!("<iq type='get' id='i6' to='nowhere@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    error_condition(&bob.expect("id='i6'"), "item-not-found");
    // Answers are never answered, even when their room is gone.
    bob.send(&format!("<iq type='result' id='r0' to='nowhere@{MUC}/x'/>"));
    bob.send(&format!("<iq type='error' id='r1' to='nowhere@{MUC}'><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"));
    bob.expect_silence(Duration::from_millis(300));
}

#[test]
fn instant_room_is_locked_until_configured() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let own = join(&mut alice, "den", "al", "");
    assert!(own.contains("code='201'"), "{own}");
    assert!(own.contains(&format!("from='den@{MUC}/al'")), "{own}");
    bob.send(&format!(
        "<presence to='den@{MUC}/bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    error_condition(&bob.expect("type='error'"), "item-not-found");
    configure(&mut alice, "den", "");
    let own = join(&mut bob, "den", "bo", "");
    assert!(
        own.contains("affiliation='none' role='participant'"),
        "{own}"
    );
    alice.expect(&format!("from='den@{MUC}/bo'"));
}

#[test]
fn reserved_room_configuration_form() {
    let server = server_with(&["alice", "bob", "carol"], "");
    let mut alice = Client::online(&server, "alice", "a");
    join(&mut alice, "club", "al", "");
    alice.send(&format!("<iq type='get' id='f1' to='club@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"));
    let form = alice.expect("id='f1'");
    for var in [
        "roomname",
        "roomdesc",
        "publicroom",
        "persistentroom",
        "membersonly",
        "moderatedroom",
        "passwordprotectedroom",
        "roomsecret",
        "maxusers",
        "whois",
        "historylength",
        "changesubject",
    ] {
        assert!(
            form.contains(&format!("var='muc#roomconfig_{var}'")),
            "{var}: {form}"
        );
    }
    // Unknown fields refuse the whole form; the room stays locked.
    alice.send(&format!(
        "<iq type='set' id='f2' to='club@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>{}</x></query></iq>",
        field("nosuchfield", "1")
    ));
    error_condition(&alice.expect("id='f2'"), "not-acceptable");
    let mut bob = Client::online(&server, "bob", "b");
    bob.send(&format!(
        "<presence to='club@{MUC}/bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    error_condition(&bob.expect("type='error'"), "item-not-found");
    // Non-owners may not read the form.
    bob.send(&format!("<iq type='get' id='f3' to='club@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"));
    error_condition(&bob.expect("id='f3'"), "item-not-found");
    configure(
        &mut alice,
        "club",
        &(field("roomname", "Club")
            + &field("passwordprotectedroom", "1")
            + &field("roomsecret", "sesame")
            + &field("maxusers", "2")
            + &field("whois", "anyone")),
    );
    bob.send(&format!(
        "<presence to='club@{MUC}/bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    error_condition(&bob.expect("type='error'"), "not-authorized");
    bob.send(&format!("<presence to='club@{MUC}/bo'><x xmlns='http://jabber.org/protocol/muc'><password>nope</password></x></presence>"));
    error_condition(&bob.expect("type='error'"), "not-authorized");
    let own = join(&mut bob, "club", "bo", "<password>sesame</password>");
    // Non-anonymous: status 100, and every occupant sees real JIDs.
    assert!(own.contains("code='100'"), "{own}");
    let seen = alice.expect(&format!("from='club@{MUC}/bo'"));
    assert!(seen.contains("jid='bob@localhost/b'"), "{seen}");
    assert!(!seen.contains("sesame"), "{seen}");
    // maxusers = 2: the room is full.
    let mut carol = Client::online(&server, "carol", "c");
    carol.send(&format!("<presence to='club@{MUC}/ca'><x xmlns='http://jabber.org/protocol/muc'><password>sesame</password></x></presence>"));
    let full = carol.expect("type='error'");
    error_condition(&full, "service-unavailable");
    assert!(full.contains("<error type='wait'>"), "{full}");
    // The certificate also names the chat-room service.
    let tcp = std::net::TcpStream::connect(server.direct_tls).unwrap();
    let name = rustls::pki_types::ServerName::try_from(MUC).unwrap();
    let conn = rustls::ClientConnection::new(server.tls_client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("certificate valid for the MUC domain");
    }
}

#[test]
fn join_order_refusals_nick_change_and_leave() {
    let server = server_with(&["alice", "bob", "carol"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let mut carol = Client::online(&server, "carol", "c");
    create_instant(&mut alice, "hall", "al");
    bob.send(&format!("<presence to='hall@{MUC}/bo'><show>away</show><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
    // Existing occupants first, then the own presence with 110, then the subject.
    let first = bob.stanza();
    assert!(
        first.contains(&format!("from='hall@{MUC}/al'")) && first.contains("affiliation='owner'"),
        "{first}"
    );
    assert!(!first.contains("jid="), "semi-anonymous: {first}");
    let own = bob.stanza();
    assert!(
        own.contains("code='110'") && own.contains("jid='bob@localhost/b'"),
        "{own}"
    );
    assert!(bob.stanza().contains("<subject/>"));
    // The moderator sees real JIDs; the presence carries the show.
    let seen = alice.expect(&format!("from='hall@{MUC}/bo'"));
    assert!(
        seen.contains("jid='bob@localhost/b'") && seen.contains("<show>away</show>"),
        "{seen}"
    );

    carol.send(&format!(
        "<presence to='hall@{MUC}/bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    let refused = carol.expect("type='error'");
    error_condition(&refused, "conflict");
    assert!(
        refused.contains(&format!("from='hall@{MUC}/bo'")),
        "{refused}"
    );
    carol.send(&format!(
        "<presence to='hall@{MUC}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    error_condition(&carol.expect("type='error'"), "jid-malformed");
    carol.send(&format!("<presence to='hall@{MUC}/'/>"));
    error_condition(&carol.expect("type='error'"), "jid-malformed");
    carol.send(&format!("<presence to='hall@{MUC}/{}'/>", "n".repeat(1024)));
    error_condition(&carol.expect("type='error'"), "jid-malformed");
    join(&mut carol, "hall", "ca", "");
    bob.expect(&format!("from='hall@{MUC}/ca'"));

    // Presence update is broadcast.
    bob.send(&format!(
        "<presence to='hall@{MUC}/bo'><status>lunch</status></presence>"
    ));
    carol.expect("<status>lunch</status>");

    // Nick change: 303 with the new nick, then available under it.
    bob.send(&format!("<presence to='hall@{MUC}/bobby'/>"));
    let gone = carol.expect("code='303'");
    assert!(
        gone.contains("type='unavailable'")
            && gone.contains("nick='bobby'")
            && gone.contains(&format!("from='hall@{MUC}/bo'")),
        "{gone}"
    );
    carol.expect(&format!("from='hall@{MUC}/bobby'"));
    let own = bob.expect("code='303'");
    assert!(own.contains("code='110'"), "{own}");
    bob.expect(&format!("from='hall@{MUC}/bobby'"));
    // Changing to a nick in use is a conflict.
    bob.send(&format!("<presence to='hall@{MUC}/ca'/>"));
    error_condition(&bob.expect("type='error'"), "conflict");

    // Leave: unavailable with 110 to self, unavailable to the others.
    bob.send(&format!(
        "<presence type='unavailable' to='hall@{MUC}/bobby'><status>bye</status></presence>"
    ));
    let own = bob.expect("type='unavailable'");
    assert!(
        own.contains("code='110'")
            && own.contains("role='none'")
            && own.contains("<status>bye</status>"),
        "{own}"
    );
    let left = carol.expect("type='unavailable'");
    assert!(
        left.contains(&format!("from='hall@{MUC}/bobby'")) && !left.contains("code='110'"),
        "{left}"
    );

    // A dropped connection leaves every room.
    drop(carol);
    let left = alice.expect(&format!(
        "from='hall@{MUC}/ca' to='alice@localhost/a' type='unavailable'"
    ));
    assert!(
        left.contains("role='none'") && !left.contains("code='110'"),
        "{left}"
    );
}

#[test]
fn history_subject_and_messages() {
    let server = server_with(&["alice", "bob", "carol"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let mut carol = Client::online(&server, "carol", "c");
    create_instant(&mut alice, "talk", "al");
    alice.send(&format!(
        "<message type='groupchat' to='talk@{MUC}'><subject>Weekly &amp; more</subject></message>"
    ));
    alice.expect("<subject>Weekly &amp; more</subject>");
    for n in 1..=4 {
        alice.send(&format!(
            "<message type='groupchat' id='h{n}' to='talk@{MUC}'><body>msg {n}</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='talk@{MUC}'/></message>"
        ));
        let echo = alice.expect(&format!("msg {n}"));
        assert!(!echo.contains("forged"), "{echo}");
        assert!(
            echo.contains(&format!("by='talk@{MUC}'")) && echo.contains("urn:xmpp:sid:0"),
            "{echo}"
        );
    }
    // History with maxstanzas, then the subject.
    bob.send(&format!("<presence to='talk@{MUC}/bo'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='2'/></x></presence>"));
    bob.expect("code='110'");
    let third = bob.stanza();
    assert!(
        third.contains("msg 3")
            && third.contains("urn:xmpp:delay")
            && third.contains(&format!("from='talk@{MUC}/al'")),
        "{third}"
    );
    assert!(
        third.contains(&format!("<delay xmlns='urn:xmpp:delay' from='talk@{MUC}'")),
        "{third}"
    );
    assert!(bob.stanza().contains("msg 4"));
    let subject = bob.stanza();
    assert!(
        subject.contains("<subject>Weekly &amp; more</subject>")
            && subject.contains(&format!("from='talk@{MUC}/al'")),
        "{subject}"
    );
    // maxchars='0': no history at all.
    carol.send(&format!("<presence to='talk@{MUC}/ca'><x xmlns='http://jabber.org/protocol/muc'><history maxchars='0'/></x></presence>"));
    carol.expect("code='110'");
    assert!(carol.stanza().contains("<subject>"));
    bob.expect(&format!("from='talk@{MUC}/ca'"));
    // since/seconds: a future instant gives nothing, the last hour everything.
    let mut early = Client::online(&server, "carol", "since");
    early.send(&format!("<presence to='talk@{MUC}/ca'><x xmlns='http://jabber.org/protocol/muc'><history since='2999-01-01T00:00:00Z'/></x></presence>"));
    early.expect("code='110'");
    assert!(early.stanza().contains("<subject>"));
    early.send(&format!(
        "<presence type='unavailable' to='talk@{MUC}/ca'/>"
    ));
    early.expect("type='unavailable'");
    let mut late = Client::online(&server, "carol", "seconds");
    late.send(&format!("<presence to='talk@{MUC}/ca'><x xmlns='http://jabber.org/protocol/muc'><history seconds='3600'/></x></presence>"));
    late.expect("code='110'");
    for n in 1..=4 {
        assert!(late.stanza().contains(&format!("msg {n}")));
    }
    assert!(late.stanza().contains("<subject>"));

    // Groupchat goes to everyone with from = room/nick.
    bob.send(&format!(
        "<message type='groupchat' id='g1' to='talk@{MUC}'><body>hi all</body></message>"
    ));
    for client in [&mut alice, &mut bob, &mut carol] {
        let got = client.expect("hi all");
        assert!(
            got.contains(&format!("from='talk@{MUC}/bo'")) && got.contains("id='g1'"),
            "{got}"
        );
    }
    // Private message to an occupant reaches its real JID from room/nick.
    bob.send(&format!(
        "<message type='chat' to='talk@{MUC}/ca'><body>psst</body></message>"
    ));
    let pm = carol.expect("psst");
    assert!(
        pm.contains(&format!("from='talk@{MUC}/bo'")) && pm.contains("to='carol@localhost/c'"),
        "{pm}"
    );
    bob.send(&format!(
        "<message type='chat' id='p2' to='talk@{MUC}/nobody'><body>x</body></message>"
    ));
    error_condition(&bob.expect("id='p2'"), "item-not-found");
    // Participants may change the subject by default.
    carol.send(&format!(
        "<message type='groupchat' to='talk@{MUC}'><subject>new</subject></message>"
    ));
    alice.expect("<subject>new</subject>");

    // Non-occupants may not speak.
    let mut dave_server_user = Client::online(&server, "alice", "other");
    dave_server_user.send(&format!(
        "<message type='groupchat' id='n1' to='talk@{MUC}'><body>x</body></message>"
    ));
    error_condition(&dave_server_user.expect("id='n1'"), "not-acceptable");
    dave_server_user.send(&format!(
        "<message type='chat' id='n2' to='talk@{MUC}/bo'><body>x</body></message>"
    ));
    error_condition(&dave_server_user.expect("id='n2'"), "not-acceptable");
}

#[test]
fn moderation_kick_ban_voice_and_membership() {
    let server = server_with(&["alice", "bob", "carol", "dave"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let mut carol = Client::online(&server, "carol", "c");
    create_instant(&mut alice, "mod", "al");
    configure(&mut alice, "mod", &field("moderatedroom", "1"));
    let own = join(&mut bob, "mod", "bo", "");
    assert!(own.contains("role='visitor'"), "{own}");
    bob.send(&format!(
        "<message type='groupchat' id='v1' to='mod@{MUC}'><body>x</body></message>"
    ));
    error_condition(&bob.expect("id='v1'"), "forbidden");
    join(&mut carol, "mod", "ca", "");
    alice.expect(&format!("from='mod@{MUC}/ca'"));

    // Visitors may not moderate.
    let reply = admin_set(&mut bob, "mod", "<item nick='ca' role='none'/>");
    error_condition(&reply, "forbidden");
    // Grant voice.
    let reply = admin_set(&mut alice, "mod", "<item nick='bo' role='participant'/>");
    assert!(reply.contains("type='result'"), "{reply}");
    carol.expect("role='participant'");
    bob.send(&format!(
        "<message type='groupchat' to='mod@{MUC}'><body>now I speak</body></message>"
    ));
    carol.expect("now I speak");

    // Make bob an admin: he may then kick carol, but not the owner.
    let reply = admin_set(
        &mut alice,
        "mod",
        "<item jid='bob@localhost' affiliation='admin'/>",
    );
    assert!(reply.contains("type='result'"), "{reply}");
    let seen = carol.expect("affiliation='admin'");
    assert!(seen.contains("role='moderator'"), "{seen}");
    let reply = admin_set(&mut bob, "mod", "<item nick='al' role='none'/>");
    error_condition(&reply, "not-allowed");
    let reply = admin_set(
        &mut bob,
        "mod",
        "<item jid='alice@localhost' affiliation='outcast'/>",
    );
    error_condition(&reply, "not-allowed");
    let reply = admin_set(
        &mut bob,
        "mod",
        "<item nick='ca' role='none'><reason>calm down</reason></item>",
    );
    assert!(reply.contains("type='result'"), "{reply}");
    let kicked = carol.expect("code='307'");
    assert!(
        kicked.contains("type='unavailable'")
            && kicked.contains("code='110'")
            && kicked.contains("<reason>calm down</reason>"),
        "{kicked}"
    );
    let seen = alice.expect("code='307'");
    assert!(seen.contains(&format!("from='mod@{MUC}/ca'")), "{seen}");

    // Ban: carol may not come back.
    let reply = admin_set(
        &mut alice,
        "mod",
        "<item jid='carol@localhost' affiliation='outcast'/>",
    );
    assert!(reply.contains("type='result'"), "{reply}");
    carol.send(&format!(
        "<presence to='mod@{MUC}/ca'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    error_condition(&carol.expect("type='error'"), "forbidden");
    // Lists.
    alice.send(&format!("<iq type='get' id='l1' to='mod@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query></iq>"));
    let list = alice.expect("id='l1'");
    assert!(
        list.contains("<item affiliation='outcast' jid='carol@localhost'/>"),
        "{list}"
    );
    alice.send(&format!("<iq type='get' id='l2' to='mod@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'><item role='moderator'/></query></iq>"));
    let list = alice.expect("id='l2'");
    assert!(
        list.contains("nick='al'") && list.contains("nick='bo'"),
        "{list}"
    );
    // The only owner cannot step down.
    let reply = admin_set(
        &mut alice,
        "mod",
        "<item jid='alice@localhost' affiliation='member'/>",
    );
    error_condition(&reply, "conflict");
    // Banning an occupant who is present removes them with 301.
    let mut dave = Client::online(&server, "dave", "d");
    join(&mut dave, "mod", "da", "");
    admin_set(&mut alice, "mod", "<item nick='da' affiliation='outcast'/>");
    let banned = dave.expect("code='301'");
    assert!(
        banned.contains("type='unavailable'") && banned.contains("affiliation='outcast'"),
        "{banned}"
    );
}

#[test]
fn members_only_room_and_invitations() {
    let server = server_with(&["alice", "bob", "carol"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let mut carol = Client::online(&server, "carol", "c");
    create_instant(&mut alice, "vip", "al");
    join(&mut bob, "vip", "bo", "");
    // Becoming members-only removes the non-members (322) and tells the rest (104).
    configure(&mut alice, "vip", &field("membersonly", "1"));
    let removed = bob.expect("code='322'");
    assert!(
        removed.contains("type='unavailable'") && removed.contains("code='110'"),
        "{removed}"
    );
    let changed = alice.expect("code='104'");
    assert!(changed.contains(&format!("from='vip@{MUC}'")), "{changed}");
    bob.send(&format!(
        "<presence to='vip@{MUC}/bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    error_condition(&bob.expect("type='error'"), "registration-required");
    // A mediated invitation from an owner makes bob a member.
    alice.send(&format!(
        "<message to='vip@{MUC}'><x xmlns='{NS_USER}'><invite to='bob@localhost'><reason>join us</reason></invite></x></message>"
    ));
    let invite = bob.expect("<invite");
    assert!(
        invite.contains(&format!("from='vip@{MUC}'"))
            && invite.contains("from='alice@localhost/a'")
            && invite.contains("<reason>join us</reason>"),
        "{invite}"
    );
    join(&mut bob, "vip", "bo", "");
    alice.send(&format!("<message id='inv0' to='vip@{MUC}'><x xmlns='{NS_USER}'><invite to='nobody@localhost'/></x></message>"));
    error_condition(&alice.expect("id='inv0'"), "item-not-found");
    // Members may not invite into a members-only room.
    bob.send(&format!("<message id='inv2' to='vip@{MUC}'><x xmlns='{NS_USER}'><invite to='carol@localhost'/></x></message>"));
    error_condition(&bob.expect("id='inv2'"), "forbidden");
    alice.send(&format!(
        "<message to='vip@{MUC}'><x xmlns='{NS_USER}'><invite to='carol@localhost'/></x></message>"
    ));
    carol.expect("<invite");
    carol.send(&format!("<message to='vip@{MUC}'><x xmlns='{NS_USER}'><decline to='alice@localhost'><reason>busy</reason></decline></x></message>"));
    let decline = alice.expect("<decline");
    assert!(
        decline.contains("from='carol@localhost'") && decline.contains("<reason>busy</reason>"),
        "{decline}"
    );
    // Revoking membership removes the occupant (321).
    admin_set(
        &mut alice,
        "vip",
        "<item jid='bob@localhost' affiliation='none'/>",
    );
    let removed = bob.expect("code='321'");
    assert!(removed.contains("type='unavailable'"), "{removed}");
}

#[test]
fn self_ping_iq_forwarding_and_multiple_sessions() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let mut bob2 = Client::online(&server, "bob", "b2");
    create_instant(&mut alice, "pp", "al");
    alice.send(&format!(
        "<iq type='get' id='sp1' to='pp@{MUC}/al'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let pong = alice.expect("id='sp1'");
    assert!(
        pong.contains("type='result'") && pong.contains(&format!("from='pp@{MUC}/al'")),
        "{pong}"
    );
    // Joining again from the same session sends the room state again (XEP-0410 §5).
    alice.send(&format!(
        "<presence to='pp@{MUC}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    alice.expect("code='110'");
    alice.expect("<subject/>");
    bob.send(&format!(
        "<iq type='get' id='sp2' to='pp@{MUC}/bo'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    error_condition(&bob.expect("id='sp2'"), "not-acceptable");

    // Two sessions of bob share one nick: one presence for the others, both get messages.
    join(&mut bob, "pp", "bo", "");
    alice.expect(&format!("from='pp@{MUC}/bo'"));
    join(&mut bob2, "pp", "bo", "");
    alice.sync();
    alice.send(&format!(
        "<message type='groupchat' to='pp@{MUC}'><body>both</body></message>"
    ));
    bob.expect("both");
    bob2.expect("both");
    assert_eq!(
        alice
            .transcript
            .matches(&format!("from='pp@{MUC}/bo'"))
            .count(),
        1,
        "{}",
        alice.transcript
    );

    // An iq to another occupant is passed on from the sender's room JID.
    alice.send(&format!(
        "<iq type='get' id='v1' to='pp@{MUC}/bo'><query xmlns='jabber:iq:version'/></iq>"
    ));
    let forwarded = bob.expect("id='v1'");
    assert!(
        forwarded.contains(&format!("from='pp@{MUC}/al'"))
            && forwarded.contains("to='bob@localhost/b'"),
        "{forwarded}"
    );
    bob.send(&format!("<iq type='result' id='v1' to='pp@{MUC}/al'><query xmlns='jabber:iq:version'><name>x</name></query></iq>"));
    let answer = alice.expect("id='v1'");
    assert!(
        answer.contains("<name>x</name>") && answer.contains(&format!("from='pp@{MUC}/bo'")),
        "{answer}"
    );

    // One session leaving keeps the occupant; the others notice nothing.
    bob2.send(&format!("<presence type='unavailable' to='pp@{MUC}/bo'/>"));
    bob2.expect("code='110'");
    alice.expect_silence(Duration::from_millis(300));
}

#[test]
fn flood_is_limited_and_the_room_keeps_working() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    create_instant(&mut alice, "fl", "al");
    join(&mut bob, "fl", "bo", "");
    for n in 0..30 {
        bob.send(&format!(
            "<message type='groupchat' id='f{n}' to='fl@{MUC}'><body>spam {n}</body></message>"
        ));
    }
    let refused = bob.expect("resource-constraint");
    assert!(refused.contains("type='wait'"), "{refused}");
    alice.expect("spam 0");
    std::thread::sleep(Duration::from_millis(1500));
    alice.send(&format!(
        "<message type='groupchat' to='fl@{MUC}'><body>still here</body></message>"
    ));
    bob.expect("still here");
    bob.send(&format!(
        "<message type='groupchat' to='fl@{MUC}'><body>me too</body></message>"
    ));
    alice.expect("me too");
}

#[test]
fn destroy_and_persistence_across_restart() {
    let mut server = server_with(&["alice", "bob", "carol"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    create_instant(&mut alice, "keep", "al");
    configure(
        &mut alice,
        "keep",
        &(field("persistentroom", "1") + &field("roomname", "Kept")),
    );
    admin_set(
        &mut alice,
        "keep",
        "<item jid='carol@localhost' affiliation='outcast'/>",
    );
    alice.send(&format!(
        "<message type='groupchat' to='keep@{MUC}'><subject>kept subject</subject></message>"
    ));
    alice.expect("kept subject");
    // A temporary room vanishes with its last occupant; a destroyed one tells everyone.
    create_instant(&mut alice, "temp", "al");
    join(&mut bob, "temp", "bo", "");
    alice.send(&format!(
        "<iq type='set' id='d1' to='temp@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <destroy jid='keep@{MUC}'><reason>moved</reason></destroy></query></iq>"
    ));
    alice.expect("id='d1'");
    let gone = bob.expect("<destroy");
    assert!(
        gone.contains("type='unavailable'")
            && gone.contains(&format!("jid='keep@{MUC}'"))
            && gone.contains("<reason>moved</reason>"),
        "{gone}"
    );
    drop(alice);
    drop(bob);
    std::thread::sleep(Duration::from_millis(200));
    server.stop();
    server.spawn();
    let mut bob = Client::online(&server, "bob", "b");
    bob.send(&format!("<iq type='get' id='i1' to='{MUC}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"));
    let items = bob.expect("id='i1'");
    assert!(
        items.contains(&format!("jid='keep@{MUC}' name='Kept (0)'")) && !items.contains("temp@"),
        "{items}"
    );
    join(&mut bob, "keep", "bo", "");
    assert!(bob.expect("<subject>").contains("kept subject"));
    let mut carol = Client::online(&server, "carol", "c");
    carol.send(&format!(
        "<presence to='keep@{MUC}/ca'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    error_condition(&carol.expect("type='error'"), "forbidden");
    // The owner is still the owner.
    let mut alice = Client::online(&server, "alice", "a");
    let own = join(&mut alice, "keep", "al", "");
    assert!(
        own.contains("affiliation='owner'") && !own.contains("code='201'"),
        "{own}"
    );
}

#[test]
fn creation_limits() {
    let server = server_with(
        &["alice", "bob"],
        "[muc]\nmax_rooms_per_user = 1\ncreators = \"admins\"\nadmins = [\"alice@localhost\"]\n",
    );
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    bob.send(&format!(
        "<presence to='b1@{MUC}/bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    error_condition(&bob.expect("type='error'"), "not-allowed");
    create_instant(&mut alice, "a1", "al");
    alice.send(&format!(
        "<presence to='a2@{MUC}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    error_condition(&alice.expect("type='error'"), "not-allowed");
}

#[test]
fn going_offline_leaves_every_room() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    create_instant(&mut alice, "porch", "al");
    join(&mut bob, "porch", "bo", "");
    alice.expect(&format!("from='porch@{MUC}/bo'"));
    // RFC 6121 §4.6.1: broadcast unavailable also ends directed presence, room joins included.
    bob.send("<presence type='unavailable'/>");
    let left = alice.expect(&format!(
        "from='porch@{MUC}/bo' to='alice@localhost/a' type='unavailable'"
    ));
    assert!(left.contains("role='none'"), "{left}");
    alice.send(&format!(
        "<message to='porch@{MUC}' type='groupchat'><body>anyone?</body></message>"
    ));
    alice.expect("anyone?");
    bob.sync();
    assert!(!bob.transcript.contains("anyone?"), "{}", bob.transcript);
}

#[test]
fn a_deleted_account_leaves_no_affiliation_behind() {
    let mut server = server_with(&["alice", "bob", "dave"], "");
    let mut alice = Client::online(&server, "alice", "a");
    create_instant(&mut alice, "club", "al");
    configure(&mut alice, "club", &field("persistentroom", "1"));
    for item in [
        "<item jid='bob@localhost' affiliation='admin'/>",
        "<item jid='dave@localhost' affiliation='member'/>",
    ] {
        assert!(admin_set(&mut alice, "club", item).contains("type='result'"));
    }
    let members = |alice: &mut Client| {
        alice.send(&format!(
            "<iq type='get' id='list' to='club@{MUC}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
             <item affiliation='member'/></query></iq>"
        ));
        alice.expect("id='list'")
    };
    assert!(members(&mut alice).contains("jid='dave@localhost'"));
    // Deleted while the server runs: a new account of that name is a stranger to the room.
    let out = server.hearth(&["deluser", "bob@localhost"], "");
    assert!(out.status.success(), "{out:?}");
    server.add_user("bob");
    let mut bob = Client::online(&server, "bob", "b");
    let own = join(&mut bob, "club", "bo", "");
    assert!(own.contains("affiliation='none'"), "{own}");
    // Deleted while it is stopped: the rooms forget it at the next start.
    drop((alice, bob));
    server.stop();
    let out = server.hearth(&["deluser", "dave@localhost"], "");
    assert!(out.status.success(), "{out:?}");
    server.add_user("dave");
    server.spawn();
    let mut alice = Client::online(&server, "alice", "a");
    let list = members(&mut alice);
    assert!(
        list.contains("type='result'") && !list.contains("dave@localhost"),
        "{list}"
    );
    let own = join(&mut alice, "club", "al", "");
    assert!(own.contains("affiliation='owner'"), "{own}");
}

/// Audit finding: an owner could add 76,000 member affiliations, each change costing
/// time linear in the list. A room now keeps at most `muc.max_affiliations` (default
/// 1,000); a new one beyond is `not-allowed` (RFC 6120 §8.3.3.10: the room's policy,
/// not a passing shortage, so not the `wait`-type `resource-constraint`), while changes
/// to existing ones still work and cost the same at any size.
#[test]
fn affiliations_are_capped_and_changes_stay_fast() {
    let server = server_with(&["alice"], "");
    let mut alice = Client::online(&server, "alice", "a");
    create_instant(&mut alice, "big", "al");
    let batch = |from: usize, to: usize| -> String {
        (from..to)
            .map(|n| format!("<item affiliation='member' jid='m{n}@localhost'/>"))
            .collect()
    };
    // The owner is one; 999 members fill the default cap, 100 per request.
    let mut times = Vec::new();
    for start in (0..999).step_by(100) {
        let started = std::time::Instant::now();
        let reply = admin_set(&mut alice, "big", &batch(start, (start + 100).min(999)));
        times.push(started.elapsed());
        assert!(
            with_doc(&reply, |iq| iq.attribute("type") == Some("result")),
            "{reply}"
        );
    }
    let reply = admin_set(&mut alice, "big", &batch(999, 1000));
    assert_eq!(
        iq_error(&reply),
        ("cancel".to_string(), "not-allowed".to_string())
    );
    // Changing or removing existing affiliations is still possible at the cap.
    let reply = admin_set(
        &mut alice,
        "big",
        "<item affiliation='admin' jid='m1@localhost'/><item affiliation='none' jid='m2@localhost'/>",
    );
    assert!(
        with_doc(&reply, |iq| iq.attribute("type") == Some("result")),
        "{reply}"
    );
    let reply = admin_set(&mut alice, "big", &batch(2000, 2001));
    assert!(
        with_doc(&reply, |iq| iq.attribute("type") == Some("result")),
        "{reply}"
    );
    // The last batch of 100 took about as long as the first (flat, not linear).
    let (first, last) = (times[0], times[times.len() - 2]);
    assert!(
        last <= first * 4 + patience(Duration::from_millis(200)),
        "{times:?}"
    );
    server.wait_for_log("muc.max_affiliations");
}
