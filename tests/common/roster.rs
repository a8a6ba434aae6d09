//! Roster and subscription steps shared by the roster and presence tests.

use super::*;

/// Logs in and returns the stream features offered after authentication.
pub fn features_after_auth(server: &TestServer, user: &str) -> String {
    let mut client = Client::connect(server);
    client.starttls();
    assert!(client.scram(Mechanism::ScramSha256, user, PASSWORD));
    client.open_stream();
    client.header();
    client.stanza()
}

/// Requests the roster (making the resource interested) and returns the result.
pub fn roster_get(client: &mut Client) -> String {
    client.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>");
    client.expect("id='rg'")
}

/// Sends a roster set with `item` and returns the reply.
pub fn roster_set(client: &mut Client, item: &str) -> String {
    client.send(&format!(
        "<iq type='set' id='rs'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
    ));
    client.expect("id='rs'")
}

/// Reads until a roster push; returns its `<item …>` part and acknowledges it.
pub fn expect_push(client: &mut Client) -> String {
    let push = client.expect("<query xmlns='jabber:iq:roster'");
    assert!(push.starts_with("<iq type='set'"), "{push}");
    assert!(push.contains(&format!("to='{}'", client.jid)), "{push}");
    let id = with_doc(&push, |iq| iq.attribute("id").unwrap().to_string());
    client.send(&format!("<iq type='result' id='{id}'/>"));
    let start = push.find("<item").unwrap();
    let end = push.rfind("</query>").unwrap();
    push[start..end].to_string()
}

/// `from` subscribes to `to` and `to` approves; both have asked for their rosters. All the
/// pushes and presence this causes are read, so both streams are quiet afterwards.
pub fn subscribe(from: &mut Client, to: &mut Client) {
    let (from_bare, to_bare) = (bare(&from.jid), bare(&to.jid));
    from.send(&format!("<presence type='subscribe' to='{to_bare}'/>"));
    to.expect(&format!(
        "type='subscribe' to='{to_bare}' from='{from_bare}'"
    ));
    to.send(&format!("<presence type='subscribed' to='{from_bare}'/>"));
    from.expect(&format!(
        "type='subscribed' to='{from_bare}' from='{to_bare}'"
    ));
    settle(from, to);
}

/// Both clients have read everything sent to them so far.
pub fn settle(a: &mut Client, b: &mut Client) {
    a.sync();
    b.sync();
    a.sync();
}

pub fn bare(jid: &str) -> String {
    jid.split('/').next().unwrap().to_string()
}
