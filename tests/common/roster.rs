//! Roster and subscription steps shared by the roster and presence tests.

use super::*;
use hearth::jid::Jid;

/// Logs in and returns the stream features offered after authentication.
pub fn features_after_auth(server: &TestServer, user: &str) -> Element {
    let mut client = Client::connect(server);
    client.starttls();
    assert!(client.scram(Mechanism::ScramSha256, user, PASSWORD));
    client.open_stream();
    client.header();
    let features = client.receive();
    assert!(features.is("features", STREAM_NS), "{features}");
    features
}

/// Requests the roster (making the resource interested) and returns the result.
pub fn roster_get(client: &mut Client) -> Element {
    client.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>");
    client.expect_iq_result("rg")
}

/// Requests the roster and returns it as values.
pub fn roster(client: &mut Client) -> Roster {
    Roster::of(&roster_get(client))
}

/// Sends a roster set with `item` and returns the reply.
pub fn roster_set(client: &mut Client, item: &str) -> Element {
    client.send(&format!(
        "<iq type='set' id='rs'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
    ));
    client.expect_iq("rs")
}

/// Reads until a roster push, checks it is one (RFC 6121 §2.1.6) and acknowledges it;
/// returns its item.
pub fn expect_push(client: &mut Client) -> RosterItem {
    expect_versioned_push(client).0
}

/// [`expect_push`], also returning the push's roster version (XEP-0237), if any.
pub fn expect_versioned_push(client: &mut Client) -> (RosterItem, Option<String>) {
    let push = client.expect_where(|s| s.name() == "iq" && s.find("query", ROSTER_NS).is_some());
    assert_eq!(push.attr("type"), Some("set"), "{push}");
    assert_eq!(push.to(), Some(jid_value(&client.jid)), "{push}");
    // §2.1.6: a client ignores a push from anyone but its own account.
    assert!(
        push.from()
            .is_none_or(|from| from == jid_value(&bare(&client.jid))),
        "{push}"
    );
    let id = push.attr("id").expect("push id");
    client.send(&format!("<iq type='result' id='{id}'/>"));
    let query = push.child("query", ROSTER_NS);
    let [item] = query.children() else {
        panic!("a push carries exactly one item: {push}")
    };
    (RosterItem::of(item), query.attr("ver").map(str::to_string))
}

/// A roster as a client reads it from a result (RFC 6121 §2.1.4).
#[derive(Debug)]
pub struct Roster {
    pub ver: Option<String>,
    pub items: Vec<RosterItem>,
}

impl Roster {
    /// The roster in an iq result; panics on anything else.
    pub fn of(iq: &Element) -> Roster {
        assert!(iq.is("iq", CLIENT_NS), "{iq}");
        assert_eq!(iq.attr("type"), Some("result"), "{iq}");
        let query = iq.child("query", ROSTER_NS);
        Roster {
            ver: query.attr("ver").map(str::to_string),
            items: query.children().iter().map(RosterItem::of).collect(),
        }
    }

    pub fn item(&self, jid: &str) -> Option<&RosterItem> {
        self.items.iter().find(|i| i.jid == jid_value(jid))
    }
}

/// One roster item as values (RFC 6121 §2.1.2). Parsing is strict: an attribute or child
/// the RFC does not define fails the test.
#[derive(Debug, PartialEq, Eq)]
pub struct RosterItem {
    pub jid: Jid,
    pub name: Option<String>,
    /// `none` when absent (§2.1.2.5).
    pub subscription: String,
    /// `ask='subscribe'` (§2.1.2.2), the only value there is.
    pub ask: bool,
    /// `approved='true'` (§2.1.2.1).
    pub approved: bool,
    pub groups: std::collections::BTreeSet<String>,
}

impl RosterItem {
    pub fn of(item: &Element) -> RosterItem {
        assert!(item.is("item", ROSTER_NS), "{item}");
        for name in item.attr_names() {
            assert!(
                ["jid", "name", "subscription", "ask", "approved"].contains(&name),
                "unknown attribute {name}: {item}"
            );
        }
        let flag = |name, yes: &[&str]| match item.attr(name) {
            None => false,
            Some(value) if yes.contains(&value) => true,
            Some(_) => panic!("bad {name}: {item}"),
        };
        let mut groups = std::collections::BTreeSet::new();
        for group in item.children() {
            assert!(group.is("group", ROSTER_NS), "unknown child: {item}");
            assert!(!group.text().is_empty(), "empty group: {item}");
            assert!(
                groups.insert(group.text().to_string()),
                "group twice: {item}"
            );
        }
        RosterItem {
            jid: item
                .jid_attr("jid")
                .unwrap_or_else(|| panic!("no jid: {item}")),
            name: item.attr("name").map(str::to_string),
            subscription: item.attr("subscription").unwrap_or("none").to_string(),
            ask: flag("ask", &["subscribe"]),
            approved: flag("approved", &["true", "1"]),
            groups,
        }
    }
}

/// `item == "<item jid='…' subscription='…'/>"`: the literal is read as a roster item.
impl PartialEq<&str> for RosterItem {
    fn eq(&self, literal: &&str) -> bool {
        let query = Element::parse(&format!("<query xmlns='{ROSTER_NS}'>{literal}</query>"));
        *self == RosterItem::of(&query.children()[0])
    }
}

/// `from` subscribes to `to` and `to` approves; both have asked for their rosters. All the
/// pushes and presence this causes are read, so both streams are quiet afterwards.
pub fn subscribe(from: &mut Client, to: &mut Client) {
    let (from_bare, to_bare) = (bare(&from.jid), bare(&to.jid));
    from.send(&format!("<presence type='subscribe' to='{to_bare}'/>"));
    expect_subscription(to, "subscribe", &from_bare);
    to.send(&format!("<presence type='subscribed' to='{from_bare}'/>"));
    expect_subscription(from, "subscribed", &to_bare);
    settle(from, to);
}

/// The next subscription presence (RFC 6121 §3) from `contact`'s bare JID; it must be of
/// type `kind` and addressed to the client's bare JID.
pub fn expect_subscription(client: &mut Client, kind: &str, contact: &str) -> Element {
    let presence = client.expect_presence_from(contact);
    assert_eq!(presence.attr("type"), Some(kind), "{presence}");
    assert_eq!(
        presence.to(),
        Some(jid_value(&bare(&client.jid))),
        "{presence}"
    );
    presence
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
