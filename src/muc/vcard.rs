//! Room avatars (XEP-0486 over vcard-temp, XEP-0054): an owner sets the room's vCard, anyone
//! reads it; the photo's hash goes into the room's disco#info and, when it changes, to every
//! occupant in a presence from the room. The vCard lives with the room (in its stored record
//! when the room is persistent) under the account vCard size limit; this module never
//! stores anything itself.

use super::room::{Persist, Room};
use super::Ctx;
use crate::stanza::{IqType, StanzaCondition};
use crate::vcard::{self, NS, NS_UPDATE};
use crate::xml::Esc;
use roxmltree::Node;
use std::fmt::Write;

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

/// A `vcard-temp` get or set addressed to the room's bare JID.
pub fn on_iq(ctx: &mut Ctx, room: &mut Room, ty: IqType, query: Node) -> Option<Persist> {
    if query.tag_name().name() != "vCard" {
        ctx.error(StanzaCondition::BadRequest);
        return None;
    }
    let from = room.jid.as_str();
    let to = ctx.session.jid.as_str();
    match ty {
        IqType::Get => {
            let empty = format!("<vCard xmlns='{NS}'/>");
            let xml = room.vcard.as_ref().map_or(empty.as_str(), |v| &v.xml);
            crate::stanza::open_reply(
                ctx.out,
                crate::stanza::Kind::Iq,
                "result",
                ctx.stanza.id,
                from,
                to,
            );
            let _ = write!(ctx.out, ">{xml}</iq>");
            None
        }
        IqType::Set if !room.is_owner(&ctx.session.jid.bare()) => {
            ctx.error(StanzaCondition::Forbidden);
            None
        }
        IqType::Set => {
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
            crate::stanza::write_iq_result(ctx.out, ctx.stanza.id, from, to);
            if old_photo != new_photo {
                announce(ctx, room, new_photo.as_deref());
            }
            room.saved()
        }
        IqType::Result | IqType::Error => None,
    }
}

/// XEP-0486 §3.2: the new hash (an empty `<photo/>` when the photo was removed) in a presence
/// from the room's bare JID to every occupant.
fn announce(ctx: &Ctx, room: &Room, photo: Option<&str>) {
    for occupant in &room.occupants {
        for session in &occupant.sessions {
            let xml = format!(
                "<presence from='{}' to='{}'><x xmlns='{NS_UPDATE}'><photo>{}</photo></x></presence>",
                Esc(room.jid.as_str()),
                Esc(session.jid.as_str()),
                photo.unwrap_or_default()
            );
            ctx.server.deliver(session, xml.into(), false);
        }
    }
}
