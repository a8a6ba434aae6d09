//! Typed views of client stanzas (RFC 6120 §8): message, presence and iq,
//! checked once when they arrive so handlers never read raw attributes.
//! A view borrows the parsed roxmltree document; nothing here routes,
//! stores or answers a stanza.

pub mod error;

pub use error::{ErrorType, StanzaCondition, StanzaError, StreamCondition};

use crate::jid::Jid;
use crate::xml::build::Element;
use crate::xml::{Esc, NS_CLIENT};
use roxmltree::Node;
use std::fmt::Write;

/// The three stanza kinds of RFC 6120 §8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Presence => "presence",
            Kind::Iq => "iq",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
}

/// RFC 6121 §5.2.2: an unknown or absent type means `normal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Normal,
    Chat,
    Groupchat,
    Headline,
    Error,
}

/// RFC 6121 §4.7.1 presence types; absent means available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceType {
    Available,
    Unavailable,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Probe,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaType {
    Message(MessageType),
    Presence(PresenceType),
    Iq(IqType),
}

/// A stanza that passed the checks every handler relies on.
#[derive(Debug)]
pub struct Stanza<'a, 'input> {
    pub node: Node<'a, 'input>,
    pub kind: Kind,
    pub ty: StanzaType,
    pub id: Option<&'a str>,
    pub to: Option<Jid>,
    /// The `from` the client wrote, if any (the server stamps its own).
    pub from: Option<Jid>,
}

/// Why a stanza was refused, and what the sender should be told.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection<'a> {
    /// Not a stanza at all: the stream ends (RFC 6120 §4.9.3.24).
    Stream(StreamCondition),
    /// A stanza error answers it (unless it was itself an error).
    Stanza {
        kind: Kind,
        id: Option<&'a str>,
        condition: StanzaCondition,
        is_error: bool,
    },
}

impl<'a, 'input> Stanza<'a, 'input> {
    /// Checks name, namespace, type, id and addresses of a top-level element.
    pub fn parse(node: Node<'a, 'input>) -> Result<Self, Rejection<'a>> {
        if node.tag_name().namespace() != Some(NS_CLIENT) {
            return Err(Rejection::Stream(StreamCondition::UnsupportedStanzaType));
        }
        let kind = match node.tag_name().name() {
            "message" => Kind::Message,
            "presence" => Kind::Presence,
            "iq" => Kind::Iq,
            _ => return Err(Rejection::Stream(StreamCondition::UnsupportedStanzaType)),
        };
        let id = node.attribute("id");
        let type_attr = node.attribute("type");
        let reject = |condition| Rejection::Stanza {
            kind,
            id,
            condition,
            is_error: type_attr == Some("error"),
        };
        let ty = match kind {
            Kind::Message => StanzaType::Message(match type_attr {
                Some("chat") => MessageType::Chat,
                Some("groupchat") => MessageType::Groupchat,
                Some("headline") => MessageType::Headline,
                Some("error") => MessageType::Error,
                _ => MessageType::Normal,
            }),
            Kind::Presence => StanzaType::Presence(match type_attr {
                None => PresenceType::Available,
                Some("unavailable") => PresenceType::Unavailable,
                Some("subscribe") => PresenceType::Subscribe,
                Some("subscribed") => PresenceType::Subscribed,
                Some("unsubscribe") => PresenceType::Unsubscribe,
                Some("unsubscribed") => PresenceType::Unsubscribed,
                Some("probe") => PresenceType::Probe,
                Some("error") => PresenceType::Error,
                Some(_) => return Err(reject(StanzaCondition::BadRequest)),
            }),
            Kind::Iq => {
                let ty = match type_attr {
                    Some("get") => IqType::Get,
                    Some("set") => IqType::Set,
                    Some("result") => IqType::Result,
                    Some("error") => IqType::Error,
                    _ => return Err(reject(StanzaCondition::BadRequest)),
                };
                // RFC 6120 §8.2.3: an iq carries an id, and get/set exactly one payload.
                if id.is_none_or(str::is_empty) {
                    return Err(reject(StanzaCondition::BadRequest));
                }
                if matches!(ty, IqType::Get | IqType::Set)
                    && node.children().filter(Node::is_element).count() != 1
                {
                    return Err(reject(StanzaCondition::BadRequest));
                }
                StanzaType::Iq(ty)
            }
        };
        let jid_attr = |name| match node.attribute(name) {
            None => Ok(None),
            Some(s) => Jid::parse(s)
                .map(Some)
                .map_err(|_| reject(StanzaCondition::JidMalformed)),
        };
        let to = jid_attr("to")?;
        let from = jid_attr("from")?;
        Ok(Stanza {
            node,
            kind,
            ty,
            id,
            to,
            from,
        })
    }

    /// `type='error'` on any kind: never answered with another error (RFC 6120 §8.3.1).
    pub fn is_error(&self) -> bool {
        matches!(
            self.ty,
            StanzaType::Message(MessageType::Error)
                | StanzaType::Presence(PresenceType::Error)
                | StanzaType::Iq(IqType::Error)
        )
    }

    /// The one payload element of an iq get/set (checked in [`Stanza::parse`]).
    pub fn payload(&self) -> Option<Node<'a, 'input>> {
        self.node.first_element_child()
    }

    /// A direct child element in `ns` named `name`.
    pub fn child(&self, name: &str, ns: &str) -> Option<Node<'a, 'input>> {
        child(self.node, name, ns)
    }
}

