//! XEP-0359 stanza ids: how an archive names a message it stored (`<stanza-id by id/>`),
//! shared by the archive that assigns them and by the copies (carbons) that carry them.

use crate::xml::build::Element;

pub const NS_SID: &str = "urn:xmpp:sid:0";

/// An archive id as clients see it: lower-case hex.
pub fn encode_id(id: u64) -> String {
    format!("{id:x}")
}

/// The archive id a client names, if it is one hearth could have given.
pub fn decode_id(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// Ends `message` (a whole `<message>` element with content) with the XEP-0359
/// `<stanza-id/>` of archive `by`.
pub fn add_stanza_id(message: &mut String, by: &str, id: u64) {
    if let Some(open) = message.strip_suffix("</message>").map(str::len) {
        message.truncate(open);
        Element::new("stanza-id")
            .ns(NS_SID)
            .attr("by", by)
            .attr("id", &encode_id(id))
            .empty(message);
        message.push_str("</message>");
    }
}
