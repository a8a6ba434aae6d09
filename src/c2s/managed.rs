//! The connection's side of Stream Management (XEP-0198): `<enable/>`,
//! `<r/>`, `<a/>` and `<resume/>` from the client, counting what is
//! written, and taking over a parked session. The counters and the parking
//! live in [`crate::sm`]; this module never touches the router's delivery
//! rules.

use super::{Bound, Connection, Stage};
use crate::sm::{self, Parked, State, NS};
use crate::stanza::error::NS_STANZA_ERRORS;
use crate::stanza::StreamCondition;
use crate::stream::{End, Stream};
use crate::xml::Esc;
use log::info;
use std::fmt::Write;

impl Connection {
    /// An element in the `urn:xmpp:sm:3` namespace.
    pub(super) async fn on_sm(&mut self, node: roxmltree::Node<'_, '_>) -> Result<(), End> {
        match node.tag_name().name() {
            "enable" => {
                self.on_enable(node);
                Ok(())
            }
            "resume" => self.on_resume_request(node).await,
            "r" => {
                if let Stage::Bound(Bound {
                    sm: Some(state), ..
                }) = &self.stage
                {
                    let _ = write!(self.stream.out, "<a xmlns='{NS}' h='{}'/>", state.handled);
                }
                Ok(())
            }
            "a" => {
                let h = node.attribute("h").and_then(|h| h.parse::<u32>().ok());
                let Stage::Bound(bound) = &mut self.stage else {
                    return Ok(());
                };
                let Some(state) = &mut bound.sm else {
                    return Ok(());
                };
                let Some(h) = h else {
                    return Err(End::Error(StreamCondition::BadFormat, None));
                };
                state.acknowledge(h).map_err(|_| too_high())?;
                self.stream.publish_held(0, bound.unacked());
                bound.offline_after_ack(&self.stream);
                Ok(())
            }
            _ => Err(End::Error(StreamCondition::UnsupportedStanzaType, None)),
        }
    }

    /// §3: only after binding, only once.
    fn on_enable(&mut self, node: roxmltree::Node<'_, '_>) {
        let out = &mut self.stream.out;
        let bound = match &mut self.stage {
            Stage::Bound(bound) if bound.sm.is_none() => bound,
            _ => return write_failed(out, "unexpected-request"),
        };
        let resume = matches!(node.attribute("resume"), Some("true" | "1"));
        let mut state = Box::<State>::default();
        let _ = write!(out, "<enabled xmlns='{NS}'");
        if resume {
            let server = &self.stream.server;
            let id = server.random_id();
            let _ = write!(
                out,
                " id='{id}' resume='true' max='{}'",
                server.config().sm.resume_timeout_secs
            );
            state.id = Some(id.into());
        }
        out.push_str("/>");
        if let Some(id) = &state.id {
            register_live(&self.stream, bound.session.jid.user(), id);
        }
        bound.sm = Some(state);
    }

    /// §5: a new stream takes over a parked session instead of binding.
    async fn on_resume_request(&mut self, node: roxmltree::Node<'_, '_>) -> Result<(), End> {
        let h = node.attribute("h").and_then(|h| h.parse::<u32>().ok());
        let previd = node.attribute("previd").unwrap_or_default();
        let Stage::Authenticated(authenticated) = &self.stage else {
            write_failed(&mut self.stream.out, "unexpected-request");
            return Ok(());
        };
        let Some(h) = h else {
            return Err(End::Error(StreamCondition::BadFormat, None));
        };
        let server = self.stream.server.clone();
        let Some(Parked {
            session,
            state,
            csi,
            ..
        }) = server
            .state::<crate::sm::Parking>()
            .take(previd, &authenticated.user)
            .await
        else {
            write_failed(&mut self.stream.out, "item-not-found");
            return Ok(());
        };
        // From here on this connection owns the session and ends it like its own.
        self.stream.mailbox = session.mailbox.clone();
        server.replace_connection_mailbox(self.stream.conn_id, self.stream.mailbox.clone());
        crate::push::resumed(&server, &session);
        info!("{}: session resumed from {}", session.jid, self.stream.peer);
        let mut bound = Bound::new(session, csi);
        let resumed = bound.resume(&mut self.stream, state, h, previd).await;
        self.stage = Stage::Bound(bound);
        resumed
    }
}

impl Bound {
    /// Takes over the parked counters `state` once the client's `h` checks
    /// out, and sends back what it had not acknowledged.
    async fn resume(
        &mut self,
        stream: &mut Stream,
        mut state: Box<State>,
        h: u32,
        previd: &str,
    ) -> Result<(), End> {
        if state.acknowledge(h).is_err() {
            self.sm = Some(state);
            return Err(too_high());
        }
        let _ = write!(
            stream.out,
            "<resumed xmlns='{NS}' previd='{}' h='{}'/>",
            Esc(previd),
            state.handled
        );
        // Retransmitted stanzas keep their place in the count: written
        // without being recorded again.
        for xml in state.unacked() {
            stream.out.push_str(xml);
        }
        let out = std::mem::take(&mut stream.out);
        let written = stream
            .write_raw(out.as_bytes(), self.unacked(), self.who(stream.peer))
            .await;
        register_live(stream, self.session.jid.user(), previd);
        self.sm = Some(state);
        written?;
        // What waited for an inactive client, then the mailbox, follow.
        self.csi.set_active(true, &mut stream.out);
        Ok(())
    }

    /// Notes the stanzas in `bytes`, about to be written, as unacknowledged.
    /// They count against the session's byte budget with what its mailbox
    /// queues; past it, or past `sm.max_unacked` stanzas, the stream ends with
    /// `<resource-constraint/>` (RFC 6120 §4.9.3.17: the server will not hold
    /// more for this stream), and the no-loss rule takes what was unacknowledged.
    pub(super) fn record_sent(&mut self, stream: &Stream, bytes: &[u8]) -> Result<(), End> {
        let max = stream.server.config().sm.max_unacked as usize;
        let max_bytes = stream
            .budget()
            .saturating_sub(stream.mailbox.queued_bytes());
        let Some(state) = &mut self.sm else {
            return Ok(());
        };
        let recorded = state.record(bytes, max, max_bytes);
        let unacked = state.unacked_bytes();
        recorded.map_err(|overflow| {
            let text = match overflow {
                sm::Overflow::Stanzas => "too many unacknowledged stanzas",
                sm::Overflow::Bytes => {
                    info!(
                        "{}: {unacked} bytes unacknowledged, over the session's budget",
                        self.who(stream.peer)
                    );
                    "too many unacknowledged bytes"
                }
            };
            End::Error(StreamCondition::ResourceConstraint, Some(text))
        })
    }
}

/// This connection now carries `user`'s resumable session `id`.
fn register_live(stream: &Stream, user: &str, id: &str) {
    if let Some(tcp) = stream.transport.tcp() {
        stream
            .server
            .state::<crate::sm::Parking>()
            .live(id, user, tcp.clone());
    }
}

fn write_failed(out: &mut String, condition: &str) {
    let _ = write!(
        out,
        "<failed xmlns='{NS}'><{condition} xmlns='{NS_STANZA_ERRORS}'/></failed>"
    );
}

/// §4: an ack for more stanzas than were sent.
fn too_high() -> End {
    End::Error(
        StreamCondition::UndefinedCondition,
        Some("You acknowledged more stanzas than I sent you."),
    )
}
