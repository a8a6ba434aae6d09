//! Private XML storage (XEP-0049): a user's own elements kept per namespace, size-limited and
//! persisted. Only the user's own sessions may read or write them; this module never
//! interprets what it stores.

use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::stanza::{IqType, StanzaCondition, StanzaError};
use crate::xml::{write_element, NS_CLIENT};
use log::warn;

pub const NS: &str = "jabber:iq:private";

/// Namespaces that mean something to the server itself (XEP-0049 §2.3).
const RESERVED: [&str; 3] = [NS_CLIENT, "jabber:server", NS];

pub const FEATURE: Feature = Feature {
    name: "private",
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    ..Feature::NONE
};

/// `jabber:iq:private` get and set, for the user's own storage only.
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let (server, user) = (iq.server, iq.user());
    // §2.3: "forbidden" is preferable to the also-allowed "service-unavailable".
    let Some((reply, query)) = iq.own_payload("query", StanzaCondition::Forbidden, out) else {
        return Deferred::None;
    };
    let children: Vec<_> = query.children().filter(|c| c.is_element()).collect();
    let acceptable = !children.is_empty()
        && children.iter().all(|child| {
            child
                .tag_name()
                .namespace()
                .is_some_and(|ns| !RESERVED.contains(&ns))
        });
    if !acceptable {
        reply.fail(out, StanzaCondition::NotAcceptable);
        return Deferred::None;
    }
    match iq.ty {
        IqType::Get => {
            // A client asks for one namespace at a time (§2.3).
            let [child] = children.as_slice() else {
                reply.fail(out, StanzaCondition::NotAcceptable);
                return Deferred::None;
            };
            let ns = child.tag_name().namespace().unwrap_or_default();
            let stored = match server.store.private_get(user, ns) {
                Ok(stored) => stored,
                Err(e) => {
                    warn!("{user}: cannot read private XML: {e}");
                    reply.fail(out, StanzaCondition::ResourceConstraint);
                    return Deferred::None;
                }
            };
            let mut payload = format!("<query xmlns='{NS}'>");
            match stored {
                Some(bytes) => payload.push_str(&String::from_utf8_lossy(&bytes)),
                // Nothing stored: the empty element asked for comes back.
                None => write_element(&mut payload, *child, NS, &[]),
            }
            payload.push_str("</query>");
            reply.result_with(out, &payload);
            Deferred::None
        }
        IqType::Set => {
            // A set may hold several elements of one namespace; each namespace is replaced
            // as a whole.
            let mut items: Vec<(String, String)> = Vec::new();
            for child in &children {
                let ns = child.tag_name().namespace().unwrap_or_default();
                let index = match items.iter().position(|(known, _)| known == ns) {
                    Some(index) => index,
                    None => {
                        items.push((ns.to_owned(), String::new()));
                        items.len() - 1
                    }
                };
                if let Some((_, xml)) = items.get_mut(index) {
                    write_element(xml, *child, NS, &[]);
                }
            }
            let limit = server.config().limits.max_private_bytes as usize;
            if items.iter().any(|(_, xml)| xml.len() > limit) {
                reply.error(
                    out,
                    &StanzaError::new(StanzaCondition::PolicyViolation)
                        .with_text("the private data is larger than this server allows"),
                );
                return Deferred::None;
            }
            // XEP-0411: legacy bookmarks show up in the XEP-0402 node too.
            let mirror: Vec<_> = items
                .iter()
                .filter_map(|(ns, xml)| crate::pep::bookmarks::from_private(server, user, ns, xml))
                .collect();
            let items = items
                .into_iter()
                .map(|(ns, xml)| (ns, xml.into_bytes()))
                .collect();
            let write = server.store.private_set(user, items);
            Deferred::Reply(Box::pin(async move {
                for mirror in mirror {
                    if let Err(e) = mirror.await {
                        warn!("bookmarks not mirrored into PEP: {e}");
                    }
                }
                reply.after_write(write.await, "private XML")
            }))
        }
        IqType::Result | IqType::Error => Deferred::None,
    }
}
