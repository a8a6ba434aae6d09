//! User avatars kept in step between PEP (XEP-0084) and the vCard (XEP-0054/0153), as
//! XEP-0398 describes: a published `urn:xmpp:avatar:metadata` item puts the matching
//! `urn:xmpp:avatar:data` image into the vCard's PHOTO (an empty one removes it), and a
//! vCard set with a PHOTO publishes both items. It writes through the store directly, so
//! one direction never triggers the other; it never parses anything but these payloads.

use super::{Access, NodeConfig};
use crate::sasl::base64;
use crate::server::Server;
use crate::store::{Publish, StoreError};
use crate::vcard;
use crate::xml::build::Element;
use crate::xml::write_element;
use log::warn;
use roxmltree::Node;
use std::future::Future;
use std::rc::Rc;

pub const DATA: &str = "urn:xmpp:avatar:data";
pub const METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0398 §2: advertised on the account.
pub const NS_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

/// The vCard `vcard` (serialised, or none) with its PHOTO replaced by `photo` (removed
/// when `None`). `None` when the stored vCard cannot be read back.
fn with_photo(vcard: Option<&[u8]>, photo: Option<(&str, &str)>) -> Option<String> {
    let stored = match vcard {
        Some(stored) => Some(roxmltree::Document::parse(std::str::from_utf8(stored).ok()?).ok()?),
        None => None,
    };
    let mut xml = String::new();
    Element::new("vCard")
        .ns(vcard::NS)
        .children(&mut xml, |out| {
            let kept = stored.iter().flat_map(|doc| {
                doc.root_element()
                    .children()
                    .filter(|c| c.is_element() && !c.has_tag_name((vcard::NS, "PHOTO")))
            });
            for child in kept {
                write_element(out, child, vcard::NS, &[]);
            }
            if let Some((mime, binval)) = photo {
                Element::new("PHOTO").children(out, |out| {
                    Element::new("TYPE").text(out, mime);
                    Element::new("BINVAL").text(out, binval);
                });
            }
        });
    Some(xml)
}

/// What a published metadata item says about the vCard's photo (XEP-0084 §4.2, XEP-0398 §3.1).
#[derive(Debug, PartialEq)]
enum Metadata<'a> {
    /// No `<info/>` for an image kept in PEP (an empty `<metadata/>`): no avatar.
    Disabled,
    /// The image of `id` (its hex SHA-1), of type `mime`, in the data node.
    Photo { id: &'a str, mime: &'a str },
}

impl<'a> Metadata<'a> {
    /// The first `<info/>` without a `url` (an image elsewhere is not the vCard's); `None`
    /// when it lacks `id` or `type`: the vCard is then left as it is.
    fn parse(metadata: Node<'a, '_>) -> Option<Metadata<'a>> {
        let info = metadata
            .children()
            .find(|c| c.has_tag_name((METADATA, "info")) && c.attribute("url").is_none());
        match info {
            None => Some(Metadata::Disabled),
            Some(info) => Some(Metadata::Photo {
                id: info.attribute("id")?,
                mime: info.attribute("type")?,
            }),
        }
    }
}

/// After `owner` published `metadata` (serialised) to [`METADATA`]: the vCard follows.
pub async fn metadata_published(server: &Rc<Server>, owner: &str, metadata: &str) {
    let Ok(doc) = roxmltree::Document::parse(metadata) else {
        return;
    };
    let Some(metadata) = Metadata::parse(doc.root_element()) else {
        return;
    };
    let photo = match metadata {
        Metadata::Disabled => None,
        Metadata::Photo { id, mime } => {
            let items = server.store.pep_items(owner, DATA).unwrap_or_default();
            let Some(item) = items.into_iter().find(|item| item.id == id) else {
                return;
            };
            let Ok(text) = String::from_utf8(item.payload) else {
                return;
            };
            let Ok(data) = roxmltree::Document::parse(&text) else {
                return;
            };
            let binval: String = data
                .root_element()
                .text()
                .unwrap_or_default()
                .split_ascii_whitespace()
                .collect();
            let id = id.to_ascii_lowercase();
            // §3.1: the image must be the one the id names.
            if vcard::base64_photo_hash(&binval).as_deref() != Some(id.as_str()) {
                return;
            }
            Some((mime.to_owned(), binval, id))
        }
    };
    let stored = server.store.vcard(owner).ok().flatten();
    let Some(xml) = with_photo(
        stored.as_deref(),
        photo
            .as_ref()
            .map(|(mime, binval, _)| (mime.as_str(), binval.as_str())),
    ) else {
        return;
    };
    if xml.len() > server.config().limits.max_vcard_bytes as usize {
        return;
    }
    let hash = photo.map(|(_, _, id)| id);
    if let Err(e) = server.store.set_vcard(owner, xml.into_bytes(), hash).await {
        warn!("{owner}: avatar not copied into the vCard: {e}");
    }
    vcard::user_offline(server, owner);
}

