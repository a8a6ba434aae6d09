//! Room avatars (XEP-0486 over vcard-temp, XEP-0054): an owner sets the room's vCard, anyone
//! reads it; the photo's hash goes into the room's disco#info and, when it changes, to every
//! occupant in a presence from the room. The vCard lives with the room (in its stored record
//! when the room is persistent) under the account vCard size limit; this module never
//! stores anything itself.

use super::room::{Persist, Room};
use super::Ctx;
use crate::stanza::{self, IqType, StanzaCondition};
use crate::vcard::{self, NS_UPDATE};
use crate::xml::build::Element;
use roxmltree::Node;

/// A room's vCard as stored, and the hex SHA-1 of its photo (XEP-0153 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomVcard {
    pub xml: Box<str>,
    pub photo: Option<Box<str>>,
}

impl RoomVcard {
    /// A vCard element from a request or a stored record; `None` for an empty one, which
    /// removes the room's vCard.
    pub fn new(xml: String, vcard: Node) -> Option<RoomVcard> {
        vcard.first_element_child()?;
        Some(RoomVcard {
            xml: xml.into(),
            photo: vcard::photo_hash_of(vcard).map(Into::into),
        })
    }
}

/// A `vcard-temp` request to the room's bare JID (XEP-0486 §3.1, §3.2).
#[derive(Debug, PartialEq)]
enum Request<'a, 'i> {
    Get,
    /// The new vCard; an empty one removes the room's.
    Set(Node<'a, 'i>),
}

impl<'a, 'i> Request<'a, 'i> {
    /// The payload is a `<vCard/>`, else `bad-request`; `None` for a result or error.
    fn parse(ty: IqType, query: Node<'a, 'i>) -> Option<Result<Self, StanzaCondition>> {
        if query.tag_name().name() != "vCard" {
            return Some(Err(StanzaCondition::BadRequest));
        }
        match ty {
            IqType::Get => Some(Ok(Request::Get)),
            IqType::Set => Some(Ok(Request::Set(query))),
            IqType::Result | IqType::Error => None,
        }
    }
}

/// A `vcard-temp` get or set addressed to the room's bare JID.
pub fn on_iq(ctx: &mut Ctx, room: &mut Room, ty: IqType, query: Node) -> Option<Persist> {
    let request = match Request::parse(ty, query)? {
        Ok(request) => request,
        Err(condition) => {
            ctx.error(condition);
            return None;
        }
    };
    let from = room.jid.as_str();
    let to = ctx.session.jid.as_str();
    match request {
        Request::Get => {
            stanza::write_iq_result_with(ctx.out, ctx.stanza.id, from, to, |out| {
                match &room.vcard {
                    Some(vcard) => out.push_str(&vcard.xml),
                    None => vcard::write_empty(out),
                }
            });
            None
        }
        Request::Set(_) if !room.is_owner(&ctx.session.jid.bare()) => {
            ctx.error(StanzaCondition::Forbidden);
            None
        }
        Request::Set(query) => {
            let xml = match vcard::limited_xml(ctx.server, query) {
                Ok(xml) => xml,
                Err(error) => {
                    ctx.fail(&error);
                    return None;
                }
            };
            let new = RoomVcard::new(xml, query);
            let old_photo = room.vcard.as_ref().and_then(|v| v.photo.clone());
            let new_photo = new.as_ref().and_then(|v| v.photo.clone());
            room.vcard = new;
            stanza::write_iq_result(ctx.out, ctx.stanza.id, from, to);
            if old_photo != new_photo {
                announce(ctx, room, new_photo.as_deref());
            }
            room.saved()
        }
    }
}

/// XEP-0486 §3.2: the new hash (an empty `<photo/>` when the photo was removed) in a presence
/// from the room's bare JID to every occupant.
fn announce(ctx: &Ctx, room: &Room, photo: Option<&str>) {
    for occupant in &room.occupants {
        for session in &occupant.sessions {
            let mut xml = String::new();
            write_update(&mut xml, room.jid.as_str(), session.jid.as_str(), photo);
            ctx.server.deliver(session, xml.into(), false);
        }
    }
}

fn write_update(out: &mut String, from: &str, to: &str, photo: Option<&str>) {
    Element::new("presence")
        .attr("from", from)
        .attr("to", to)
        .children(out, |out| {
            Element::new("x").ns(NS_UPDATE).children(out, |out| {
                Element::new("photo").text(out, photo.unwrap_or_default())
            });
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ty: IqType, query: &str, expected: Option<Result<bool, StanzaCondition>>) {
        let doc = roxmltree::Document::parse(query).unwrap();
        let parsed = Request::parse(ty, doc.root_element());
        let is_set = parsed.map(|r| r.map(|r| matches!(r, Request::Set(_))));
        assert_eq!(is_set, expected, "{query}");
    }

    #[test]
    fn get_and_set_of_a_vcard_xep_0486_s3() {
        check(IqType::Get, "<vCard xmlns='vcard-temp'/>", Some(Ok(false)));
        check(IqType::Set, "<vCard xmlns='vcard-temp'/>", Some(Ok(true)));
    }

    #[test]
    fn another_element_is_bad_request() {
        check(
            IqType::Get,
            "<card xmlns='vcard-temp'/>",
            Some(Err(StanzaCondition::BadRequest)),
        );
    }

    #[test]
    fn the_update_presence_carries_the_hash_or_an_empty_photo() {
        for photo in [Some("abc"), None] {
            let mut out = String::new();
            write_update(&mut out, "room@muc.h", "a@h/r", photo);
            let doc = roxmltree::Document::parse(&out).unwrap();
            let presence = doc.root_element();
            assert_eq!(presence.attribute("from"), Some("room@muc.h"));
            let x = presence.first_element_child().unwrap();
            assert!(x.has_tag_name((NS_UPDATE, "x")));
            let hash = x.first_element_child().unwrap().text();
            assert_eq!(hash, photo);
        }
    }
}
