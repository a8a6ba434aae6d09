//! XEP-0199 ping: the server (and any local account, answered by the
//! server on its behalf) replies to a ping with an empty result.

use crate::iq::Iq;
use crate::stanza::IqType;

pub const NS: &str = "urn:xmpp:ping";

pub fn handle(iq: &Iq, out: &mut String) -> bool {
    if iq.ty != IqType::Get || iq.payload.tag_name().name() != "ping" {
        return false;
    }
    iq.reply().result(out);
    true
}
