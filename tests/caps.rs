//! Entity capabilities (XEP-0115) judged from the client's side: the server's own `ver`
//! recomputed here, independently of hearth, from the disco#info answer a client parses;
//! and a client whose answer does not match the `ver` it announced (Profanity does this at
//! every login) is not believed, and the log says why.

mod common;

use common::*;
use hearth::sasl::base64;
use hearth::sasl::Mechanism;

const CAPS: &str = "http://jabber.org/protocol/caps";
const INFO: &str = "http://jabber.org/protocol/disco#info";
const DATA: &str = "jabber:x:data";
const XML: &str = "http://www.w3.org/XML/1998/namespace";

/// XEP-0115 §5.1 over a parsed disco#info `<query/>`: identities sorted by category, type,
/// then xml:lang (§5.1 step 2), features sorted, then each extended form (sorted by
/// FORM_TYPE) as FORM_TYPE, then its other fields sorted by var, each with its values
/// sorted. Base64 of the SHA-1 of it (§5.1 steps 8–9).
fn caps_hash(query: roxmltree::Node) -> String {
    let mut identities: Vec<(&str, &str, &str, &str)> = query
        .children()
        .filter(|c| c.has_tag_name((INFO, "identity")))
        .map(|i| {
            (
                i.attribute("category").unwrap(),
                i.attribute("type").unwrap(),
                i.attribute((XML, "lang")).unwrap_or(""),
                i.attribute("name").unwrap_or(""),
            )
        })
        .collect();
    identities.sort();
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.has_tag_name((INFO, "feature")))
        .map(|f| f.attribute("var").unwrap())
        .collect();
    features.sort();
    let mut forms: Vec<(String, String)> = Vec::new();
    for form in query.children().filter(|c| c.has_tag_name((DATA, "x"))) {
        let mut form_type = String::new();
        let mut fields: Vec<(&str, Vec<&str>)> = Vec::new();
        for field in form.children().filter(|c| c.has_tag_name((DATA, "field"))) {
            let mut values: Vec<&str> = field
                .children()
                .filter(|v| v.has_tag_name((DATA, "value")))
                .map(|v| v.text().unwrap_or(""))
                .collect();
            match field.attribute("var").unwrap() {
                "FORM_TYPE" => form_type = values[0].to_owned(),
                var => {
                    values.sort();
                    fields.push((var, values));
                }
            }
        }
        fields.sort();
        let mut text = format!("{form_type}<");
        for (var, values) in fields {
            text += &format!("{var}<");
            for value in values {
                text += &format!("{value}<");
            }
        }
        forms.push((form_type, text));
    }
    forms.sort();
    let mut string = String::new();
    for (category, ty, lang, name) in identities {
        string += &format!("{category}/{ty}/{lang}/{name}<");
    }
    for feature in features {
        string += &format!("{feature}<");
    }
    for (_, text) in forms {
        string += &text;
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, string.as_bytes());
    base64::encode(digest.as_ref())
}

/// The server's disco#info answer to `client`, for `node` or none.
fn server_info(client: &mut Client, id: &str, node: Option<&str>) -> String {
    let node = node.map_or(String::new(), |n| format!(" node='{n}'"));
    client.send(&format!(
        "<iq type='get' id='{id}' to='{DOMAIN}'><query xmlns='{INFO}'{node}/></iq>"
    ));
    client.expect(&format!("id='{id}'"))
}

/// The children of an iq's `<query/>` as (namespace, name, sorted attributes, text).
fn query_children(iq: &str) -> Vec<String> {
    with_doc(iq, |iq| {
        assert_eq!(iq.attribute("type"), Some("result"), "{iq:?}");
        let query = iq.first_element_child().unwrap();
        query
            .descendants()
            .skip(1)
            .filter(|n| n.is_element())
            .map(|n| {
                let mut attributes: Vec<String> = n
                    .attributes()
                    .map(|a| format!("{}={}", a.name(), a.value()))
                    .collect();
                attributes.sort();
                format!(
                    "{:?} {:?} {attributes:?} {:?}",
                    n.tag_name().namespace(),
                    n.tag_name().name(),
                    n.text()
                )
            })
            .collect()
    })
}

