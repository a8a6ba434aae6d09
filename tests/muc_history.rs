//! The discussion history of persistent chat rooms (XEP-0045 §7.2.14) across restarts, as
//! clients see it: after a clean stop, and after a `kill -9` once the history had time to be
//! written, a joining occupant gets the same messages in the same order with their original
//! delay stamps (XEP-0203), bounded by its `<history/>` request; temporary rooms, destroyed
//! rooms and rooms made temporary leave nothing in the store.

mod common;

use common::muc::*;
use common::*;
use hearth::store::{Store, DEFAULT_CACHE_BYTES};
use std::time::Duration;

/// Joins `room` as `nick` with `history` in the join element; returns the own presence and
/// what followed it up to the subject: the history, then the subject.
fn join(client: &mut Client, room: &str, nick: &str, history: &str) -> (String, Vec<String>) {
    client.send(&format!(
        "<presence to='{room}@{MUC}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{history}</x></presence>"
    ));
    let own = client.expect("code='110'");
    let mut got = Vec::new();
    loop {
        let stanza = client.stanza();
        let last = stanza.contains("<subject");
        got.push(stanza);
        if last {
            return (own, got);
        }
    }
}

/// The history a join gets, subject left out.
fn history(client: &mut Client, room: &str, nick: &str, request: &str) -> Vec<String> {
    let (_, mut got) = join(client, room, nick, request);
    got.pop();
    got
}

/// Creates `room` as its owner and submits the configuration form with `fields`.
fn create(client: &mut Client, room: &str, fields: &str) {
    let (own, got) = join(client, room, "al", "");
    assert!(own.contains("code='201'"), "{own}");
    assert_eq!(got.len(), 1, "a new room has no history: {got:?}");
    configure(client, room, fields);
}

fn persistent() -> String {
    field("persistentroom", "1")
}

fn say(client: &mut Client, room: &str, id: &str, body: &str) {
    client.send(&format!(
        "<message type='groupchat' id='{id}' to='{room}@{MUC}'><body>{body}</body></message>"
    ));
    client.expect(body);
}

/// Long enough for the server to have written changed history: its interval, stretched for
/// slow runners, plus a margin for the commit.
fn wait_for_history_write() {
    std::thread::sleep(patience(hearth::muc::HISTORY_FLUSH_EVERY) + Duration::from_secs(2));
}

/// The rooms with stored history, read from the data dir of a stopped server.
fn stored_histories(server: &TestServer) -> Vec<String> {
    let store = Store::open(&server.data_dir(), DEFAULT_CACHE_BYTES).unwrap();
    let rooms = store.muc_history_all().unwrap();
    rooms.into_iter().map(|(room, _)| room).collect()
}

#[test]
fn persistent_room_history_survives_a_clean_stop_and_a_sigkill() {
    let mut server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    create(&mut alice, "keep", &persistent());
    say(&mut alice, "keep", "m1", "first words");
    say(&mut alice, "keep", "m2", "second &amp; words");
    let mut bob = Client::online(&server, "bob", "b");
    let before = history(&mut bob, "keep", "bo", "");
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before[0].contains("first words") && before[0].contains("id='m1'"));
    assert!(before[1].contains("second &amp; words") && before[1].contains("id='m2'"));
    for past in &before {
        assert!(
            past.contains(&format!(
                "<delay xmlns='urn:xmpp:delay' from='keep@{MUC}' stamp='"
            )) && past.contains(&format!("from='keep@{MUC}/al'"))
                && past.contains(&format!("by='keep@{MUC}'")),
            "{past}"
        );
    }
    drop(bob);
    drop(alice);
    // A history stamped again at start would show a later second.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(server.stop().success());
    server.spawn();

    // The same stanzas: order, ids, stanza-ids and the original delay stamps.
    let mut bob = Client::online(&server, "bob", "b");
    assert_eq!(history(&mut bob, "keep", "bo", ""), before);
    say(&mut bob, "keep", "m3", "third words");
    wait_for_history_write();
    server.kill();
    server.spawn();

    let mut bob = Client::online(&server, "bob", "b");
    let after = history(&mut bob, "keep", "bo", "<history maxstanzas='2'/>");
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], before[1]);
    assert!(
        after[1].contains("third words")
            && after[1].contains(&format!("from='keep@{MUC}/bo'"))
            && after[1].contains("urn:xmpp:delay"),
        "{}",
        after[1]
    );
    let mut alice = Client::online(&server, "alice", "a");
    let all = history(&mut alice, "keep", "al", "<history seconds='3600'/>");
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all[0].contains("first words") && all[2].contains("third words"));
    let mut carol = Client::online(&server, "alice", "c");
    let since = "<history since='2999-01-01T00:00:00Z'/>";
    assert_eq!(
        history(&mut carol, "keep", "ca", since),
        Vec::<String>::new()
    );
}

#[test]
fn temporary_destroyed_and_unpersisted_rooms_leave_no_history() {
    let mut server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    create(&mut alice, "temp", "");
    say(&mut alice, "temp", "t", "temporary words");
    create(&mut alice, "gone", &persistent());
    say(&mut alice, "gone", "g", "destroyed words");
    create(&mut alice, "flip", &persistent());
    say(&mut alice, "flip", "f", "unpersisted words");
    create(
        &mut alice,
        "zero",
        &(persistent() + &field("historylength", "0")),
    );
    say(&mut alice, "zero", "z", "unkept words");
    create(&mut alice, "kept", &persistent());
    say(&mut alice, "kept", "k", "kept words");
    wait_for_history_write();
    alice.send(&format!(
        "<iq type='set' id='d1' to='gone@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <destroy/></query></iq>"
    ));
    assert!(alice.expect("id='d1'").contains("type='result'"));
    alice.send(&format!(
        "<iq type='set' id='cfg' to='flip@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>{}</x></query></iq>",
        field("persistentroom", "0")
    ));
    assert!(alice.expect("id='cfg'").contains("type='result'"));
    drop(alice);
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.stop().success());
    assert_eq!(stored_histories(&server), ["kept"]);
    server.spawn();

    let mut bob = Client::online(&server, "bob", "b");
    for room in ["temp", "gone", "flip"] {
        let (own, got) = join(&mut bob, room, "bo", "");
        assert!(own.contains("code='201'"), "a new {room}: {own}");
        assert_eq!(got.len(), 1, "{room} starts empty: {got:?}");
    }
    assert_eq!(history(&mut bob, "zero", "bo", ""), Vec::<String>::new());
    let kept = history(&mut bob, "kept", "bo", "");
    assert!(
        kept.len() == 1 && kept[0].contains("kept words"),
        "{kept:?}"
    );
}
