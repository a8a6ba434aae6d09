//! Service discovery (XEP-0030) for the server and for accounts. This is
//! the one place that lists what hearth advertises: a feature appears here
//! only when the code that implements it is in place.

use crate::dispatch::IqTarget;
use crate::iq::Iq;
use crate::stanza::{self, IqType, Kind, Stanza, StanzaCondition, StanzaError, StanzaType};
use crate::xml::Esc;
use crate::{blocking, carbons, last, offline, ping, privacy, register, vcard, version};
use std::fmt::Write;

pub const NS_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// The server's identity: category, type, xml:lang, name (as XEP-0115 hashes it).
pub const SERVER_IDENTITY: [&str; 4] = ["server", "im", "", "hearth"];

/// Features of the server's own JID, sorted as XEP-0115 hashing wants.
pub fn server_features() -> [&'static str; 12] {
    let mut features = [
        NS_INFO,
        NS_ITEMS,
        last::NS,
        offline::NS_OFFLINE,
        ping::NS,
        version::NS,
        blocking::NS,
        privacy::NS,
        register::NS,
        vcard::NS,
        carbons::NS,
        crate::extdisco::NS,
    ];
    features.sort_unstable();
    features
}

/// Features answered on behalf of an account's bare JID.
const ACCOUNT_FEATURES: [&str; 3] = [NS_INFO, NS_ITEMS, last::NS];

pub fn handle(iq: &Iq, out: &mut String) -> bool {
    let (server, target, query) = (iq.server, iq.target, iq.payload);
    if iq.ty != IqType::Get || query.tag_name().name() != "query" {
        return false;
    }
    let ns = query.tag_name().namespace().unwrap_or_default();
    let caps_node = query.attribute("node").is_some_and(|node| {
        target == IqTarget::Server && crate::pep::caps::is_server_node(node, &server.config())
    });
    let reply = iq.reply();
    if query.attribute("node").is_some() && !caps_node {
        reply.fail(out, StanzaCondition::ItemNotFound);
        return true;
    }
    reply.open_result(out);
    let _ = write!(out, "><query xmlns='{ns}'");
    if let Some(node) = query.attribute("node") {
        let _ = write!(out, " node='{}'", Esc(node));
    }
    out.push('>');
    if ns == NS_ITEMS && target == IqTarget::Server {
        if let Some(muc) = server.muc.domain() {
            let _ = write!(out, "<item jid='{}' name='Chat rooms'/>", Esc(muc));
        }
        if let Some(upload) = server.upload.domain() {
            let _ = write!(out, "<item jid='{}' name='HTTP File Upload'/>", Esc(upload));
        }
        if let Some(proxy) = server.proxy.domain() {
            let _ = write!(
                out,
                "<item jid='{}' name='SOCKS5 Bytestreams'/>",
                Esc(proxy)
            );
        }
    }
    if ns == NS_INFO {
        match target {
            IqTarget::Server => {
                let [category, ty, _, name] = SERVER_IDENTITY;
                let _ = write!(
                    out,
                    "<identity category='{category}' type='{ty}' name='{name}'/>"
                );
                for feature in server_features() {
                    let _ = write!(out, "<feature var='{}'/>", Esc(feature));
                }
                crate::contact::write_form(out, &server.config().contact);
            }
            IqTarget::Account(_) => {
                out.push_str("<identity category='account' type='registered'/>");
                out.push_str("<identity category='pubsub' type='pep'/>");
                for feature in crate::pep::FEATURES {
                    let _ = write!(out, "<feature var='{}'/>", Esc(feature));
                }
                for feature in ACCOUNT_FEATURES {
                    let _ = write!(out, "<feature var='{}'/>", Esc(feature));
                }
                if server.config().mam.enabled {
                    for feature in [crate::mam::NS, crate::mam::NS_EXTENDED, crate::mam::NS_SID] {
                        let _ = write!(out, "<feature var='{feature}'/>");
                    }
                }
                if server.config().push.enabled {
                    let _ = write!(out, "<feature var='{}'/>", crate::push::NS);
                }
            }
        }
    }
    out.push_str("</query></iq>");
    true
}

/// Answers a disco#info or disco#items get addressed to a service's own JID (`from`):
/// `info` writes the identity and features; a service without items has none. Returns
/// false when the stanza is not such a query.
pub fn service_query(
    out: &mut String,
    stanza: &Stanza,
    from: &str,
    to: &str,
    info: impl FnOnce(&mut String),
) -> bool {
    let Some(query) = stanza.payload() else {
        return false;
    };
    let ns = query.tag_name().namespace().unwrap_or_default();
    let for_service = stanza.to.as_ref().is_some_and(|j| j.local().is_none());
    if stanza.ty != StanzaType::Iq(IqType::Get)
        || !for_service
        || query.tag_name().name() != "query"
        || !(ns == NS_INFO || ns == NS_ITEMS)
    {
        return false;
    }
    if query.attribute("node").is_some() {
        let error = StanzaError::new(StanzaCondition::ItemNotFound);
        stanza::write_error_reply(out, Kind::Iq, stanza.id, from, to, &error);
        return true;
    }
    stanza::open_reply(out, Kind::Iq, "result", stanza.id, from, to);
    let _ = write!(out, "><query xmlns='{ns}'>");
    if ns == NS_INFO {
        info(out);
    }
    out.push_str("</query></iq>");
    true
}
