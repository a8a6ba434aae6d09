//! XEP-0313 message archives as clients see them: archiving for both parties with the
//! recipient's stanza-id, paging a large archive both ways, filters, preferences, offline
//! messages, errors, account deletion, and a room's archive.

mod common;

use common::muc::*;
use common::*;

const NS: &str = "urn:xmpp:mam:2";

fn server_with(users: &[&str], extra: &str) -> TestServer {
    let server = TestServer::start(extra);
    for user in users {
        server.add_user(user);
    }
    server
}

/// One archived message as a query returns it.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    id: String,
    body: String,
    from: String,
    stamp: String,
}

/// The `<fin/>` of a query.
#[derive(Debug)]
struct Fin {
    complete: bool,
    first: Option<(String, usize)>,
    last: Option<String>,
    count: usize,
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut xml = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{NS}</value></field>"
    );
    for (var, value) in fields {
        xml.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    xml.push_str("</x>");
    xml
}

/// Sends a query (`to` empty: the own archive) and collects results up to the answer, which
/// is returned raw when it is an error.
fn query(
    client: &mut Client,
    to: &str,
    fields: &[(&str, &str)],
    rsm: &str,
) -> Result<(Vec<Item>, Fin), String> {
    query_with(client, to, fields, rsm, "")
}

/// [`query`] with `extra` (such as `<flip-page/>`) in the `<query/>` after the paging.
fn query_with(
    client: &mut Client,
    to: &str,
    fields: &[(&str, &str)],
    rsm: &str,
    extra: &str,
) -> Result<(Vec<Item>, Fin), String> {
    let to = if to.is_empty() {
        String::new()
    } else {
        format!(" to='{to}'")
    };
    client.send(&format!(
        "<iq type='set' id='mamq'{to}><query xmlns='{NS}' queryid='qq'>{}<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>{extra}</query></iq>",
        form(fields)
    ));
    let mut items = Vec::new();
    loop {
        let stanza = client.stanza();
        if stanza.contains("id='mamq'") {
            if !stanza.contains("type='result'") {
                return Err(stanza);
            }
            let fin = with_doc(&stanza, |iq| {
                let fin = iq.first_element_child().unwrap();
                assert!(fin.has_tag_name((NS, "fin")), "{stanza}");
                let set = fin.first_element_child().unwrap();
                let child = |name: &str| set.children().find(|c| c.has_tag_name(name));
                Fin {
                    complete: fin.attribute("complete") == Some("true"),
                    first: child("first").map(|f| {
                        (
                            f.text().unwrap().to_string(),
                            f.attribute("index").unwrap().parse().unwrap(),
                        )
                    }),
                    last: child("last").map(|l| l.text().unwrap().to_string()),
                    count: child("count").unwrap().text().unwrap().parse().unwrap(),
                }
            });
            return Ok((items, fin));
        }
        if !stanza.contains(&format!("<result xmlns='{NS}'")) {
            continue;
        }
        items.push(with_doc(&stanza, |message| {
            let result = message.first_element_child().unwrap();
            assert_eq!(result.attribute("queryid"), Some("qq"), "{stanza}");
            let forwarded = result.first_element_child().unwrap();
            let delay = forwarded.first_element_child().unwrap();
            let original = delay.next_sibling_element().unwrap();
            assert!(
                original.has_tag_name(("jabber:client", "message")),
                "{stanza}"
            );
            Item {
                id: result.attribute("id").unwrap().to_string(),
                body: text_of_child(original, "body"),
                from: original.attribute("from").unwrap_or_default().to_string(),
                stamp: delay.attribute("stamp").unwrap().to_string(),
            }
        }));
    }
}

fn text_of_child(node: roxmltree::Node, name: &str) -> String {
    node.children()
        .find(|c| c.has_tag_name(name))
        .and_then(|c| c.text())
        .unwrap_or_default()
        .to_string()
}

