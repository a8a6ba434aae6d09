//! XEP-0092 software version of the server.

use crate::feature::{Deferred, Feature};
use crate::iq::Iq;
use crate::iq::IqTarget;
use crate::stanza::IqType;
use std::fmt::Write;

pub const NS: &str = "jabber:iq:version";

pub const FEATURE: Feature = Feature {
    name: "version",
    iq: &[NS],
    on_iq: |iq, out| handle(iq, out).then_some(Deferred::None),
    server_disco: &[NS],
    ..Feature::NONE
};

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