/// A direct child element of `node` in `ns` named `name`.
pub fn child<'a, 'i>(node: Node<'a, 'i>, name: &str, ns: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(ns)
    })
}

/// The text of a child element, if present.
pub fn child_text<'a>(node: Node<'a, '_>, name: &str, ns: &str) -> Option<&'a str> {
    child(node, name, ns).map(|c| c.text().unwrap_or(""))
}

/// The start of a reply stanza (`<kind type [id] [from] [to]`), as an [`Element`] the
/// caller finishes with `empty`, `text` or `children`. An empty `from`/`to` is left out
/// (the stream's own addresses apply, RFC 6120 §8.1.1–2).
pub fn reply<'a>(
    kind: Kind,
    ty: &'a str,
    id: Option<&'a str>,
    from: &'a str,
    to: &'a str,
) -> Element<'a> {
    Element::new(kind.name())
        .attr("type", ty)
        .attr_opt("id", id)
        .attr_opt("from", Some(from).filter(|f| !f.is_empty()))
        .attr_opt("to", Some(to).filter(|t| !t.is_empty()))
}

/// Writes the opening of a reply stanza: `<kind [type] [id] from to`, left
/// open for attributes or content (the caller closes the tag). For the callers
/// outside the features that still append to an open tag; new code uses [`reply`].
pub fn open_reply(out: &mut String, kind: Kind, ty: &str, id: Option<&str>, from: &str, to: &str) {
    let _ = write!(out, "<{} type='{ty}'", kind.name());
    if let Some(id) = id {
        let _ = write!(out, " id='{}'", Esc(id));
    }
    if !from.is_empty() {
        let _ = write!(out, " from='{}'", Esc(from));
    }
    if !to.is_empty() {
        let _ = write!(out, " to='{}'", Esc(to));
    }
}

/// A complete error reply (RFC 6120 §8.3.1): addressed back to the sender.
pub fn write_error_reply(
    out: &mut String,
    kind: Kind,
    id: Option<&str>,
    from: &str,
    to: &str,
    err: &StanzaError,
) {
    reply(kind, "error", id, from, to).children(out, |out| err.write(out));
}

/// An empty iq result.
pub fn write_iq_result(out: &mut String, id: Option<&str>, from: &str, to: &str) {
    reply(Kind::Iq, "result", id, from, to).empty(out);
}