fn stanza_id(message: &str, by: &str) -> String {
    with_doc(message, |m| {
        let sids: Vec<_> = m
            .children()
            .filter(|c| {
                c.has_tag_name(("urn:xmpp:sid:0", "stanza-id")) && c.attribute("by") == Some(by)
            })
            .collect();
        assert_eq!(sids.len(), 1, "{message}");
        sids[0].attribute("id").unwrap().to_string()
    })
}

fn chat(to: &str, body: &str) -> String {
    format!("<message type='chat' to='{to}@localhost'><body>{body}</body></message>")
}

#[test]
fn thousands_of_messages_page_both_ways_without_gaps() {
    const TOTAL: usize = 2000;
    let server = server_with(&["alice", "bob"], NO_RATE_LIMIT);
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    bob.sync();
    for batch in 0..TOTAL / 200 {
        let xml: String = (0..200)
            .map(|n| chat("bob", &format!("m{}", batch * 200 + n)))
            .collect();
        alice.send(&xml);
    }
    alice.sync();
    let mut delivered = Vec::new();
    while delivered.len() < TOTAL {
        let message = bob.expect("<body>m");
        delivered.push(stanza_id(&message, "bob@localhost"));
    }

    // Forward through alice's archive, 100 at a time.
    let mut seen = Vec::new();
    let mut rsm = "<max>100</max>".to_string();
    loop {
        let (items, fin) = query(&mut alice, "", &[], &rsm).unwrap();
        assert_eq!(fin.count, TOTAL);
        assert_eq!(fin.first.as_ref().map(|f| f.1), Some(seen.len()));
        seen.extend(items.iter().map(|i| i.body.clone()));
        let last = fin.last.unwrap();
        assert_eq!(last, items.last().unwrap().id);
        if fin.complete {
            break;
        }
        rsm = format!("<max>100</max><after>{last}</after>");
    }
    let expected: Vec<String> = (0..TOTAL).map(|n| format!("m{n}")).collect();
    assert_eq!(seen, expected);

    // Backward through bob's archive from the last page; its ids are the stanza-ids bob got.
    let mut ids = Vec::new();
    let mut rsm = "<max>70</max><before/>".to_string();
    loop {
        let (items, fin) = query(&mut bob, "", &[], &rsm).unwrap();
        assert_eq!(fin.count, TOTAL);
        assert!(items.iter().all(|i| i.from == "alice@localhost/a"));
        let first = fin.first.unwrap();
        assert_eq!(first.1, TOTAL - ids.len() - items.len());
        let mut page: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        page.append(&mut ids);
        ids = page;
        if fin.complete {
            break;
        }
        rsm = format!("<max>70</max><before>{}</before>", first.0);
    }
    assert_eq!(ids, delivered);
}

