//! XEP-0092 software version of the server.

use crate::dispatch::IqTarget;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, Kind, Stanza};
use std::fmt::Write;

pub const NS: &str = "jabber:iq:version";

pub fn handle(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    ty: IqType,
    target: IqTarget,
    out: &mut String,
) -> bool {
    if ty != IqType::Get || target != IqTarget::Server {
        return false;
    }
    stanza::open_reply(
        out,
        Kind::Iq,
        "result",
        stanza.id,
        &server.config().domain,
        session.jid.as_str(),
    );
    let _ = write!(
        out,
        "><query xmlns='{NS}'><name>hearth</name><version>{}</version></query></iq>",
        env!("CARGO_PKG_VERSION")
    );
    true
}
