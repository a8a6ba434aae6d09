//! XEP-0092 software version of the server.

use crate::dispatch::IqTarget;
use crate::iq::Iq;
use crate::stanza::IqType;
use std::fmt::Write;

pub const NS: &str = "jabber:iq:version";

pub fn handle(iq: &Iq, out: &mut String) -> bool {
    if iq.ty != IqType::Get || iq.target != IqTarget::Server {
        return false;
    }
    iq.reply().open_result(out);
    let _ = write!(
        out,
        "><query xmlns='{NS}'><name>hearth</name><version>{}</version></query></iq>",
        env!("CARGO_PKG_VERSION")
    );
    true
}
