//! Owned addressing of an iq answer, for handlers that answer after awaited disk work (the
//! parsed request is gone by then) and for their immediate errors alike. It only writes
//! replies; it never decides which one.

use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::{self, Kind, Stanza, StanzaCondition, StanzaError};

pub struct IqReply {
    id: Option<String>,
    from: String,
    to: String,
}

impl IqReply {
    /// Answers come from the address the request went to (the server when none), and go to
    /// `to` (the session's JID; empty before a resource is bound).
    pub fn new(server: &Server, request: &Stanza, to: &str) -> IqReply {
        IqReply {
            id: request.id.map(str::to_owned),
            from: request
                .to
                .as_ref()
                .map_or(server.config().domain.as_str(), Jid::as_str)
                .to_owned(),
            to: to.to_owned(),
        }
    }

    /// An empty result.
    pub fn result(&self, out: &mut String) {
        stanza::write_iq_result(out, self.id.as_deref(), &self.from, &self.to);
    }

    /// A result carrying `payload` (already serialised, as stored data is).
    pub fn result_with(&self, out: &mut String, payload: &str) {
        self.result_of(out, |out| out.push_str(payload));
    }

    /// A result carrying the payload `payload` writes (with `xml::build::Element`).
    pub fn result_of(&self, out: &mut String, payload: impl FnOnce(&mut String)) {
        stanza::write_iq_result_with(out, self.id.as_deref(), &self.from, &self.to, payload);
    }

    /// The start tag of a result, still open (no `>`), for a caller that writes its payload
    /// straight after it and closes the iq itself; new code uses [`IqReply::result_of`].
    pub fn open_result(&self, out: &mut String) {
        stanza::open_reply(
            out,
            Kind::Iq,
            "result",
            self.id.as_deref(),
            &self.from,
            &self.to,
        );
    }

    pub fn error(&self, out: &mut String, error: &StanzaError) {
        stanza::write_error_reply(
            out,
            Kind::Iq,
            self.id.as_deref(),
            &self.from,
            &self.to,
            error,
        );
    }

    /// An error with the condition's usual type and no text.
    pub fn fail(&self, out: &mut String, condition: StanzaCondition) {
        self.error(out, &StanzaError::new(condition));
    }

    /// The reply to a stored write: the result, or `resource-constraint` (try again later) when
    /// it failed, as for offline storage.
    pub fn after_write<E: std::fmt::Display>(&self, result: Result<(), E>, what: &str) -> String {
        let mut out = String::new();
        match result {
            Ok(()) => self.result(&mut out),
            Err(e) => {
                log::warn!("{}: {what} not stored: {e}", self.to);
                self.fail(&mut out, StanzaCondition::ResourceConstraint);
            }
        }
        out
    }
}
