//! Message Carbons (XEP-0280): a session that enabled carbons gets a copy
//! of each instant message its user sends from another resource (`<sent/>`)
//! or receives on another resource (`<received/>`), so a phone and a laptop
//! both show the whole conversation. This module owns the per-session
//! enable/disable iq, which messages are eligible (§6) and the wrapping;
//! it never copies a message to a session that got the message itself, nor
//! one marked `<private/>` or `<no-copy/>`.

use crate::feature::{Deferred, Feature};
use crate::iq::Iq;
use crate::jid::Jid;
use crate::offline::NS_HINTS;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, MessageType, Stanza, StanzaType};
use crate::stanza_id::{add_stanza_id, NS_SID};
use crate::xml::build::Element;
use crate::xml::{write_element_without, NS_CLIENT};
use std::rc::Rc;

pub const NS: &str = "urn:xmpp:carbons:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Payloads that make a `normal` message part of a chat even without a
/// body: receipts (XEP-0184), chat markers (XEP-0333), chat states (XEP-0085).
const IM_PAYLOADS: [&str; 3] = [
    "urn:xmpp:receipts",
    "urn:xmpp:chat-markers:0",
    "http://jabber.org/protocol/chatstates",
];

pub const FEATURE: Feature = Feature {
    name: "carbons",
    message_routed: Some(|server, routed| {
        copy(
            server,
            routed.sender,
            routed.stanza,
            routed.recipient,
            routed.delivered,
            routed.xml,
            routed.sent_id,
        )
    }),
    iq: &[NS],
    on_iq: |iq, out| handle(iq, out).then_some(Deferred::None),
    server_disco: &[NS],
    ..Feature::NONE
};

/// `<enable/>` / `<disable/>` (§4–5): a set for the session itself;
/// repeating one is not an error (§9.1).
pub fn handle(iq: &Iq, out: &mut String) -> bool {
    let enable = match iq.payload.tag_name().name() {
        "enable" => true,
        "disable" => false,
        _ => return false,
    };
    if iq.ty != IqType::Set {
        return false;
    }
    // §5.1: another account's carbons are not this client's to change.
    let Some(reply) = iq.own_reply(stanza::StanzaCondition::NotAllowed, out) else {
        return true;
    };
    iq.session.carbons.set(enable);
    reply.result(out);
    true
}

fn is_private(child: roxmltree::Node) -> bool {
    child.has_tag_name((NS, "private"))
}

/// The message as its recipient gets it: `from` stamped, and without the
/// `<private/>` marker, which only instructs this server (§7), nor the
/// children `also` picks.
pub fn delivered(stanza: &Stanza, from: &Jid, also: impl Fn(roxmltree::Node) -> bool) -> String {
    crate::route::forwarded_without(stanza, from, |child| is_private(child) || also(child))
}

/// §6: chat messages, normal ones with a body or an IM payload; never
/// groupchat, errors, MUC traffic or messages opting out.
fn eligible(stanza: &Stanza) -> bool {
    let StanzaType::Message(ty) = stanza.ty else {
        return false;
    };
    let opted_out = stanza.child("private", NS).is_some()
        || stanza.child("no-copy", NS_HINTS).is_some()
        || stanza.child("x", NS_MUC_USER).is_some();
    if opted_out {
        return false;
    }
    match ty {
        MessageType::Chat => true,
        MessageType::Normal => stanza.node.children().any(|c| {
            c.has_tag_name((NS_CLIENT, "body"))
                || c.tag_name()
                    .namespace()
                    .is_some_and(|ns| IM_PAYLOADS.contains(&ns))
        }),
        MessageType::Groupchat | MessageType::Headline | MessageType::Error => false,
    }
}