#[test]
fn filters_by_with_and_time() {
    let server = server_with(&["alice", "bob", "carol"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "phone");
    bob.send(&chat("alice", "from bob"));
    bob.sync();
    alice.send(&chat("carol", "to carol"));
    alice.send(
        "<message type='chat' to='bob@localhost/phone'><body>to bob's phone</body></message>",
    );
    alice.sync();

    let bodies = |items: Vec<Item>| items.into_iter().map(|i| i.body).collect::<Vec<_>>();
    let (items, fin) = query(&mut alice, "", &[("with", "bob@localhost")], "").unwrap();
    assert_eq!(bodies(items), ["from bob", "to bob's phone"]);
    assert!(fin.complete && fin.count == 2);
    let (items, _) = query(&mut alice, "", &[("with", "bob@localhost/phone")], "").unwrap();
    assert_eq!(bodies(items), ["from bob", "to bob's phone"]);
    let (items, _) = query(&mut alice, "", &[("with", "bob@localhost/laptop")], "").unwrap();
    assert!(items.is_empty());
    let (items, _) = query(
        &mut alice,
        "alice@localhost",
        &[("with", "carol@localhost")],
        "",
    )
    .unwrap();
    assert_eq!(bodies(items), ["to carol"]);

    let (all, _) = query(&mut alice, "", &[], "").unwrap();
    let stamp = all[0].stamp.clone();
    let (items, _) = query(&mut alice, "", &[("start", &stamp)], "").unwrap();
    assert_eq!(items.len(), 3);
    let (items, fin) = query(&mut alice, "", &[("end", "2000-01-01T00:00:00Z")], "").unwrap();
    assert!(items.is_empty() && fin.count == 0 && fin.complete && fin.first.is_none());
    let (items, _) = query(&mut alice, "", &[("start", "2999-01-01T00:00:00Z")], "").unwrap();
    assert!(items.is_empty());
    // max 0: only the count.
    let (items, fin) = query(&mut alice, "", &[], "<max>0</max>").unwrap();
    assert!(items.is_empty() && fin.count == 3);
}

#[test]
fn errors_and_form() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send(&format!("<iq type='get' id='f'><query xmlns='{NS}'/></iq>"));
    let form = alice.expect("id='f'");
    for var in [
        "FORM_TYPE",
        "with",
        "start",
        "end",
        "before-id",
        "after-id",
        "ids",
    ] {
        assert!(form.contains(&format!("var='{var}'")), "{form}");
    }
    let condition = |result: Result<(Vec<Item>, Fin), String>, condition: &str| {
        let error = result.unwrap_err();
        assert!(
            error.contains(&format!("<{condition} ")),
            "wanted {condition}: {error}"
        );
    };
    condition(
        query(&mut alice, "", &[], "<after>123abc</after>"),
        "item-not-found",
    );
    condition(
        query(&mut alice, "", &[], "<before>nothex</before>"),
        "item-not-found",
    );
    condition(
        query(&mut alice, "", &[("withtext", "hi")], ""),
        "feature-not-implemented",
    );
    condition(
        query(&mut alice, "", &[("start", "yesterday")], ""),
        "bad-request",
    );
    condition(query(&mut alice, "bob@localhost", &[], ""), "forbidden");

    alice.send("<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = alice.expect("id='d'");
    assert!(info.contains("<feature var='urn:xmpp:mam:2'/>"), "{info}");
    assert!(
        info.contains("<feature var='urn:xmpp:mam:2#extended'/>"),
        "{info}"
    );
    assert!(info.contains("<feature var='urn:xmpp:sid:0'/>"), "{info}");
}

#[test]
fn client_stanza_ids_are_replaced_and_hints_respected() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    // Bob is available before anything is sent (chat states are never stored).
    bob.sync();
    alice.send(
        "<message type='chat' to='bob@localhost'><body>forged</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='fake'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='other@example' id='kept'/></message>",
    );
    let got = bob.expect("forged");
    assert!(
        !got.contains("'fake'") && got.contains("id='kept'"),
        "{got}"
    );
    let id = stanza_id(&got, "bob@localhost");
    alice.send("<message type='chat' to='bob@localhost'><body>secret</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>");
    alice.send("<message type='chat' to='bob@localhost'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    bob.expect("secret");
    bob.expect("composing");
    bob.sync();
    let (items, _) = query(&mut bob, "", &[], "").unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].id.as_str(), items[0].body.as_str()),
        (id.as_str(), "forged")
    );
}

#[test]
fn offline_messages_are_archived_and_carry_the_id() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send(&chat("bob", "while you were out"));
    alice.sync();
    let mut bob = Client::online(&server, "bob", "b");
    let got = bob.expect("while you were out");
    let id = stanza_id(&got, "bob@localhost");
    let (items, _) = query(&mut bob, "", &[], "").unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id, id);
    assert_eq!(items[0].from, "alice@localhost/a");
}

