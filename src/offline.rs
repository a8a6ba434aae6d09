//! Offline messages (XEP-0160): what may be stored for a user with no
//! available resource, storing it durably before the sender is answered,
//! and delivering it oldest first with a XEP-0203 delay at the user's
//! next initial presence. The store keeps a message until it has been
//! written to a session.

use crate::feature::Feature;
use crate::server::Server;
use crate::stanza::{self, Kind, MessageType, Stanza, StanzaCondition, StanzaError, StanzaType};
use crate::store::StoreError;
use crate::time;
use crate::xml::{Esc, NS_CLIENT};
use log::{info, warn};
use std::fmt::Write;

pub const NS_DELAY: &str = "urn:xmpp:delay";
pub const NS_HINTS: &str = "urn:xmpp:hints";
pub const NS_OFFLINE: &str = "msgoffline";

/// Offline storage itself is the router's (nothing accepted is lost); this advertises it.
pub const FEATURE: Feature = Feature {
    name: "offline",
    server_disco: &[NS_OFFLINE],
    ..Feature::NONE
};

/// XEP-0160 §3 / XEP-0334: only chat and normal messages with a body are
/// stored; chat states, headlines, errors and groupchat are not.
pub fn is_storable(stanza: &Stanza) -> bool {
    matches!(
        stanza.ty,
        StanzaType::Message(MessageType::Chat | MessageType::Normal)
    ) && stanza.child("body", NS_CLIENT).is_some()
        && stanza.child("no-store", NS_HINTS).is_none()
}

/// A message waiting to be committed for an offline user.
pub struct Pending {
    user: Box<str>,
    xml: String,
    id: Option<String>,
    to: String,
    sender: String,
}

impl Pending {
    /// `xml` is the message as it will be delivered (from stamped); the
    /// delay element is added here, at the moment the server accepted it.
    pub fn new(
        server: &Server,
        user: &str,
        mut xml: String,
        stanza: &Stanza,
        sender: &str,
    ) -> Pending {
        if let Some(open) = xml.strip_suffix("</message>").map(str::len) {
            xml.truncate(open);
            let _ = write!(
                xml,
                "<delay xmlns='{NS_DELAY}' from='{}' stamp='{}'/></message>",
                Esc(&server.config().domain),
                time::format_datetime(time::unix_now())
            );
        }
        Pending {
            user: user.into(),
            xml,
            id: stanza.id.map(str::to_owned),
            to: stanza
                .to
                .as_ref()
                .map(|j| j.as_str().to_owned())
                .unwrap_or_default(),
            sender: sender.to_owned(),
        }
    }

    /// Commits the message; if it cannot be kept the sender is told, so
    /// nothing accepted is silently lost.
    pub async fn store(self, server: &Server, out: &mut String) {
        let result = keep(server, &self.user, self.xml.clone().into_bytes()).await;
        if result.is_err() {
            for refused in server.features().iter().filter_map(|f| f.offline_refused) {
                refused(server, &self.user, &self.xml);
            }
        }
        let condition = match result {
            Ok(()) => return,
            Err(StoreError::QuotaExceeded) => {
                info!("{}: offline quota reached", self.user);
                StanzaCondition::ServiceUnavailable
            }
            Err(StoreError::NotFound) => StanzaCondition::ServiceUnavailable,
            Err(e) => {
                warn!("{}: offline message not stored: {e}", self.user);
                StanzaCondition::ResourceConstraint
            }
        };
        stanza::write_error_reply(
            out,
            Kind::Message,
            self.id.as_deref(),
            &self.to,
            &self.sender,
            &StanzaError::new(condition),
        );
    }
}

/// Stores `xml` for `user` within the offline quota. A resource of the
/// user whose initial presence looked before this write committed is told
/// to fetch it now, so the message does not wait for the next login. An
/// account deleted meanwhile gets nothing ([`StoreError::NotFound`]).
pub async fn keep(server: &Server, user: &str, xml: Vec<u8>) -> Result<(), StoreError> {
    if server.is_retired(user) {
        return Err(StoreError::NotFound);
    }
    let quota = server.config().limits.offline_quota as usize;
    server.store.offline_push(user, xml, quota).await?;
    announce(server, user);
    Ok(())
}

/// Tells the user's resources that would take a chat message (available,
/// priority ≥ 0) that stored messages wait; while a delivery is under way
/// it is repeated once that one is done, as it may have read too early.
fn announce(server: &Server, user: &str) {
    if let Some(again) = server.offline_in_flight.borrow_mut().get_mut(user) {
        *again = true;
        return;
    }
    for session in server.router.borrow().resources(user) {
        if session.available.get() && session.priority.get() >= 0 {
            session.mailbox.offline_waiting();
        }
    }
}

/// Stored messages handed to a session; acknowledge once written.
pub struct Batch {
    user: Box<str>,
    pub xml: String,
    last_seq: u64,
}

/// The user's oldest stored messages, up to `max_bytes` (at least one), or
/// None when there are none or another resource of the user is already
/// taking them. When more wait, the user is told again once this batch is
/// done, so a session takes them batch by batch within its byte budget.
pub fn take(server: &Server, user: &str, max_bytes: usize) -> Option<Batch> {
    {
        let mut in_flight = server.offline_in_flight.borrow_mut();
        if in_flight.contains_key(user) {
            return None;
        }
        in_flight.insert(user.into(), false);
    }
    let messages = match server.store.offline_peek_bytes(user, max_bytes) {
        Ok((messages, more)) if !messages.is_empty() => {
            if more {
                server
                    .offline_in_flight
                    .borrow_mut()
                    .insert(user.into(), true);
            }
            messages
        }
        Ok(_) => {
            release(server, user);
            return None;
        }
        Err(e) => {
            warn!("{user}: cannot read offline messages: {e}");
            server.offline_in_flight.borrow_mut().remove(user);
            return None;
        }
    };
    let mut xml = String::new();
    let mut last_seq = 0;
    for (seq, bytes) in messages {
        xml.push_str(&String::from_utf8_lossy(&bytes));
        last_seq = seq;
    }
    Some(Batch {
        user: user.into(),
        xml,
        last_seq,
    })
}

/// The batch reached the session's socket: remove it from the store.
pub async fn acknowledge(server: &Server, batch: Batch) {
    if let Err(e) = server
        .store
        .offline_remove(&batch.user, batch.last_seq)
        .await
    {
        warn!(
            "{}: offline messages delivered but not removed: {e}",
            batch.user
        );
    }
    release(server, &batch.user);
}

/// The batch was delivered or could not be written (then it stays for
/// next time); messages stored meanwhile are announced now.
pub fn release(server: &Server, user: &str) {
    let again = server.offline_in_flight.borrow_mut().remove(user);
    if again == Some(true) {
        announce(server, user);
    }
}