/// Copies a message `sender` sent to the local user `recipient`: `<sent/>`
/// to the sender's other carbon-enabled resources (§8) and, if any session
/// of the recipient got it, `<received/>` to the recipient's carbon-enabled
/// resources that did not (§7). `delivered` lists who got the original and
/// `received` is the message as they got it. Each copy carries the archive id
/// its user's archive gave the message (XEP-0313 §3.5): `received` already
/// holds the recipient's; `sent_id` is the sender's, which replaces any the
/// client claimed.
pub fn copy(
    server: &Server,
    sender: &Session,
    stanza: &Stanza,
    recipient: &str,
    delivered: &[Rc<Session>],
    received: &str,
    sent_id: Option<u64>,
) {
    if !eligible(stanza) {
        return;
    }
    // Another server's user has no resources here to copy to.
    let user = if sender.remote { "" } else { sender.jid.user() };
    let wants_copy = |s: &&Rc<Session>| {
        s.carbons.get() && s.id != sender.id && !delivered.iter().any(|d| d.id == s.id)
    };
    let router = server.router.borrow();
    let mut senders = router.resources(user).iter().filter(wants_copy).peekable();
    let mut receivers = router
        .resources(recipient)
        .iter()
        .filter(|_| !delivered.is_empty() && recipient != user)
        .filter(wants_copy)
        .peekable();
    if senders.peek().is_none() && receivers.peek().is_none() {
        return;
    }
    // Each original is written only when some resource gets that kind of copy.
    let sent = senders.peek().map(|_| {
        let own = sender.jid.bare();
        let mut sent = String::with_capacity(stanza.node.range().len() + 128);
        write_element_without(
            &mut sent,
            stanza.node,
            NS_FORWARD,
            &[("from", Some(sender.jid.as_str()))],
            |child| {
                child.has_tag_name((NS_SID, "stanza-id"))
                    && child.attribute("by") == Some(own.as_str())
            },
        );
        if let Some(id) = sent_id {
            add_stanza_id(&mut sent, own.as_str(), id);
        }
        sent
    });
    // What the recipient got, in the client namespace inside `<forwarded/>`.
    let received = receivers.peek().and_then(|_| {
        let rest = received.strip_prefix("<message")?;
        Some(format!("<message xmlns='{NS_CLIENT}'{rest}"))
    });
    // Only chat and normal messages are copied (`eligible`); normal is the absent type.
    let ty = (stanza.ty == StanzaType::Message(MessageType::Chat)).then_some("chat");
    // A copied chat state may wait for an inactive client like the original.
    let hold = crate::router::Hold::of_message(stanza, sender);
    let sent_copies = senders.filter_map(|s| Some(("sent", s, sent.as_deref()?)));
    let received_copies = receivers.filter_map(|s| Some(("received", s, received.as_deref()?)));
    for (direction, session, original) in sent_copies.chain(received_copies) {
        let xml = wrap(&session.jid, ty, direction, original);
        server.deliver_as(session, xml.into(), false, hold);
    }
}

/// `<message from=bare to=full><sent|received><forwarded>original…`, of the
/// original's type (§7–8).
fn wrap(to: &Jid, ty: Option<&str>, direction: &str, original: &str) -> String {
    let mut xml = String::with_capacity(original.len() + 200);
    let bare = to.bare();
    Element::new("message")
        .attr("from", bare.as_str())
        .attr("to", to.as_str())
        .attr_opt("type", ty)
        .children(&mut xml, |xml| {
            Element::new(direction).ns(NS).children(xml, |xml| {
                // The original is already serialised (and escaped) XML.
                Element::new("forwarded")
                    .ns(NS_FORWARD)
                    .children(xml, |xml| xml.push_str(original));
            });
        });
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_stanza<T>(xml: &str, f: impl FnOnce(&Stanza) -> T) -> T {
        let wrapped = format!("<w xmlns='jabber:client'>{xml}</w>");
        let doc = roxmltree::Document::parse(&wrapped).unwrap();
        let node = doc.root_element().first_element_child().unwrap();
        f(&Stanza::parse(node).ok().unwrap())
    }

    #[test]
    fn eligibility_follows_section_6() {
        let cases = [
            ("<message type='chat' to='b@h'><body>x</body></message>", true),
            ("<message type='chat' to='b@h'><active xmlns='http://jabber.org/protocol/chatstates'/></message>", true),
            ("<message to='b@h'><body>x</body></message>", true),
            ("<message to='b@h'><received xmlns='urn:xmpp:receipts' id='1'/></message>", true),
            ("<message to='b@h'><x xmlns='urn:example'/></message>", false),
            ("<message type='headline' to='b@h'><body>x</body></message>", false),
            ("<message type='groupchat' to='b@h'><body>x</body></message>", false),
            ("<message type='error' to='b@h'><body>x</body></message>", false),
            ("<message type='chat' to='b@h'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>", false),
            ("<message type='chat' to='b@h'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>", false),
        ];
        for (xml, expected) in cases {
            assert_eq!(with_stanza(xml, eligible), expected, "{xml}");
        }
    }

    #[test]
    fn private_is_stripped_for_the_recipient() {
        let from = Jid::parse("a@h/r").unwrap();
        let xml = with_stanza(
            "<message to='b@h'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>",
            |s| delivered(s, &from, |_| false),
        );
        assert_eq!(
            xml,
            "<message to='b@h' from='a@h/r'><body>x</body></message>"
        );
    }

    #[test]
    fn wrapping() {
        let to = Jid::parse("a@h/r2").unwrap();
        assert_eq!(
            wrap(
                &to,
                Some("chat"),
                "sent",
                "<message xmlns='jabber:client'/>"
            ),
            "<message from='a@h' to='a@h/r2' type='chat'><sent xmlns='urn:xmpp:carbons:2'>\
             <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></forwarded>\
             </sent></message>"
        );
    }
}
