//! Entity capabilities (XEP-0115) as a test client announces them: the `ver` of a feature
//! set, the presence that carries it and the answer to the server's disco#info query.

use super::*;

/// The node test clients name themselves with.
const NODE: &str = "https://hearth.test";

pub fn sha1_base64(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    base64::encode(digest.as_ref())
}

/// A client identity with `features` (sorted here) and its XEP-0115 ver.
pub fn caps_ver(features: &[&str]) -> String {
    let mut sorted = features.to_vec();
    sorted.sort_unstable();
    let mut string = "client/pc//hearth-test<".to_string();
    for feature in sorted {
        string.push_str(feature);
        string.push('<');
    }
    sha1_base64(&string)
}

pub fn disco_answer(features: &[&str]) -> String {
    let mut query = "<identity category='client' type='pc' name='hearth-test'/>".to_string();
    for feature in features {
        query.push_str(&format!("<feature var='{feature}'/>"));
    }
    query
}

/// Available presence announcing capabilities `ver`.
pub fn caps_announcement(ver: &str) -> String {
    format!("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{NODE}' ver='{ver}'/></presence>")
}

/// When `stanza` is the server's disco#info query for `ver`, answers it with `features`.
pub fn answer_caps_query(client: &mut Client, stanza: &str, ver: &str, features: &[&str]) -> bool {
    if !(stanza.contains("disco#info") && stanza.contains("type='get'")) {
        return false;
    }
    assert!(stanza.contains(&format!("node='{NODE}#{ver}'")), "{stanza}");
    assert!(stanza.contains("from='localhost'"), "{stanza}");
    let id = with_doc(stanza, |iq| iq.attribute("id").unwrap().to_string());
    client.send(&format!(
        "<iq type='result' id='{id}' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='{NODE}#{ver}'>{}</query></iq>",
        disco_answer(features)
    ));
    true
}

/// Presence with capabilities `features`, then their answer to the server's query;
/// nothing else is sent (no ping: the client only says what its features say).
pub fn announce_caps(client: &mut Client, features: &[&str]) {
    let ver = caps_ver(features);
    client.send(&caps_announcement(&ver));
    loop {
        let stanza = client.stanza();
        if answer_caps_query(client, &stanza, &ver, features) {
            return;
        }
    }
}
