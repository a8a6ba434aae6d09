//! Bookmarks: XEP-0402 bookmarks live in the generic PEP node [`NODE`]; this module keeps
//! legacy clients in step both ways (XEP-0411): a `storage:bookmarks` element stored through
//! private XML (XEP-0049) replaces the node's items, one per conference, and a publish or
//! retraction on the node rewrites the private XML element from the node's items. Both
//! write through the store, so neither direction loops. It never parses other namespaces.

use super::{notify, Access, NodeConfig};
use crate::server::Server;
use crate::store::{PepItem, Publish, StoreError};
use crate::xml::build::Element;
use roxmltree::Node;
use std::future::Future;
use std::rc::Rc;

/// The XEP-0402 node and its payload namespace.
pub const NODE: &str = "urn:xmpp:bookmarks:1";
/// The XEP-0048 private XML namespace.
pub const NS_LEGACY: &str = "storage:bookmarks";
/// XEP-0411 §3: what the account advertises so clients know the two stay in step.
pub const NS_CONVERSION: &str = "urn:xmpp:bookmarks-conversion:0";

/// One bookmarked room as both forms carry it: a XEP-0402 item payload (the room's JID is
/// the item id) and a XEP-0048 `<conference/>` (the JID an attribute).
#[derive(Debug, PartialEq, Eq)]
struct Conference<'a> {
    name: Option<&'a str>,
    autojoin: bool,
    nick: Option<&'a str>,
    password: Option<&'a str>,
}

impl<'a> Conference<'a> {
    /// A `<conference/>` whose children are in `ns`; `autojoin` is `true` or `1`.
    fn parse(conference: Node<'a, '_>, ns: &str) -> Conference<'a> {
        Conference {
            name: conference.attribute("name"),
            autojoin: matches!(conference.attribute("autojoin"), Some("true" | "1")),
            nick: crate::stanza::child_text(conference, "nick", ns),
            password: crate::stanza::child_text(conference, "password", ns),
        }
    }

    fn autojoin(&self) -> &'static str {
        if self.autojoin {
            "true"
        } else {
            "false"
        }
    }

    fn write_children(&self, out: &mut String) {
        for (name, text) in [("nick", self.nick), ("password", self.password)] {
            if let Some(text) = text {
                Element::new(name).text(out, text);
            }
        }
    }

    /// The XEP-0402 item payload.
    fn write_item(&self, out: &mut String) {
        let element = Element::new("conference")
            .ns(NODE)
            .attr("autojoin", self.autojoin())
            .attr_opt("name", self.name);
        if self.nick.is_none() && self.password.is_none() {
            element.empty(out);
        } else {
            element.children(out, |out| self.write_children(out));
        }
    }

    /// The XEP-0048 `<conference/>` of the room `jid`.
    fn write_legacy(&self, jid: &str, out: &mut String) {
        Element::new("conference")
            .attr("jid", jid)
            .attr("autojoin", self.autojoin())
            .attr_opt("name", self.name)
            .children(out, |out| self.write_children(out));
    }
}

/// XEP-0411 §3: each `<conference/>` of a legacy storage element as a XEP-0402 item:
/// (room JID as item id, `<conference xmlns='urn:xmpp:bookmarks:1'/>` payload).
fn convert(storage: Node) -> Vec<(String, Vec<u8>)> {
    let mut items: Vec<(String, Vec<u8>)> = Vec::new();
    for conference in storage
        .children()
        .filter(|c| c.has_tag_name((NS_LEGACY, "conference")))
    {
        let Some(jid) = conference.attribute("jid").filter(|j| !j.is_empty()) else {
            continue;
        };
        let mut xml = String::new();
        Conference::parse(conference, NS_LEGACY).write_item(&mut xml);
        items.retain(|(id, _)| id != jid);
        items.push((jid.to_owned(), xml.into_bytes()));
    }
    items
}

/// A private XML write of `storage:bookmarks` (`xml`: the serialised element(s)) as the
/// write that mirrors it into [`NODE`], which then notifies the owner's interested
/// resources of each bookmark. `None` for any other namespace or unreadable XML.
pub fn from_private(
    server: &Rc<Server>,
    user: &str,
    ns: &str,
    xml: &str,
) -> Option<impl Future<Output = Result<(), StoreError>> + 'static> {
    if ns != NS_LEGACY {
        return None;
    }
    let wrapped = format!("<w>{xml}</w>");
    let doc = roxmltree::Document::parse(&wrapped).ok()?;
    let mut items = Vec::new();
    for storage in doc.root_element().children().filter(Node::is_element) {
        items.extend(convert(storage));
    }
    let limit = server.config().pep.max_items as usize;
    items.truncate(limit);
    let config = NodeConfig {
        access: Access::Whitelist,
        max_items: server.config().pep.max_items,
    };
    let write = server.store.pep_publish(
        user,
        Publish {
            node: NODE.to_owned(),
            config: config.encode(),
            max_items: config.max_items,
            max_nodes: server.config().pep.max_nodes,
            replace: true,
            items: items.clone(),
        },
    );
    let (server, user) = (server.clone(), user.to_owned());
    Some(async move {
        write.await?;
        for (id, payload) in &items {
            notify(
                &server,
                &user,
                NODE,
                Access::Whitelist,
                &super::item_xml(id, payload),
            );
        }
        Ok(())
    })
}

