//! Private XML storage (XEP-0049): a user's own elements kept per namespace, size-limited and
//! persisted. Only the user's own sessions may read or write them; this module never
//! interprets what it stores.

use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::stanza::{IqType, StanzaCondition, StanzaError};
use crate::xml::build::Element;
use crate::xml::{write_element, NS_CLIENT};
use log::warn;
use roxmltree::Node;

pub const NS: &str = "jabber:iq:private";

/// Namespaces that mean something to the server itself (XEP-0049 §2.3).
const RESERVED: [&str; 3] = [NS_CLIENT, "jabber:server", NS];

pub const FEATURE: Feature = Feature {
    name: "private",
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    ..Feature::NONE
};
/// A `jabber:iq:private` request, checked (§2.3).
#[derive(Debug, PartialEq)]
enum Request<'a, 'i> {
    /// The one element naming the namespace asked for (empty, as a rule).
    Get {
        namespace: &'a str,
        element: Node<'a, 'i>,
    },
    /// Each namespace of the set with its elements, re-serialised, in order of first
    /// appearance: each namespace is replaced as a whole.
    Set(Vec<(String, String)>),
}

impl<'a, 'i> Request<'a, 'i> {
    /// The payload is a `<query/>` (else bad-request) holding at least one element, each in
    /// a namespace of its own that is not the server's (else not-acceptable); a get asks for
    /// one namespace at a time (§2.3).
    fn parse(ty: IqType, query: Node<'a, 'i>) -> Result<Self, StanzaCondition> {
        if query.tag_name().name() != "query" {
            return Err(StanzaCondition::BadRequest);
        }
        let children = query.children().filter(Node::is_element);
        let mut elements = Vec::new();
        for child in children {
            match child.tag_name().namespace() {
                Some(ns) if !RESERVED.contains(&ns) => elements.push((ns, child)),
                _ => return Err(StanzaCondition::NotAcceptable),
            }
        }
        match (ty, elements.as_slice()) {
            (_, []) => Err(StanzaCondition::NotAcceptable),
            (IqType::Get, [(namespace, element)]) => Ok(Request::Get {
                namespace,
                element: *element,
            }),
            (IqType::Get, _) => Err(StanzaCondition::NotAcceptable),
            (IqType::Set, _) => {
                let mut fragments: Vec<(String, String)> = Vec::new();
                for (ns, element) in elements {
                    let index = match fragments.iter().position(|(known, _)| known == ns) {
                        Some(index) => index,
                        None => {
                            fragments.push((ns.to_owned(), String::new()));
                            fragments.len() - 1
                        }
                    };
                    if let Some((_, xml)) = fragments.get_mut(index) {
                        write_element(xml, element, NS, &[]);
                    }
                }
                Ok(Request::Set(fragments))
            }
            // Not requests: dispatch answers neither to a feature.
            (IqType::Result | IqType::Error, _) => Err(StanzaCondition::BadRequest),
        }
    }
}

/// `jabber:iq:private` get and set, for the user's own storage only.
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let (server, user) = (iq.server, iq.user());
    // §2.3: "forbidden" is preferable to the also-allowed "service-unavailable".
    let Some(reply) = iq.own_reply(StanzaCondition::Forbidden, out) else {
        return Deferred::None;
    };
    match Request::parse(iq.ty, iq.payload) {
        Err(condition) => {
            reply.fail(out, condition);
            Deferred::None
        }
        Ok(Request::Get { namespace, element }) => {
            match server.store.private_get(user, namespace) {
                Ok(stored) => {
                    let mut payload = String::new();
                    let stored = stored.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                    write_query(&mut payload, stored.as_deref(), element);
                    reply.result_with(out, &payload);
                }
                Err(e) => {
                    warn!("{user}: cannot read private XML: {e}");
                    reply.fail(out, StanzaCondition::ResourceConstraint);
                }
            }
            Deferred::None
        }
        Ok(Request::Set(fragments)) => {
            let limit = server.config().limits.max_private_bytes as usize;
            if fragments.iter().any(|(_, xml)| xml.len() > limit) {
                reply.error(
                    out,
                    &StanzaError::new(StanzaCondition::PolicyViolation)
                        .with_text("the private data is larger than this server allows"),
                );
                return Deferred::None;
            }
            // XEP-0411: legacy bookmarks show up in the XEP-0402 node too.
            let mirror: Vec<_> = fragments
                .iter()
                .filter_map(|(ns, xml)| crate::pep::bookmarks::from_private(server, user, ns, xml))
                .collect();
            let fragments = fragments
                .into_iter()
                .map(|(ns, xml)| (ns, xml.into_bytes()))
                .collect();
            let write = server.store.private_set(user, fragments);
            Deferred::Reply(Box::pin(async move {
                for mirror in mirror {
                    if let Err(e) = mirror.await {
                        warn!("bookmarks not mirrored into PEP: {e}");
                    }
                }
                reply.after_write(write.await, "private XML")
            }))
        }
    }
}