/// A vCard set whose PHOTO hashes to `id`: the write publishing it as XEP-0084 data and
/// metadata items, which then notifies the metadata node's interested resources (§3.2).
pub fn from_vcard(
    server: &Rc<Server>,
    owner: &str,
    vcard_element: Node,
    id: &str,
) -> Option<impl Future<Output = Result<(), StoreError>> + 'static> {
    let photo = crate::stanza::child(vcard_element, "PHOTO", vcard::NS)?;
    let binval: String = crate::stanza::child_text(photo, "BINVAL", vcard::NS)?
        .split_ascii_whitespace()
        .collect();
    let bytes = base64::decode(&binval).filter(|b| !b.is_empty())?.len();
    let mime = crate::stanza::child_text(photo, "TYPE", vcard::NS).unwrap_or("image/png");
    if binval.len() > server.config().pep.max_item_bytes as usize {
        return None;
    }
    let config = NodeConfig::default_for(server, DATA).encode();
    let pep = &server.config().pep;
    let publish = |node: &str, payload: String| Publish {
        node: node.to_owned(),
        config: config.clone(),
        max_items: 1,
        max_nodes: pep.max_nodes,
        replace: true,
        items: vec![(id.to_owned(), payload.into_bytes())],
    };
    let mut data = String::new();
    Element::new("data").ns(DATA).text(&mut data, &binval);
    let data = server.store.pep_publish(owner, publish(DATA, data));
    let mut info = String::new();
    write_metadata(&mut info, id, bytes, mime);
    let metadata = server
        .store
        .pep_publish(owner, publish(METADATA, info.clone()));
    let (server, owner, id) = (server.clone(), owner.to_owned(), id.to_owned());
    Some(async move {
        data.await?;
        metadata.await?;
        let stored = server.store.pep_node(&owner, METADATA).ok().flatten();
        let access = stored
            .as_deref()
            .map_or(Access::Presence, |c| NodeConfig::decode(c).access);
        let inner = super::item_xml(&id, info.as_bytes());
        super::notify(&server, &owner, METADATA, access, &inner);
        Ok(())
    })
}

/// The metadata item of one image (XEP-0084 §4.1).
fn write_metadata(out: &mut String, id: &str, bytes: usize, mime: &str) {
    let bytes = bytes.to_string();
    Element::new("metadata").ns(METADATA).children(out, |out| {
        Element::new("info")
            .attr("id", id)
            .attr("bytes", &bytes)
            .attr("type", mime)
            .empty(out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photo_replaced_kept_fields_and_removed() {
        let stored =
            b"<vCard xmlns='vcard-temp'><FN>Al</FN><PHOTO><BINVAL>eA==</BINVAL></PHOTO></vCard>";
        assert_eq!(
            with_photo(Some(stored), Some(("image/png", "aGk="))).unwrap(),
            "<vCard xmlns='vcard-temp'><FN>Al</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>aGk=</BINVAL></PHOTO></vCard>"
        );
        assert_eq!(
            with_photo(Some(stored), None).unwrap(),
            "<vCard xmlns='vcard-temp'><FN>Al</FN></vCard>"
        );
        assert_eq!(
            with_photo(None, None).unwrap(),
            "<vCard xmlns='vcard-temp'></vCard>"
        );
    }

    fn check(xml: &str, expected: Option<Metadata>) {
        let doc = roxmltree::Document::parse(xml).unwrap();
        assert_eq!(Metadata::parse(doc.root_element()), expected, "{xml}");
    }

    #[test]
    fn an_info_names_the_image_xep_0084_s4_1() {
        check(
            "<metadata xmlns='urn:xmpp:avatar:metadata'>\
             <info id='ab' bytes='3' type='image/png'/></metadata>",
            Some(Metadata::Photo {
                id: "ab",
                mime: "image/png",
            }),
        );
    }

    #[test]
    fn no_info_or_only_urls_disable_the_avatar_xep_0084_s4_2() {
        for xml in [
            "<metadata xmlns='urn:xmpp:avatar:metadata'/>",
            "<metadata xmlns='urn:xmpp:avatar:metadata'>\
             <info id='ab' bytes='3' type='image/png' url='https://x/a.png'/></metadata>",
        ] {
            check(xml, Some(Metadata::Disabled));
        }
    }

    #[test]
    fn an_info_without_id_or_type_is_ignored() {
        for xml in [
            "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='3' type='image/png'/></metadata>",
            "<metadata xmlns='urn:xmpp:avatar:metadata'><info id='ab' bytes='3'/></metadata>",
        ] {
            check(xml, None);
        }
    }

    #[test]
    fn the_metadata_item_describes_the_image() {
        let mut out = String::new();
        write_metadata(&mut out, "ab", 3, "image/svg+xml");
        let doc = roxmltree::Document::parse(&out).unwrap();
        let info = doc.root_element().first_element_child().unwrap();
        assert!(info.has_tag_name((METADATA, "info")));
        assert_eq!(info.attribute("id"), Some("ab"));
        assert_eq!(info.attribute("bytes"), Some("3"));
        assert_eq!(info.attribute("type"), Some("image/svg+xml"));
    }
}