/// XEP-0411 §4: the legacy element for a set of XEP-0402 items (id = room JID).
fn legacy(items: &[PepItem]) -> String {
    let mut xml = String::new();
    Element::new("storage")
        .ns(NS_LEGACY)
        .children(&mut xml, |out| {
            for item in items.iter().rev() {
                let Ok(text) = std::str::from_utf8(&item.payload) else {
                    continue;
                };
                let Ok(doc) = roxmltree::Document::parse(text) else {
                    continue;
                };
                let conference = doc.root_element();
                if conference.has_tag_name((NODE, "conference")) {
                    Conference::parse(conference, NODE).write_legacy(&item.id, out);
                }
            }
        });
    xml
}

/// After a publish or retraction on [`NODE`] committed: the private XML copy follows.
pub async fn to_private(server: &Server, owner: &str) {
    let items = match server.store.pep_items(owner, NODE) {
        Ok(items) => items,
        Err(e) => {
            log::warn!("{owner}: bookmarks not mirrored into private XML: {e}");
            return;
        }
    };
    let xml = legacy(&items);
    if xml.len() > server.config().limits.max_private_bytes as usize {
        return;
    }
    let write = server
        .store
        .private_set(owner, vec![(NS_LEGACY.to_owned(), xml.into_bytes())]);
    if let Err(e) = write.await {
        log::warn!("{owner}: bookmarks not mirrored into private XML: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_conferences_become_items() {
        let xml = "<storage xmlns='storage:bookmarks'>\
            <conference jid='a@rooms.h' name='A &amp; co' autojoin='true'><nick>me</nick></conference>\
            <conference jid='b@rooms.h'><password>p&lt;</password></conference>\
            <url name='x' url='http://x'/><conference name='no jid'/><conference jid='c@rooms.h'/></storage>";
        let doc = roxmltree::Document::parse(xml).unwrap();
        let items = convert(doc.root_element());
        let items: Vec<(String, String)> = items
            .into_iter()
            .map(|(id, p)| (id, String::from_utf8(p).unwrap()))
            .collect();
        // Newest first, as the store returns them.
        let pep: Vec<PepItem> = items
            .iter()
            .rev()
            .map(|(id, payload)| PepItem {
                id: id.clone(),
                seq: 0,
                payload: payload.clone().into_bytes(),
            })
            .collect();
        assert_eq!(
            legacy(&pep),
            "<storage xmlns='storage:bookmarks'>\
             <conference jid='a@rooms.h' autojoin='true' name='A &amp; co'><nick>me</nick></conference>\
             <conference jid='b@rooms.h' autojoin='false'><password>p&lt;</password></conference>\
             <conference jid='c@rooms.h' autojoin='false'></conference></storage>"
        );
        assert_eq!(
            items,
            [
                ("a@rooms.h".into(), "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='true' name='A &amp; co'><nick>me</nick></conference>".into()),
                ("b@rooms.h".into(), "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='false'><password>p&lt;</password></conference>".into()),
                ("c@rooms.h".into(), "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='false'/>".into()),
            ]
        );
    }

    #[test]
    fn a_conference_reads_the_same_from_either_form() {
        let legacy = "<conference xmlns='storage:bookmarks' jid='r@h' autojoin='1' name='R'>\
            <nick>me</nick><password/></conference>";
        let item = "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='true' name='R'>\
            <nick>me</nick><password></password></conference>";
        let expected = Conference {
            name: Some("R"),
            autojoin: true,
            nick: Some("me"),
            password: Some(""),
        };
        let doc = roxmltree::Document::parse(legacy).unwrap();
        assert_eq!(Conference::parse(doc.root_element(), NS_LEGACY), expected);
        let doc = roxmltree::Document::parse(item).unwrap();
        assert_eq!(Conference::parse(doc.root_element(), NODE), expected);
    }

    #[test]
    fn a_conference_without_attributes_or_children_is_a_plain_one() {
        let doc =
            roxmltree::Document::parse("<conference xmlns='urn:xmpp:bookmarks:1' autojoin='yes'/>")
                .unwrap();
        assert_eq!(
            Conference::parse(doc.root_element(), NODE),
            Conference {
                name: None,
                autojoin: false,
                nick: None,
                password: None
            }
        );
    }

    #[test]
    fn both_written_forms_parse_back() {
        let conference = Conference {
            name: Some("A & 'B'"),
            autojoin: false,
            nick: Some("<me>"),
            password: None,
        };
        let mut item = String::new();
        conference.write_item(&mut item);
        let doc = roxmltree::Document::parse(&item).unwrap();
        assert!(doc.root_element().has_tag_name((NODE, "conference")));
        assert_eq!(Conference::parse(doc.root_element(), NODE), conference);
        let mut legacy = String::new();
        Element::new("storage")
            .ns(NS_LEGACY)
            .children(&mut legacy, |out| conference.write_legacy("r@h", out));
        let doc = roxmltree::Document::parse(&legacy).unwrap();
        let written = doc.root_element().first_element_child().unwrap();
        assert_eq!(written.attribute("jid"), Some("r@h"));
        assert_eq!(Conference::parse(written, NS_LEGACY), conference);
    }
}