/// An iq result carrying the payload `payload` writes (with `xml::build::Element`).
pub fn write_iq_result_with(
    out: &mut String,
    id: Option<&str>,
    from: &str,
    to: &str,
    payload: impl FnOnce(&mut String),
) {
    reply(Kind::Iq, "result", id, from, to).children(out, payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(xml: &str, check: impl FnOnce(Result<Stanza, Rejection>)) {
        let wrapped = format!("<w xmlns='jabber:client'>{xml}</w>");
        let doc = roxmltree::Document::parse(&wrapped).unwrap();
        let node = doc.root_element().first_element_child().unwrap();
        check(Stanza::parse(node));
    }

    #[test]
    fn iq_without_id_is_bad_request() {
        parse_one("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>", |r| {
            assert!(matches!(
                r,
                Err(Rejection::Stanza {
                    kind: Kind::Iq,
                    condition: StanzaCondition::BadRequest,
                    ..
                })
            ));
        });
    }

    #[test]
    fn iq_with_bad_type_or_two_payloads_is_bad_request() {
        for xml in [
            "<iq id='1' type='fetch'><a xmlns='x'/></iq>",
            "<iq id='1' type='get'><a xmlns='x'/><b xmlns='x'/></iq>",
            "<iq id='1' type='set'/>",
        ] {
            parse_one(xml, |r| {
                assert!(
                    matches!(
                        r,
                        Err(Rejection::Stanza {
                            condition: StanzaCondition::BadRequest,
                            ..
                        })
                    ),
                    "{xml}"
                );
            });
        }
    }

    #[test]
    fn unknown_element_or_namespace_ends_the_stream() {
        parse_one("<foo/>", |r| {
            assert_eq!(
                r.unwrap_err(),
                Rejection::Stream(StreamCondition::UnsupportedStanzaType)
            );
        });
        parse_one("<message xmlns='jabber:server'/>", |r| {
            assert_eq!(
                r.unwrap_err(),
                Rejection::Stream(StreamCondition::UnsupportedStanzaType)
            );
        });
    }

    #[test]
    fn malformed_to_is_jid_malformed() {
        parse_one("<message to='a@b@c/'><body>x</body></message>", |r| {
            assert!(matches!(
                r,
                Err(Rejection::Stanza {
                    condition: StanzaCondition::JidMalformed,
                    ..
                })
            ));
        });
    }

    #[test]
    fn message_type_defaults_to_normal() {
        parse_one(
            "<message to='bob@localhost' type='weird'><body>x</body></message>",
            |r| {
                let s = r.unwrap();
                assert_eq!(s.ty, StanzaType::Message(MessageType::Normal));
                assert_eq!(s.to.unwrap().as_str(), "bob@localhost");
            },
        );
    }

    #[test]
    fn error_reply_swaps_addresses() {
        let mut out = String::new();
        write_error_reply(
            &mut out,
            Kind::Message,
            Some("m1"),
            "bob@localhost",
            "alice@localhost/a",
            &StanzaError::new(StanzaCondition::ServiceUnavailable),
        );
        assert!(out.starts_with("<message type='error' id='m1' from='bob@localhost' to='alice@localhost/a'><error type='cancel'>"));
        assert!(out.ends_with("</message>"));
    }

    #[test]
    fn replies_escape_their_addresses_and_leave_out_empty_ones() {
        let mut out = String::new();
        write_iq_result(&mut out, Some("a'<b"), "", "c&d@h/r");
        let doc = roxmltree::Document::parse(&out).unwrap();
        let iq = doc.root_element();
        assert_eq!(iq.attribute("type"), Some("result"));
        assert_eq!(iq.attribute("id"), Some("a'<b"));
        assert_eq!(iq.attribute("from"), None);
        assert_eq!(iq.attribute("to"), Some("c&d@h/r"));
        assert_eq!(iq.children().count(), 0);
    }

    #[test]
    fn an_error_reply_carries_condition_text_and_application_condition_rfc6120_s8_3_2() {
        let mut out = String::new();
        let error = StanzaError::new(StanzaCondition::NotAcceptable)
            .with_text("too <big>")
            .with_app("file-too-large", "urn:x");
        write_error_reply(&mut out, Kind::Iq, Some("1"), "h", "a@h/r", &error);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let iq = doc.root_element();
        assert_eq!(iq.attribute("type"), Some("error"));
        let error = iq.first_element_child().unwrap();
        assert_eq!(error.attribute("type"), Some("modify"));
        let names: Vec<_> = error
            .children()
            .map(|c| (c.tag_name().namespace().unwrap(), c.tag_name().name()))
            .collect();
        assert_eq!(
            names,
            [
                (error::NS_STANZA_ERRORS, "not-acceptable"),
                (error::NS_STANZA_ERRORS, "text"),
                ("urn:x", "file-too-large")
            ]
        );
        assert_eq!(
            child_text(error, "text", error::NS_STANZA_ERRORS),
            Some("too <big>")
        );
    }

    #[test]
    fn a_result_with_payload_wraps_what_the_payload_writes() {
        let mut out = String::new();
        write_iq_result_with(&mut out, Some("1"), "h", "a@h/r", |out| {
            Element::new("query").ns("urn:q").empty(out);
        });
        let doc = roxmltree::Document::parse(&out).unwrap();
        let query = doc.root_element().first_element_child().unwrap();
        assert!(query.has_tag_name(("urn:q", "query")));
    }
}