/// XEP-0115 §6.3 and §6.2: the `<c/>` in the stream features after authentication names a
/// `ver` that is the hash of the server's disco#info answer, and a query to `node#ver`
/// answers the same (the entity MUST answer it).
#[test]
fn the_servers_own_ver_is_the_hash_of_its_disco_info() {
    let server = TestServer::start(
        "[contact]\nabuse = [\"xmpp:abuse@localhost\", \"mailto:abuse@example.org\"]\n\
         support = [\"https://help.example.org/\"]\n",
    );
    server.add_user("alice");
    let mut client = Client::connect(&server);
    client.starttls();
    assert!(client.scram(Mechanism::ScramSha256, "alice", PASSWORD));
    client.open_stream();
    client.header();
    let features = client.stanza();
    let (node, ver, hash) = with_doc(&features, |features| {
        let c = features
            .children()
            .find(|c| c.has_tag_name((CAPS, "c")))
            .unwrap_or_else(|| panic!("no caps in {features:?}"));
        let attribute = |name| c.attribute(name).unwrap().to_owned();
        (attribute("node"), attribute("ver"), attribute("hash"))
    });
    assert_eq!(hash, "sha-1");
    assert!(!node.contains('#'), "{node}");
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    client.expect("id='b'");

    let plain = server_info(&mut client, "plain", None);
    let computed = with_doc(&plain, |iq| caps_hash(iq.first_element_child().unwrap()));
    assert_eq!(computed, ver, "{plain}");
    // The hash covers an extended form here, so the form is part of what was checked.
    assert!(
        plain.contains("http://jabber.org/network/serverinfo"),
        "{plain}"
    );

    let by_node = server_info(&mut client, "by-node", Some(&format!("{node}#{ver}")));
    let echoed = with_doc(&by_node, |iq| {
        let query = iq.first_element_child().unwrap();
        query.attribute("node").map(str::to_owned)
    });
    assert_eq!(echoed, Some(format!("{node}#{ver}")));
    assert_eq!(query_children(&by_node), query_children(&plain));
}

/// A client that announces one `ver` and, asked about it, answers with a different
/// feature set (Profanity adds `+notify` features after its first presence and answers
/// for the old `node#ver` with the new set): XEP-0115 §5.4 step 7 — not verified, not
/// cached, and the log gives both hashes. Its next presence's `ver` is asked about and
/// verified.
#[test]
fn an_answer_for_another_ver_is_not_believed_and_the_log_says_why() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::login(&server, "alice", "console");
    let identity = "<identity category='client' type='console' name='Profanity 0.13.1'/>";
    let answer = |features: &[&str]| {
        let mut query = format!("<query xmlns='{INFO}'>{identity}");
        for feature in features {
            query += &format!("<feature var='{feature}'/>");
        }
        query + "</query>"
    };
    let hash_of = |query: &str| with_doc(query, caps_hash);
    let before = [INFO, "urn:xmpp:ping"];
    let after = [INFO, "urn:xmpp:ping", "urn:xmpp:avatar:metadata+notify"];
    let (old_ver, new_ver) = (hash_of(&answer(&before)), hash_of(&answer(&after)));
    let node = "http://profanity-im.github.io";

    // Announce the old ver; the server asks about it; answer with the new set.
    let presence = |ver: &str| {
        format!("<presence><c xmlns='{CAPS}' hash='sha-1' node='{node}' ver='{ver}'/></presence>")
    };
    let answer_query = |alice: &mut Client, ver: &str, features: &[&str]| {
        let query = alice.expect("type='get'");
        let (id, asked) = with_doc(&query, |iq| {
            let q = iq.first_element_child().unwrap();
            assert!(q.has_tag_name((INFO, "query")), "{query}");
            let id = iq.attribute("id").unwrap().to_owned();
            (id, q.attribute("node").unwrap().to_owned())
        });
        assert_eq!(asked, format!("{node}#{ver}"));
        let body = answer(features).replacen("<query ", &format!("<query node='{asked}' "), 1);
        alice.send(&format!(
            "<iq type='result' id='{id}' to='{DOMAIN}'>{body}</iq>"
        ));
    };
    alice.send(&presence(&old_ver));
    answer_query(&mut alice, &old_ver, &after);
    alice.sync();
    server.wait_for_log(&format!(
        "capabilities {old_ver} not verified: the disco#info answer for it hashes to {new_ver}; not cached"
    ));

    // The new ver is asked about in turn and verified: no second complaint.
    alice.send(&presence(&new_ver));
    answer_query(&mut alice, &new_ver, &after);
    alice.sync();
    assert_eq!(server.log().matches("not verified").count(), 1);

    // The old ver was not cached under the wrong set: announcing it again asks again.
    let mut again = Client::login(&server, "alice", "again");
    again.send(&presence(&old_ver));
    answer_query(&mut again, &old_ver, &before);
    again.sync();
    assert_eq!(server.log().matches("not verified").count(), 1);
}
