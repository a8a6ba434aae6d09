//! Service discovery (XEP-0030) for the server and for accounts, built from the features'
//! declarations ([`crate::feature::Feature`]): a feature appears here exactly when the
//! dispatcher would hand it requests, so advertised and handled cannot drift apart.

use crate::feature::{self, Deferred, Feature};
use crate::iq::{Iq, IqTarget};
use crate::server::Server;
use crate::stanza::{self, IqType, Kind, Stanza, StanzaCondition, StanzaError, StanzaType};
use crate::xml::build::Element;

pub const NS_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_ITEMS: &str = "http://jabber.org/protocol/disco#items";

pub const FEATURE: Feature = Feature {
    name: "disco",
    answers_remote: true,
    iq: &[NS_INFO, NS_ITEMS],
    on_iq: |iq, out| handle(iq, out).then_some(Deferred::None),
    server_disco: &[NS_INFO, NS_ITEMS],
    account_disco: &[NS_INFO, NS_ITEMS],
    ..Feature::NONE
};

/// The server's identity: category, type, xml:lang, name (as XEP-0115 hashes it).
pub const SERVER_IDENTITY: [&str; 4] = ["server", "im", "", "hearth"];

/// Features of the server's own JID, sorted as XEP-0115 hashing wants.
pub fn server_features(server: &Server) -> Vec<&'static str> {
    let config = server.config();
    let mut features: Vec<_> = feature::enabled(server.features(), &config)
        .flat_map(|f| f.server_disco.iter().copied())
        .collect();
    features.sort_unstable();
    features.dedup();
    features
}

fn handle(iq: &Iq, out: &mut String) -> bool {
    let (server, target, query) = (iq.server, iq.target, iq.payload);
    if iq.ty != IqType::Get || query.tag_name().name() != "query" {
        return false;
    }
    let ns = query.tag_name().namespace().unwrap_or_default();
    let config = server.config();
    let node = query.attribute("node");
    let known_node = node.is_some_and(|node| {
        target == IqTarget::Server
            && feature::enabled(server.features(), &config)
                .filter_map(|f| f.server_info_node)
                .any(|answers| answers(server, node))
    });
    let reply = iq.reply();
    if node.is_some() && !known_node {
        reply.fail(out, StanzaCondition::ItemNotFound);
        return true;
    }
    reply.open_result(out);
    out.push('>');
    let query = Element::new("query").ns(ns).attr_opt("node", node);
    query.children(out, |out| {
        if ns == NS_ITEMS && target == IqTarget::Server {
            for service in
                feature::enabled(server.features(), &config).filter_map(|f| f.service.as_ref())
            {
                if let Some(domain) = (service.domain)(server) {
                    Element::new("item")
                        .attr("jid", &domain)
                        .attr("name", service.name)
                        .empty(out);
                }
            }
            for items in feature::enabled(server.features(), &config).filter_map(|f| f.server_items)
            {
                for (jid, name) in items(server) {
                    Element::new("item")
                        .attr("jid", &jid)
                        .attr_opt("name", name.as_deref())
                        .empty(out);
                }
            }
        }
        if ns == NS_INFO {
            match target {
                IqTarget::Server => {
                    let [category, ty, _, name] = SERVER_IDENTITY;
                    Element::new("identity")
                        .attr("category", category)
                        .attr("type", ty)
                        .attr("name", name)
                        .empty(out);
                    for feature in server_features(server) {
                        Element::new("feature").attr("var", feature).empty(out);
                    }
                    crate::contact::write_form(out, &config.contact);
                }
                IqTarget::Account(_) => {
                    let identities = [("account", "registered")].into_iter().chain(
                        feature::enabled(server.features(), &config)
                            .flat_map(|f| f.account_identities.iter().copied()),
                    );
                    for (category, ty) in identities {
                        Element::new("identity")
                            .attr("category", category)
                            .attr("type", ty)
                            .empty(out);
                    }
                    for f in feature::enabled(server.features(), &config) {
                        for feature in f.account_disco {
                            Element::new("feature").attr("var", feature).empty(out);
                        }
                    }
                }
            }
        }
    });
    out.push_str("</iq>");
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
    let ns = match service_disco(stanza) {
        None => return false,
        Some(Ok(ns)) => ns,
        Some(Err(condition)) => {
            let error = StanzaError::new(condition);
            stanza::write_error_reply(out, Kind::Iq, stanza.id, from, to, &error);
            return true;
        }
    };
    stanza::write_iq_result_with(out, stanza.id, from, to, |out| {
        Element::new("query").ns(ns).children(out, |out| {
            if ns == NS_INFO {
                info(out);
            }
        });
    });
    true
}

/// The namespace of a disco#info or disco#items get to a service's own JID; a query naming
/// a `node` is `item-not-found` (services have none). `None`: not such a query.
fn service_disco<'a>(stanza: &Stanza<'a, '_>) -> Option<Result<&'a str, StanzaCondition>> {
    let query = stanza.payload()?;
    let ns = query.tag_name().namespace().unwrap_or_default();
    let for_service = stanza.to.as_ref().is_some_and(|j| j.local().is_none());
    if stanza.ty != StanzaType::Iq(IqType::Get)
        || !for_service
        || query.tag_name().name() != "query"
        || !(ns == NS_INFO || ns == NS_ITEMS)
    {
        return None;
    }
    if query.attribute("node").is_some() {
        return Some(Err(StanzaCondition::ItemNotFound));
    }
    Some(Ok(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(iq: &str, expected: Option<Result<&str, StanzaCondition>>) {
        let wrapped = format!("<w xmlns='jabber:client'>{iq}</w>");
        let doc = roxmltree::Document::parse(&wrapped).unwrap();
        let stanza = Stanza::parse(doc.root_element().first_element_child().unwrap()).unwrap();
        assert_eq!(service_disco(&stanza), expected, "{iq}");
    }

    #[test]
    fn info_and_items_gets_to_a_service_xep_0030_s3_s4() {
        check(
            "<iq type='get' id='1' to='upload.h'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            Some(Ok(NS_INFO)),
        );
        check(
            "<iq type='get' id='1' to='upload.h'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
            Some(Ok(NS_ITEMS)),
        );
    }

    #[test]
    fn a_node_is_item_not_found() {
        check(
            "<iq type='get' id='1' to='upload.h'><query xmlns='http://jabber.org/protocol/disco#info' node='n'/></iq>",
            Some(Err(StanzaCondition::ItemNotFound)),
        );
    }

    #[test]
    fn sets_other_payloads_and_user_jids_are_not_service_queries() {
        for iq in [
            "<iq type='set' id='1' to='upload.h'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "<iq type='get' id='1' to='upload.h'><request xmlns='urn:xmpp:http:upload:0'/></iq>",
            "<iq type='get' id='1' to='a@upload.h'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        ] {
            check(iq, None);
        }
    }
}
