//! One iq request as `dispatch::on_iq` hands it to a feature handler: who asked, what, of
//! whom, and the checks most handlers open with (whose account it is, which payload it
//! carries). It never decides what a feature answers; the conditions it fails with are the
//! handler's to name.

use crate::reply::IqReply;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{IqType, Stanza, StanzaCondition};
use roxmltree::Node;
use std::rc::Rc;

/// Who an iq addressed to this server is really for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IqTarget<'a> {
    /// The server itself (no `to`, or the bare domain).
    Server,
    /// A local account's bare JID: the server answers on its behalf.
    Account(&'a str),
}

/// A get or set addressed to this server or to a local account's bare JID.
pub struct Iq<'a> {
    pub server: &'a Rc<Server>,
    pub session: &'a Rc<Session>,
    pub stanza: &'a Stanza<'a, 'a>,
    pub ty: IqType,
    pub target: IqTarget<'a>,
    /// The request's first child: `on_iq` answers one without any itself.
    pub payload: Node<'a, 'a>,
}

impl<'a> Iq<'a> {
    /// The asking user's localpart; empty for another server's user, who is no local
    /// account whatever its localpart.
    pub fn user(&self) -> &'a str {
        if self.session.remote {
            return "";
        }
        self.session.jid.user()
    }

    /// The answer, from the address the request went to and to the asking session.
    pub fn reply(&self) -> IqReply {
        IqReply::new(self.server, self.stanza, self.session.jid.as_str())
    }

    /// Whether the request is about the asker's own account: to the server or to their own
    /// bare JID.
    pub fn is_own(&self) -> bool {
        // Another server's user owns nothing here, whatever its localpart.
        !self.session.remote
            && (self.target == IqTarget::Server || self.target == IqTarget::Account(self.user()))
    }

    /// The answer to a request only the account's owner may make; any other is failed with
    /// `refusal` (features name different conditions for it) and gets `None`.
    pub fn own_reply(&self, refusal: StanzaCondition, out: &mut String) -> Option<IqReply> {
        let reply = self.reply();
        if !self.is_own() {
            reply.fail(out, refusal);
            return None;
        }
        Some(reply)
    }

    /// The payload when it is the element `name`; any other is failed with `bad-request`.
    pub fn payload_named(
        &self,
        name: &str,
        reply: &IqReply,
        out: &mut String,
    ) -> Option<Node<'a, 'a>> {
        if self.payload.tag_name().name() != name {
            reply.fail(out, StanzaCondition::BadRequest);
            return None;
        }
        Some(self.payload)
    }

    /// [`Iq::own_reply`], then [`Iq::payload_named`]: the prologue of a request about the
    /// asker's own data.
    pub fn own_payload(
        &self,
        name: &str,
        refusal: StanzaCondition,
        out: &mut String,
    ) -> Option<(IqReply, Node<'a, 'a>)> {
        let reply = self.own_reply(refusal, out)?;
        let payload = self.payload_named(name, &reply, out)?;
        Some((reply, payload))
    }
}