/// The `<query/>` of a get's result: what is stored for the namespace, or, when nothing
/// is, the (empty) element that asked for it.
fn write_query(out: &mut String, stored: Option<&str>, asked: Node) {
    Element::new("query")
        .ns(NS)
        .children(out, |out| match stored {
            Some(xml) => out.push_str(xml),
            None => write_element(out, asked, NS, &[]),
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_query<T>(query: &str, check: impl FnOnce(Node) -> T) -> T {
        let doc = roxmltree::Document::parse(query).unwrap();
        check(doc.root_element())
    }

    fn parse(ty: IqType, query: &str) -> Result<(), StanzaCondition> {
        with_query(query, |q| Request::parse(ty, q).map(|_| ()))
    }

    #[test]
    fn get_names_one_namespace() {
        with_query(
            "<query xmlns='jabber:iq:private'><prefs xmlns='urn:p'/></query>",
            |q| match Request::parse(IqType::Get, q) {
                Ok(Request::Get { namespace, element }) => {
                    assert_eq!(namespace, "urn:p");
                    assert_eq!(element.tag_name().name(), "prefs");
                }
                other => panic!("{other:?}"),
            },
        );
    }

    #[test]
    fn set_groups_elements_by_namespace() {
        with_query(
            "<query xmlns='jabber:iq:private'><a xmlns='urn:a'>1</a><b xmlns='urn:b'/>\
             <a xmlns='urn:a'>2</a></query>",
            |q| {
                let Ok(Request::Set(fragments)) = Request::parse(IqType::Set, q) else {
                    panic!("not a set");
                };
                let namespaces: Vec<_> = fragments.iter().map(|(ns, _)| ns.as_str()).collect();
                assert_eq!(namespaces, ["urn:a", "urn:b"]);
                let wrapped = format!("<w>{}</w>", fragments[0].1);
                let doc = roxmltree::Document::parse(&wrapped).unwrap();
                let texts: Vec<_> = doc
                    .root_element()
                    .children()
                    .filter(|c| c.has_tag_name(("urn:a", "a")))
                    .map(|c| c.text())
                    .collect();
                assert_eq!(texts, [Some("1"), Some("2")]);
            },
        );
    }

    #[test]
    fn payload_other_than_query_is_bad_request() {
        for ty in [IqType::Get, IqType::Set] {
            assert_eq!(
                parse(
                    ty,
                    "<storage xmlns='jabber:iq:private'><a xmlns='urn:a'/></storage>"
                ),
                Err(StanzaCondition::BadRequest)
            );
        }
    }

    #[test]
    fn empty_query_is_not_acceptable_xep_0049_s2_3() {
        for ty in [IqType::Get, IqType::Set] {
            assert_eq!(
                parse(ty, "<query xmlns='jabber:iq:private'/>"),
                Err(StanzaCondition::NotAcceptable)
            );
        }
    }

    #[test]
    fn reserved_or_missing_namespace_is_not_acceptable_xep_0049_s2_3() {
        for query in [
            "<query xmlns='jabber:iq:private'><a/></query>",
            "<query xmlns='jabber:iq:private'><a xmlns='urn:a'/><b xmlns='jabber:client'/></query>",
            "<query xmlns='jabber:iq:private'><a xmlns='jabber:server'/></query>",
            "<query xmlns='jabber:iq:private'><a xmlns='jabber:iq:private'/></query>",
        ] {
            for ty in [IqType::Get, IqType::Set] {
                assert_eq!(
                    parse(ty, query),
                    Err(StanzaCondition::NotAcceptable),
                    "{query}"
                );
            }
        }
    }

    #[test]
    fn get_of_two_namespaces_is_not_acceptable() {
        assert_eq!(
            parse(
                IqType::Get,
                "<query xmlns='jabber:iq:private'><a xmlns='urn:a'/><b xmlns='urn:b'/></query>"
            ),
            Err(StanzaCondition::NotAcceptable)
        );
    }

    #[test]
    fn result_carries_the_stored_elements_or_the_asked_one() {
        with_query("<w><prefs xmlns='urn:p'/></w>", |w| {
            let asked = w.first_element_child().unwrap();
            let mut out = String::new();
            write_query(
                &mut out,
                Some("<prefs xmlns='urn:p'><x>1</x></prefs>"),
                asked,
            );
            let doc = roxmltree::Document::parse(&out).unwrap();
            let query = doc.root_element();
            assert!(query.has_tag_name((NS, "query")));
            let prefs = query.first_element_child().unwrap();
            assert!(prefs.has_tag_name(("urn:p", "prefs")));
            assert_eq!(prefs.first_element_child().unwrap().text(), Some("1"));

            out.clear();
            write_query(&mut out, None, asked);
            let doc = roxmltree::Document::parse(&out).unwrap();
            let prefs = doc.root_element().first_element_child().unwrap();
            assert!(prefs.has_tag_name(("urn:p", "prefs")));
            assert_eq!(prefs.children().count(), 0);
        });
    }
}
