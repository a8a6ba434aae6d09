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
use crate::xml::{write_element, Esc};
use log::warn;
use roxmltree::Node;
use std::fmt::Write;
use std::future::Future;
use std::rc::Rc;

pub const DATA: &str = "urn:xmpp:avatar:data";
pub const METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0398 §2: advertised on the account.
pub const NS_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

/// The vCard `vcard` (serialised, or none) with its PHOTO replaced by `photo` (removed
/// when `None`). `None` when the stored vCard cannot be read back.
fn with_photo(vcard: Option<&[u8]>, photo: Option<(&str, &str)>) -> Option<String> {
    let mut xml = format!("<vCard xmlns='{}'>", vcard::NS);
    if let Some(stored) = vcard {
        let text = std::str::from_utf8(stored).ok()?;
        let doc = roxmltree::Document::parse(text).ok()?;
        for child in doc.root_element().children().filter(Node::is_element) {
            if !child.has_tag_name((vcard::NS, "PHOTO")) {
                write_element(&mut xml, child, vcard::NS, &[]);
            }
        }
    }
    if let Some((mime, binval)) = photo {
        let _ = write!(
            xml,
            "<PHOTO><TYPE>{}</TYPE><BINVAL>{binval}</BINVAL></PHOTO>",
            Esc(mime)
        );
    }
    xml.push_str("</vCard>");
    Some(xml)
}

/// After `owner` published `metadata` (serialised) to [`METADATA`]: the vCard follows.
pub async fn metadata_published(server: &Rc<Server>, owner: &str, metadata: &str) {
    let Ok(doc) = roxmltree::Document::parse(metadata) else {
        return;
    };
    let info = doc
        .root_element()
        .children()
        .find(|c| c.has_tag_name((METADATA, "info")) && c.attribute("url").is_none());
    let photo = match info {
        // XEP-0084 §4.2: an empty metadata element disables the avatar.
        None => None,
        Some(info) => {
            let (Some(id), Some(mime)) = (info.attribute("id"), info.attribute("type")) else {
                return;
            };
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
    let data = server.store.pep_publish(
        owner,
        publish(DATA, format!("<data xmlns='{DATA}'>{binval}</data>")),
    );
    let info = format!(
        "<metadata xmlns='{METADATA}'><info id='{id}' bytes='{bytes}' type='{}'/></metadata>",
        Esc(mime)
    );
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
}
