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
use crate::xml::Esc;
use roxmltree::Node;
use std::rc::Rc;

/// Most explicit subscribers one node keeps: a user can name many resources.
const MAX_SUBSCRIBERS: usize = 256;

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
        let Some(text) = action.attribute("jid") else {
            let error = pubsub_error(StanzaCondition::BadRequest, "jid-required");
            self.reply.error(out, &error);
            return None;
        };
        let Ok(jid) = Jid::parse(text) else {
            let error = pubsub_error(StanzaCondition::BadRequest, "invalid-jid");
            self.reply.error(out, &error);
            return None;
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
                    reply.result_with(
                        &mut out,
                        &format!(
                            "<pubsub xmlns='{NS}'><subscription node='{}' jid='{}' subscription='subscribed'/></pubsub>",
                            Esc(&node),
                            Esc(jid.as_str())
                        ),
                    );
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