#[test]
fn preferences_never_and_roster() {
    let server = server_with(&["alice", "bob", "carol"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let mut carol = Client::online(&server, "carol", "c");
    alice.send(&format!(
        "<iq type='get' id='p0'><prefs xmlns='{NS}'/></iq>"
    ));
    assert!(alice.expect("id='p0'").contains("default='always'"));

    alice.send(&format!(
        "<iq type='set' id='p1'><prefs xmlns='{NS}' default='roster'><always><jid>carol@localhost</jid></always><never/></prefs></iq>"
    ));
    let set = alice.expect("id='p1'");
    assert!(
        set.contains("type='result'") && set.contains("default='roster'"),
        "{set}"
    );
    alice.send("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query></iq>");
    alice.expect("id='r1'");
    bob.send(&chat("alice", "on the roster"));
    carol.send(&chat("alice", "always listed"));
    bob.sync();
    carol.sync();
    alice.send("<iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
    alice.expect("id='r2'");
    bob.send(&chat("alice", "no longer on the roster"));
    let last = alice.expect("no longer on the roster");
    assert!(!last.contains("urn:xmpp:sid:0"), "{last}");
    let (items, _) = query(&mut alice, "", &[], "").unwrap();
    let bodies: Vec<_> = items.iter().map(|i| i.body.as_str()).collect();
    assert_eq!(bodies, ["on the roster", "always listed"]);

    alice.send(&format!(
        "<iq type='set' id='p2'><prefs xmlns='{NS}' default='never'/></iq>"
    ));
    alice.expect("id='p2'");
    alice.send(&format!(
        "<iq type='get' id='p3'><prefs xmlns='{NS}'/></iq>"
    ));
    assert!(alice.expect("id='p3'").contains("default='never'"));
    alice.send(&chat("bob", "unarchived for alice"));
    alice.sync();
    assert_eq!(query(&mut alice, "", &[], "").unwrap().0.len(), 2);
    // Bob's own archive does not depend on alice's preferences.
    let (items, _) = query(&mut bob, "", &[("with", "alice@localhost")], "").unwrap();
    assert_eq!(items.len(), 3);
}

#[test]
fn deleting_the_account_clears_the_archive() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send(&chat("bob", "soon gone"));
    alice.sync();
    alice.send("<iq type='set' id='u'><query xmlns='jabber:iq:register'><remove/></query></iq>");
    alice.expect("id='u'");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    let (items, fin) = query(&mut alice, "", &[], "").unwrap();
    assert!(items.is_empty() && fin.count == 0);
    let mut bob = Client::online(&server, "bob", "b");
    assert_eq!(query(&mut bob, "", &[], "").unwrap().0.len(), 1);
}

#[test]
fn disabled_archive_stamps_nothing() {
    let server = server_with(&["alice", "bob"], "[mam]\nenabled = false\n");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    alice.send(&chat("bob", "plain"));
    let got = bob.expect("plain");
    assert!(!got.contains("urn:xmpp:sid:0"), "{got}");
    let error = query(&mut bob, "", &[], "").unwrap_err();
    assert!(error.contains("<service-unavailable "), "{error}");
}

#[test]
fn room_archive_answers_occupants() {
    let server = server_with(&["alice", "bob", "carol"], "");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let mut carol = Client::online(&server, "carol", "c");
    alice.send(&format!(
        "<presence to='hall@{MUC}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    alice.expect("code='110'");
    alice.send(&format!(
        "<iq type='get' id='c0' to='hall@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"
    ));
    assert!(alice
        .expect("id='c0'")
        .contains("muc#roomconfig_enablearchiving"));
    configure(&mut alice, "hall", &field("enablearchiving", "1"));
    alice.send(&format!("<iq type='get' id='c2' to='hall@{MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    let info = alice.expect("id='c2'");
    for feature in ["urn:xmpp:mam:2", "urn:xmpp:mam:2#extended"] {
        assert!(
            info.contains(&format!("<feature var='{feature}'/>")),
            "{info}"
        );
    }
    bob.send(&format!(
        "<presence to='hall@{MUC}/bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    bob.expect("code='110'");
    for n in 0..3 {
        alice.send(&format!(
            "<message type='groupchat' to='hall@{MUC}'><body>hall {n}</body></message>"
        ));
    }
    let mut ids = Vec::new();
    for n in 0..3 {
        let got = bob.expect(&format!("hall {n}"));
        ids.push(stanza_id(&got, &format!("hall@{MUC}")));
    }
    let (items, fin) = query(&mut bob, &format!("hall@{MUC}"), &[], "<max>2</max>").unwrap();
    assert_eq!(fin.count, 3);
    assert!(!fin.complete);
    assert_eq!(
        items.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        ids[..2]
    );
    assert_eq!(items[0].from, format!("hall@{MUC}/al"));
    let (items, fin) = query(
        &mut bob,
        &format!("hall@{MUC}"),
        &[],
        &format!("<after>{}</after>", ids[1]),
    )
    .unwrap();
    assert!(fin.complete);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].body, "hall 2");
    // The room's archive answers the #extended queries too.
    let (items, _) = query(&mut bob, &format!("hall@{MUC}"), &[("ids", &ids[1])], "").unwrap();
    assert_eq!(items[0].body, "hall 1");
    bob.send(&format!(
        "<iq type='get' id='meta' to='hall@{MUC}'><metadata xmlns='{NS}'/></iq>"
    ));
    let meta = bob.expect("id='meta'");
    assert!(
        meta.contains(&format!("<start id='{}' ", ids[0]))
            && meta.contains(&format!("<end id='{}' ", ids[2])),
        "{meta}"
    );
    // Carol is not in the room.
    let error = query(&mut carol, &format!("hall@{MUC}"), &[], "").unwrap_err();
    assert!(error.contains("<forbidden "), "{error}");
    // The 1:1 archive of bob does not hold groupchat.
    assert!(query(&mut bob, "", &[], "").unwrap().0.is_empty());

    // A destroyed room's archive goes with it: a new room of that name starts empty.
    alice.send(&format!(
        "<iq type='set' id='x' to='hall@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>"
    ));
    alice.expect("id='x'");
    alice.send(&format!(
        "<presence to='hall@{MUC}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    alice.expect("code='201'");
    alice.send(&format!(
        "<iq type='set' id='c3' to='hall@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>\
         <field var='muc#roomconfig_enablearchiving'><value>1</value></field></x></query></iq>"
    ));
    assert!(alice.expect("id='c3'").contains("type='result'"));
    let (items, fin) = query(&mut alice, &format!("hall@{MUC}"), &[], "").unwrap();
    assert!(items.is_empty() && fin.count == 0);
}

#[test]
fn a_message_refused_for_a_full_offline_queue_leaves_the_recipients_archive() {
    let server = server_with(&["alice", "bob"], "[limits]\noffline_quota = 1\n");
    let mut alice = Client::online(&server, "alice", "a");
    alice.send(&chat("bob", "kept"));
    alice.send(&chat("bob", "refused"));
    let error = alice.expect("type='error'");
    assert!(error.contains("<service-unavailable "), "{error}");
    alice.sync();
    assert_eq!(query(&mut alice, "", &[], "").unwrap().0.len(), 2);
    let mut bob = Client::online(&server, "bob", "b");
    bob.expect("kept");
    let (items, _) = query(&mut bob, "", &[], "").unwrap();
    let bodies: Vec<_> = items.iter().map(|i| i.body.as_str()).collect();
    assert_eq!(bodies, ["kept"]);
}

/// `<metadata/>` of the own archive as (start id, start stamp, end id, end stamp).
fn metadata(client: &mut Client) -> Option<(String, String, String, String)> {
    client.send(&format!(
        "<iq type='get' id='meta'><metadata xmlns='{NS}'/></iq>"
    ));
    let answer = client.expect("id='meta'");
    with_doc(&answer, |iq| {
        assert_eq!(iq.attribute("type"), Some("result"), "{answer}");
        let metadata = iq.first_element_child().unwrap();
        assert!(metadata.has_tag_name((NS, "metadata")), "{answer}");
        let bound = |name: &str| {
            metadata
                .children()
                .find(|c| c.has_tag_name((NS, name)))
                .map(|b| {
                    (
                        b.attribute("id").unwrap().to_string(),
                        b.attribute("timestamp").unwrap().to_string(),
                    )
                })
        };
        match (bound("start"), bound("end")) {
            (Some(start), Some(end)) => Some((start.0, start.1, end.0, end.1)),
            (None, None) => None,
            other => panic!("{other:?}: {answer}"),
        }
    })
}

#[test]
fn extended_ids_flipped_pages_and_metadata() {
    let server = server_with(&["alice", "bob"], "");
    let mut alice = Client::online(&server, "alice", "a");
    assert_eq!(metadata(&mut alice), None);
    for n in 0..5 {
        alice.send(&chat("bob", &format!("m{n}")));
    }
    alice.sync();
    let (all, _) = query(&mut alice, "", &[], "").unwrap();
    let id: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
    let bodies = |items: &[Item]| items.iter().map(|i| i.body.clone()).collect::<Vec<_>>();
    assert_eq!(
        metadata(&mut alice),
        Some((
            id[0].to_string(),
            all[0].stamp.clone(),
            id[4].to_string(),
            all[4].stamp.clone()
        ))
    );

    // after-id/before-id narrow the matches (and the count); they are exclusive.
    let (items, fin) = query(&mut alice, "", &[("after-id", id[1])], "").unwrap();
    assert_eq!(bodies(&items), ["m2", "m3", "m4"]);
    assert!(fin.complete && fin.count == 3);
    let (items, fin) = query(
        &mut alice,
        "",
        &[("after-id", id[0]), ("before-id", id[3])],
        "",
    )
    .unwrap();
    assert_eq!(
        (bodies(&items), fin.count),
        (vec!["m1".into(), "m2".into()], 2)
    );
    // Unlike RSM's <before/>, before-id does not page from the end.
    let (items, fin) = query(&mut alice, "", &[("before-id", id[4])], "<max>2</max>").unwrap();
    assert_eq!(bodies(&items), ["m0", "m1"]);
    assert!(!fin.complete && fin.count == 4);

    // ids: just those messages, oldest first, whatever order they were asked in.
    let both = format!("{}</value><value>{}", id[4], id[1]);
    let (items, fin) = query(&mut alice, "", &[("ids", &both)], "").unwrap();
    assert_eq!(
        (bodies(&items), fin.count),
        (vec!["m1".into(), "m4".into()], 2)
    );
    for missing in [format!("{}</value><value>abc", id[1]), "zz".to_string()] {
        let error = query(&mut alice, "", &[("ids", &missing)], "").unwrap_err();
        assert!(error.contains("<item-not-found "), "{error}");
    }
    let error = query(&mut alice, "", &[("after-id", "123")], "").unwrap_err();
    assert!(error.contains("<item-not-found "), "{error}");

    // A flipped page holds the same messages, sent newest first.
    let (items, fin) =
        query_with(&mut alice, "", &[], "<max>2</max><before/>", "<flip-page/>").unwrap();
    assert_eq!(bodies(&items), ["m4", "m3"]);
    assert_eq!(fin.first.map(|f| (f.0, f.1)), Some((id[3].to_string(), 3)));
    assert_eq!(fin.last.as_deref(), Some(id[4]));
    assert!(!fin.complete);

    // Bob's archive is his own: its bounds are the ids he was given.
    let mut bob = Client::online(&server, "bob", "b");
    let first = stanza_id(&bob.expect("m0"), "bob@localhost");
    let (start, _, _, _) = metadata(&mut bob).unwrap();
    assert_eq!(start, first);
    alice.send(&format!(
        "<iq type='set' id='meta2'><metadata xmlns='{NS}'/></iq>"
    ));
    assert!(alice.expect("id='meta2'").contains("<bad-request "));
}
