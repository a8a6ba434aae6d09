//! XEP-0199 ping: the server (and any local account, answered by the
//! server on its behalf) replies to a ping with an empty result; the
//! server's own keepalive ping and how a client shows it understands pings.

use crate::feature::{Deferred, Feature};
use crate::iq::Iq;
use crate::stanza::{self, IqType, Kind, Stanza, StanzaType};
use crate::xml::build::Element;
use roxmltree::Node;

pub const NS: &str = "urn:xmpp:ping";

/// The ids of the server's keepalive pings start with this.
const KEEPALIVE_ID: &str = "keepalive-";

pub const FEATURE: Feature = Feature {
    name: "ping",
    answers_remote: true,
    iq: &[NS],
    on_iq: |iq, out| handle(iq, out).then_some(Deferred::None),
    server_disco: &[NS],
    ..Feature::NONE
};

/// A `<ping/>` get (§3, §4.2): it carries nothing but its name.
#[derive(Debug, PartialEq)]
struct Ping;

impl Ping {
    /// `None` for anything but a get of `<ping/>`: not this feature's request, so the
    /// dispatcher answers it as it answers any unknown payload.
    fn parse(ty: IqType, payload: Node) -> Option<Ping> {
        (ty == IqType::Get && payload.has_tag_name((NS, "ping"))).then_some(Ping)
    }
}

pub fn handle(iq: &Iq, out: &mut String) -> bool {
    let Some(Ping) = Ping::parse(iq.ty, iq.payload) else {
        return false;
    };
    iq.reply().result(out);
    true
}

/// §4.1 server-to-client ping: the keepalive probe of a silent session.
pub fn write_keepalive(out: &mut String, id: u64, domain: &str, to: &str) {
    let id = format!("{KEEPALIVE_ID}{id}");
    stanza::reply(Kind::Iq, "get", Some(&id), domain, to)
        .children(out, |out| Element::new("ping").ns(NS).empty(out));
}

/// Whether a client's stanza shows it speaks XEP-0199: a ping of its own, or the result
/// answering one of the server's keepalive pings. A client that does not may fail on an
/// unexpected iq (it must answer with an error, RFC 6120 §8.2.3, but some crash instead).
pub fn shows_support(stanza: &Stanza) -> bool {
    match stanza.ty {
        StanzaType::Iq(IqType::Get) => stanza.child("ping", NS).is_some(),
        StanzaType::Iq(IqType::Result) => stanza.id.is_some_and(|id| id.starts_with(KEEPALIVE_ID)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shows(xml: &str) -> bool {
        let wrapped = format!("<w xmlns='jabber:client'>{xml}</w>");
        let doc = roxmltree::Document::parse(&wrapped).unwrap();
        let node = doc.root_element().first_element_child().unwrap();
        shows_support(&Stanza::parse(node).unwrap())
    }

    #[test]
    fn a_ping_or_an_answer_to_ours_shows_support_nothing_else_does() {
        assert!(shows(
            "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        assert!(shows(
            "<iq type='get' id='p' to='room@muc.localhost/me'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        assert!(shows("<iq type='result' id='keepalive-7' to='localhost'/>"));
        // An error answer says the client does not know pings.
        assert!(!shows("<iq type='error' id='keepalive-7'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"));
        assert!(!shows("<iq type='result' id='disco-1'/>"));
        assert!(!shows(
            "<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>"
        ));
        assert!(!shows(
            "<iq type='set' id='s'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        assert!(!shows(
            "<message id='m'><ping xmlns='urn:xmpp:ping'/></message>"
        ));
    }

    fn ping(ty: IqType, payload: &str) -> Option<Ping> {
        let doc = roxmltree::Document::parse(payload).unwrap();
        Ping::parse(ty, doc.root_element())
    }

    #[test]
    fn a_get_of_ping_is_a_ping_xep_0199_s4_2() {
        assert_eq!(
            ping(IqType::Get, "<ping xmlns='urn:xmpp:ping'/>"),
            Some(Ping)
        );
    }

    #[test]
    fn a_set_or_another_element_is_not_a_ping() {
        assert_eq!(ping(IqType::Set, "<ping xmlns='urn:xmpp:ping'/>"), None);
        assert_eq!(ping(IqType::Get, "<pong xmlns='urn:xmpp:ping'/>"), None);
    }

    #[test]
    fn the_keepalive_ping_is_a_get_from_the_domain() {
        let mut out = String::new();
        write_keepalive(&mut out, 3, "localhost", "a@localhost/r&");
        let wrapped = format!("<w xmlns='jabber:client'>{out}</w>");
        let doc = roxmltree::Document::parse(&wrapped).unwrap();
        let iq = doc.root_element().first_element_child().unwrap();
        let stanza = Stanza::parse(iq).unwrap();
        assert_eq!(stanza.ty, StanzaType::Iq(IqType::Get));
        assert_eq!(iq.attribute("from"), Some("localhost"));
        assert_eq!(iq.attribute("to"), Some("a@localhost/r&"));
        assert!(stanza.child("ping", NS).is_some());
        // Its answer is recognised as one.
        let answer = format!("<iq type='result' id='{}'/>", stanza.id.unwrap());
        assert!(shows(&answer));
    }
}
