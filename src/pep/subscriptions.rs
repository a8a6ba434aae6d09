//! Explicit subscriptions to a PEP node (XEP-0060 §6.1–6.2, as XEP-0163 services offer
//! them): a user subscribes its own bare or full JID to a node it may read, and unsubscribes
//! it. The subscription only says who wants notifications; it never grants access: the
//! node's access model is checked again for every notification ([`super::broadcast`]).

use super::{event, item_xml, items_event, may_read, owner_jid, pubsub_error, Request, NS};
use crate::feature::Deferred;
use crate::jid::Jid;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{StanzaCondition, StanzaError};
use crate::store::StoreError;
use crate::xml::build::Element;
use roxmltree::Node;
use std::rc::Rc;

/// Most explicit subscribers one node keeps: a user can name many resources.
const MAX_SUBSCRIBERS: usize = 256;

/// The JID a `<subscribe/>` or `<unsubscribe/>` names (§6.1.1, §6.2.1).
#[derive(Debug, PartialEq)]
struct Subscriber(Jid);

impl TryFrom<Node<'_, '_>> for Subscriber {
    type Error = StanzaError<'static>;

    /// No `jid` is `bad-request` with `jid-required` (§6.1.3.3), one that is not a JID
    /// `bad-request` with `invalid-jid`.
    fn try_from(action: Node) -> Result<Self, Self::Error> {
        let text = action
            .attribute("jid")
            .ok_or_else(|| pubsub_error(StanzaCondition::BadRequest, "jid-required"))?;
        Jid::parse(text)
            .map(Subscriber)
            .map_err(|_| pubsub_error(StanzaCondition::BadRequest, "invalid-jid"))
    }
}

impl Request<'_> {
    /// The JID an (un)subscribe names, which must be the requester's own, bare or full;
    /// `None` when the error (`mismatch` for another's) is written.
    fn subscriber(
        &self,
        session: &Session,
        action: Node,
        mismatch: StanzaError<'static>,
        out: &mut String,
    ) -> Option<Jid> {
        let jid = match Subscriber::try_from(action) {
            Ok(Subscriber(jid)) => jid,
            Err(error) => {
                self.reply.error(out, &error);
                return None;
            }
        };
        if jid.bare() != session.jid.bare() {
            self.reply.error(out, &mismatch);
            return None;
        }
        Some(jid)
    }

    /// §6.1: subscribes under the access model, answers with the subscription, and sends
    /// the node's last item to the resources it covers (§6.1.7).
    pub(super) fn subscribe(
        self,
        session: &Rc<Session>,
        action: Node,
        out: &mut String,
    ) -> Deferred {
        let invalid = pubsub_error(StanzaCondition::BadRequest, "invalid-jid");
        let Some(jid) = self.subscriber(session, action, invalid, out) else {
            return Deferred::None;
        };
        let Some(config) = self.existing(out) else {
            return Deferred::None;
        };
        let user = session.jid.user();
        if let Err(error) = may_read(self.server, self.owner, user, config.access) {
            self.reply.error(out, &error);
            return Deferred::None;
        }
        let write =
            self.server
                .store
                .pep_subscribe(self.owner, self.node, jid.as_str(), MAX_SUBSCRIBERS);
        let session = session.clone();
        let (server, owner, node, reply) = self.detach();
        Deferred::Reply(Box::pin(async move {
            let mut out = String::new();
            match write.await {
                Ok(()) => {
                    reply.result_of(&mut out, |out| write_subscribed(out, &node, &jid));
                    send_last(&server, &owner, &node, &jid, &session, &mut out);
                }
                Err(StoreError::NotFound) => reply.fail(&mut out, StanzaCondition::ItemNotFound),
                Err(StoreError::QuotaExceeded) => reply.error(
                    &mut out,
                    &StanzaError::new(StanzaCondition::NotAllowed)
                        .with_text("this node has as many subscribers as the server allows"),
                ),
                Err(e) => out = reply.after_write(Err(e), "PEP subscription"),
            }
            out
        }))
    }

    /// §6.2: ends the requester's own subscription; `not-subscribed` when there is none.
    pub(super) fn unsubscribe(
        self,
        session: &Rc<Session>,
        action: Node,
        out: &mut String,
    ) -> Deferred {
        let forbidden = StanzaError::new(StanzaCondition::Forbidden);
        let Some(jid) = self.subscriber(session, action, forbidden, out) else {
            return Deferred::None;
        };
        if self.existing(out).is_none() {
            return Deferred::None;
        }
        let write = self
            .server
            .store
            .pep_unsubscribe(self.owner, self.node, jid.as_str());
        let reply = self.reply;
        Deferred::Reply(Box::pin(async move {
            match write.await {
                Err(StoreError::NotFound) => {
                    let mut out = String::new();
                    let error = pubsub_error(StanzaCondition::UnexpectedRequest, "not-subscribed");
                    reply.error(&mut out, &error);
                    out
                }
                result => reply.after_write(result, "PEP unsubscription"),
            }
        }))
    }
}

