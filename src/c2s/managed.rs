//! The connection's side of Stream Management (XEP-0198): `<enable/>`,
//! `<r/>`, `<a/>` and `<resume/>` from the client, counting what is
//! written, and taking over a parked session. The counters and the parking
//! live in [`crate::sm`]; this module never touches the router's delivery
//! rules.

use super::{Connection, End, Stage};
use crate::sm::{self, Parked, State, NS};
use crate::stanza::error::NS_STANZA_ERRORS;
use crate::stanza::StreamCondition;
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
                if let Some(state) = &self.sm {
                    let _ = write!(self.out, "<a xmlns='{NS}' h='{}'/>", state.handled);
                }
                Ok(())
            }
            "a" => {
                let h = node.attribute("h").and_then(|h| h.parse::<u32>().ok());
                match (&mut self.sm, h) {
                    (Some(state), Some(h)) => {
                        state.acknowledge(h).map_err(|_| too_high())?;
                        self.publish_held(0);
                        self.offline_after_ack();
                        Ok(())
                    }
                    (Some(_), None) => Err(End::Error(StreamCondition::BadFormat, None)),
                    (None, _) => Ok(()),
                }
            }
            _ => Err(End::Error(StreamCondition::UnsupportedStanzaType, None)),
        }
    }

    /// §3: only after binding, only once.
    fn on_enable(&mut self, node: roxmltree::Node<'_, '_>) {
        if self.stage != Stage::Bound || self.sm.is_some() {
            self.write_failed("unexpected-request");
            return;
        }
        let resume = matches!(node.attribute("resume"), Some("true" | "1"));
        let mut state = Box::<State>::default();
        let _ = write!(self.out, "<enabled xmlns='{NS}'");
        if resume {
            let id = self.server.random_id();
            let _ = write!(
                self.out,
                " id='{id}' resume='true' max='{}'",
                self.server.config().sm.resume_timeout_secs
            );
            self.register_live(&id);
            state.id = Some(id.into());
        }
        self.out.push_str("/>");
        self.sm = Some(state);
    }

    /// §5: a new stream takes over a parked session instead of binding.
    async fn on_resume_request(&mut self, node: roxmltree::Node<'_, '_>) -> Result<(), End> {
        let h = node.attribute("h").and_then(|h| h.parse::<u32>().ok());
        let previd = node.attribute("previd").unwrap_or_default();
        if self.stage != Stage::Authenticated {
            self.write_failed("unexpected-request");
            return Ok(());
        }
        let Some(h) = h else {
            return Err(End::Error(StreamCondition::BadFormat, None));
        };
        let user = self.user.as_deref().unwrap_or_default();
        let Some(Parked {
            session,
            mut state,
            csi,
            ..
        }) = self
            .server
            .state::<crate::sm::Parking>()
            .take(previd, user)
            .await
        else {
            self.write_failed("item-not-found");
            return Ok(());
        };
        // From here on this connection owns the session and ends it like its own.
        self.mailbox = session.mailbox.clone();
        self.server
            .replace_connection_mailbox(self.conn_id, self.mailbox.clone());
        self.session = Some(session.clone());
        self.stage = Stage::Bound;
        self.csi = csi;
        crate::push::resumed(&self.server, &session);
        info!("{}: session resumed from {}", session.jid, self.peer);
        if state.acknowledge(h).is_err() {
            self.sm = Some(state);
            return Err(too_high());
        }
        let _ = write!(
            self.out,
            "<resumed xmlns='{NS}' previd='{}' h='{}'/>",
            Esc(previd),
            state.handled
        );
        // Retransmitted stanzas keep their place in the count: written
        // without being recorded again.
        for xml in state.unacked() {
            self.out.push_str(xml);
        }
        let out = std::mem::take(&mut self.out);
        let written = self.write_raw(out.as_bytes()).await;
        self.register_live(previd);
        self.sm = Some(state);
        written?;
        // What waited for an inactive client, then the mailbox, follow.
        self.csi.set_active(true, &mut self.out);
        Ok(())
    }

    /// This connection now carries the resumable session `id`.
    fn register_live(&self, id: &str) {
        if let (Some(user), Some(tcp)) = (&self.user, self.transport.tcp()) {
            self.server
                .state::<crate::sm::Parking>()
                .live(id, user, tcp.clone());
        }
    }

    fn write_failed(&mut self, condition: &str) {
        let _ = write!(
            self.out,
            "<failed xmlns='{NS}'><{condition} xmlns='{NS_STANZA_ERRORS}'/></failed>"
        );
    }

    /// Notes the stanzas in `bytes`, about to be written, as unacknowledged.
    /// They count against the session's byte budget with what its mailbox
    /// queues; past it, or past `sm.max_unacked` stanzas, the stream ends with
    /// `<resource-constraint/>` (RFC 6120 §4.9.3.17: the server will not hold
    /// more for this stream), and the no-loss rule takes what was unacknowledged.
    pub(super) fn record_sent(&mut self, bytes: &[u8]) -> Result<(), End> {
        let max = self.server.config().sm.max_unacked as usize;
        let max_bytes = self.budget().saturating_sub(self.mailbox.queued_bytes());
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
                        self.who()
                    );
                    "too many unacknowledged bytes"
                }
            };
            End::Error(StreamCondition::ResourceConstraint, Some(text))
        })
    }
}

/// §4: an ack for more stanzas than were sent.
fn too_high() -> End {
    End::Error(
        StreamCondition::UndefinedCondition,
        Some("You acknowledged more stanzas than I sent you."),
    )
}
