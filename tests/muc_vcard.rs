//! Room avatars (XEP-0486 over vcard-temp) as clients see them: `vcard-temp` in a room's
//! disco#info, the vCard set by an owner only and read by anyone, the size limit of account
//! vCards, the avatar hash in the room info and in a presence from the room when it changes,
//! and the vCard of a persistent room kept across a restart.

mod common;

use common::*;

const ROOM: &str = "den@rooms.localhost";
/// SHA-1 of "hello", the photo below.
const HASH: &str = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
const CARD: &str = "<vCard xmlns='vcard-temp'><FN>The den</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard>";

fn iq(client: &mut Client, id: &str, ty: &str, payload: &str) -> String {
    client.send(&format!(
        "<iq type='{ty}' id='{id}' to='{ROOM}'>{payload}</iq>"
    ));
    client.expect(&format!("id='{id}'"))
}

fn room_info(client: &mut Client) -> String {
    iq(
        client,
        "info",
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    )
}

fn join(client: &mut Client, nick: &str) -> String {
    client.send(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    client.expect("code='110'")
}

#[test]
fn room_vcard_set_by_owners_read_by_anyone_and_kept() {
    let mut server = TestServer::start("[limits]\nmax_vcard_bytes = 2048\n");
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    join(&mut alice, "al");
    alice.expect("<subject/>");
    let configured = iq(
        &mut alice,
        "cfg",
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>\
         <field var='muc#roomconfig_persistentroom'><value>1</value></field></x></query>",
    );
    assert!(configured.contains("type='result'"), "{configured}");
    join(&mut bob, "bo");

    // What the compliance check looks for; no avatar yet.
    let info = room_info(&mut bob);
    assert!(info.contains("<feature var='vcard-temp'/>"), "{info}");
    assert!(!info.contains("avatarhash"), "{info}");
    let empty = iq(&mut bob, "v0", "get", "<vCard xmlns='vcard-temp'/>");
    assert!(
        empty.contains("type='result'") && empty.ends_with("><vCard xmlns='vcard-temp'/></iq>"),
        "{empty}"
    );

    // Only owners set it.
    let refused = iq(&mut bob, "v1", "set", CARD);
    assert!(
        refused.contains("type='error'") && refused.contains("<forbidden "),
        "{refused}"
    );

    let set = iq(&mut alice, "v2", "set", CARD);
    assert_eq!(
        set,
        format!("<iq type='result' id='v2' from='{ROOM}' to='alice@localhost/a'/>")
    );
    let update = format!("<x xmlns='vcard-temp:x:update'><photo>{HASH}</photo></x></presence>");
    for (client, jid) in [
        (&mut alice, "alice@localhost/a"),
        (&mut bob, "bob@localhost/b"),
    ] {
        let presence = client.expect("vcard-temp:x:update");
        assert_eq!(
            presence,
            format!("<presence from='{ROOM}' to='{jid}'>{update}")
        );
    }
    let got = iq(&mut bob, "v3", "get", "<vCard xmlns='vcard-temp'/>");
    assert!(got.ends_with(&format!(">{CARD}</iq>")), "{got}");
    let info = room_info(&mut bob);
    assert!(
        info.contains(&format!(
            "<field var='muc#roominfo_avatarhash' type='text-multi'><value>{HASH}</value></field>"
        )),
        "{info}"
    );

    // Larger than an account's vCard may be: refused, the old one stays.
    let big = format!(
        "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{}</BINVAL></PHOTO></vCard>",
        "QUFB".repeat(600)
    );
    let refused = iq(&mut alice, "v4", "set", &big);
    assert!(refused.contains("<policy-violation "), "{refused}");
    let got = iq(&mut bob, "v5", "get", "<vCard xmlns='vcard-temp'/>");
    assert!(got.ends_with(&format!(">{CARD}</iq>")), "{got}");

    // The persistent room keeps it across a restart; anyone, not only occupants, reads it.
    drop((alice, bob));
    server.stop();
    server.spawn();
    let mut carol = Client::online(&server, "carol", "c");
    let got = iq(&mut carol, "v6", "get", "<vCard xmlns='vcard-temp'/>");
    assert!(got.ends_with(&format!(">{CARD}</iq>")), "{got}");
    let info = room_info(&mut carol);
    assert!(info.contains(&format!("<value>{HASH}</value>")), "{info}");
}

#[test]
fn removing_the_photo_is_announced() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send(&format!(
        "<presence to='{ROOM}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    alice.expect("<subject/>");
    let owner = "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query>";
    assert!(iq(&mut alice, "cfg", "set", owner).contains("type='result'"));
    assert!(iq(&mut alice, "v1", "set", CARD).contains("type='result'"));
    alice.expect(&format!("<photo>{HASH}</photo>"));

    // A vCard without a photo: the room tells its occupants the avatar is gone.
    let card = "<vCard xmlns='vcard-temp'><FN>The den</FN></vCard>";
    assert!(iq(&mut alice, "v2", "set", card).contains("type='result'"));
    let presence = alice.expect("vcard-temp:x:update");
    assert_eq!(
        presence,
        format!("<presence from='{ROOM}' to='alice@localhost/a'><x xmlns='vcard-temp:x:update'><photo></photo></x></presence>")
    );
    let info = room_info(&mut alice);
    assert!(!info.contains("avatarhash"), "{info}");
    // Setting the same vCard again changes nothing, so nothing is announced.
    assert!(iq(&mut alice, "v3", "set", card).contains("type='result'"));
    alice.expect_silence(std::time::Duration::from_millis(300));
}