/// The subscription made (§6.1.2).
fn write_subscribed(out: &mut String, node: &str, jid: &Jid) {
    Element::new("pubsub").ns(NS).children(out, |out| {
        Element::new("subscription")
            .attr("node", node)
            .attr("jid", jid.as_str())
            .attr("subscription", "subscribed")
            .empty(out);
    });
}

/// The node's last item to the available resources `jid` covers: the requester's in `out`
/// (after its answer), the others' delivered.
fn send_last(
    server: &Server,
    owner: &str,
    node: &str,
    jid: &Jid,
    requester: &Session,
    out: &mut String,
) {
    let (Some(from), Ok(items)) = (
        owner_jid(server, owner),
        server.store.pep_items(owner, node),
    ) else {
        return;
    };
    let Some(last) = items.first() else {
        return;
    };
    let payload = items_event(node, &item_xml(&last.id, &last.payload));
    let router = server.router.borrow();
    for to in super::covered(&router, jid) {
        let xml = event(&from, &to.jid, &payload);
        if to.id == requester.id {
            out.push_str(&xml);
        } else {
            server.deliver(to, xml.into(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(action: &str) -> Result<Subscriber, StanzaError<'static>> {
        let doc = roxmltree::Document::parse(action).unwrap();
        Subscriber::try_from(doc.root_element())
    }

    #[test]
    fn the_action_names_a_jid_xep_0060_s6_1_1() {
        assert_eq!(
            subscriber(
                "<subscribe xmlns='http://jabber.org/protocol/pubsub' node='n' jid='a@h/r'/>"
            ),
            Ok(Subscriber(Jid::parse("a@h/r").unwrap()))
        );
    }

    #[test]
    fn no_jid_is_jid_required_xep_0060_s6_1_3_3() {
        let error = subscriber("<subscribe xmlns='http://jabber.org/protocol/pubsub' node='n'/>")
            .unwrap_err();
        assert_eq!(error.condition, StanzaCondition::BadRequest);
        assert_eq!(error.app.map(|(name, _)| name), Some("jid-required"));
    }

    #[test]
    fn a_bad_jid_is_invalid_jid() {
        let error =
            subscriber("<unsubscribe xmlns='http://jabber.org/protocol/pubsub' jid='a@b@c'/>")
                .unwrap_err();
        assert_eq!(error.condition, StanzaCondition::BadRequest);
        assert_eq!(error.app.map(|(name, _)| name), Some("invalid-jid"));
    }

    #[test]
    fn the_answer_names_node_jid_and_state() {
        let mut out = String::new();
        write_subscribed(&mut out, "n'1", &Jid::parse("a@h").unwrap());
        let doc = roxmltree::Document::parse(&out).unwrap();
        let sub = doc.root_element().first_element_child().unwrap();
        assert!(sub.has_tag_name((NS, "subscription")));
        assert_eq!(sub.attribute("node"), Some("n'1"));
        assert_eq!(sub.attribute("jid"), Some("a@h"));
        assert_eq!(sub.attribute("subscription"), Some("subscribed"));
    }
}
