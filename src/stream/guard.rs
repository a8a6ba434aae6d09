//! One stream's share of abuse protection: rate-limit backpressure and its
//! warnings, keepalive probes and idle timeouts, and the login-failure delay,
//! as methods of the shared [`Stream`] (every stream kind gets them; the layer
//! above only says which probe a silent peer understands). Shared bookkeeping
//! lives in [`crate::limits`]; this module only applies it to the connection.
//! It never logs stanza bodies or credentials.

use super::{End, Stream, Who};
use crate::jid::SessionJid;
use crate::limits::bucket::Pair;
use crate::limits::Counters;
use crate::stanza::{Stanza, StreamCondition};
use crate::xml::Esc;
use log::info;
use std::fmt::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Per-connection protection state (under 200 bytes).
pub struct Guard {
    /// This connection's own buckets; they also cover unauthenticated streams.
    buckets: Pair,
    /// Reading is paused until then: the rate limit's backpressure.
    pub paused_until: Option<Instant>,
    /// Start of the current episode of continuous throttling.
    throttled_since: Option<Instant>,
    warned: bool,
    /// The connection stopped counting as unauthenticated for its address.
    pub authenticated: bool,
    /// Last input, or the last whitespace keepalive: the next probe is due
    /// `keepalive.idle_secs` after it.
    quiet_since: Instant,
    /// A probe that must be answered (`<r/>` or an iq ping) went out then.
    probe_sent: Option<Instant>,
    /// The client pinged, or answered a ping: it speaks XEP-0199.
    speaks_ping: bool,
    /// Output (a login `<failure/>`) is held back until then.
    pub hold_until: Option<Instant>,
    /// Input already read stopped being handled (a pause, a held reply, a queued close):
    /// it is handled before anything more is read, since the client may send nothing else.
    pub input_waiting: bool,
    /// Storable stanzas taken from the mailbox and not yet fully written:
    /// they go offline if the write never completes.
    pub unwritten: Vec<Rc<str>>,
}

impl Guard {
    pub fn new(rate: &crate::limits::bucket::Limits, now: Instant) -> Guard {
        Guard {
            buckets: Pair::full(rate, now),
            paused_until: None,
            throttled_since: None,
            warned: false,
            authenticated: false,
            quiet_since: now,
            probe_sent: None,
            speaks_ping: false,
            hold_until: None,
            input_waiting: false,
            unwritten: Vec::new(),
        }
    }
}

/// What a silent session's keepalive sends.
pub enum Probe {
    /// Nothing: an authenticated stream that never bound gets `ping_timeout_secs` more.
    Grace,
    /// XEP-0198 `<r/>`, for a stream with stream management enabled.
    Ack,
    /// XEP-0199 iq ping, to this full JID.
    Ping(Box<str>),
    /// A single space between stanzas (RFC 6120 §4.6.1), for every other client.
    Whitespace,
}

/// Long pauses are cut into slices so the warning and disconnect
/// thresholds are checked while the reader is paused.
const PAUSE_SLICE: Duration = Duration::from_millis(250);

fn secs(value: u32) -> Duration {
    Duration::from_secs(value.into())
}

impl Stream {
    /// When the stream's task must wake up even if nothing happens: the
    /// auth deadline before the peer `authenticated`, then the keepalive schedule.
    pub fn next_deadline(&self, authenticated: bool, auth_deadline: Instant) -> Instant {
        let keepalive = &self.server.config().keepalive;
        match (authenticated, self.guard.probe_sent) {
            (false, _) => auth_deadline,
            (true, Some(sent)) => sent + secs(keepalive.ping_timeout_secs),
            (true, None) => self.guard.quiet_since + secs(keepalive.idle_secs),
        }
    }

    /// A deadline passed: the auth deadline ends the stream, a silent peer
    /// gets the `probe` the layer above picks (from whether it showed it
    /// speaks XEP-0199), and an unanswered probe ends the stream.
    pub fn on_deadline(
        &mut self,
        auth_deadline: Instant,
        authenticated: bool,
        who: Who<'_>,
        probe: impl FnOnce(bool) -> Probe,
    ) -> Result<(), End> {
        let now = Instant::now();
        if now < self.next_deadline(authenticated, auth_deadline) {
            return Ok(());
        }
        if !authenticated {
            info!("{}: not authenticated in time", self.peer);
            return Err(End::Error(StreamCondition::ConnectionTimeout, None));
        }
        let counters = &self.server.protection.counters;
        if self.guard.probe_sent.is_some() {
            info!("{who}: no answer to the keepalive ping");
            Counters::bump(&counters.idle_timeouts);
            return Err(End::Error(StreamCondition::ConnectionTimeout, None));
        }
        Counters::bump(&counters.idle_pings);
        match probe(self.guard.speaks_ping) {
            Probe::Grace => self.guard.probe_sent = Some(now),
            Probe::Ack => {
                let _ = write!(self.out, "<r xmlns='{}'/>", crate::sm::NS);
                self.guard.probe_sent = Some(now);
            }
            Probe::Ping(to) => {
                let id = self.server.next_id();
                crate::ping::write_keepalive(&mut self.out, id, &self.server.config().domain, &to);
                self.guard.probe_sent = Some(now);
            }
            // Nothing to wait for: it only puts data in flight, and a vanished host leaves
            // it unacknowledged until the socket's TCP_USER_TIMEOUT aborts the connection.
            Probe::Whitespace => {
                self.out.push(' ');
                self.guard.quiet_since = now;
            }
        }
        Ok(())
    }

    /// Notes what a peer's stanza shows about its keepalive support.
    pub fn note_keepalive_support(&mut self, stanza: &Stanza) {
        if crate::ping::shows_support(stanza) {
            self.guard.speaks_ping = true;
        }
    }

    /// Charges what one read brought in, pausing reads while in debt and
    /// warning, then disconnecting, a sender that keeps it up. The first read
    /// once the peer is `authenticated` stops it counting as unauthenticated.
    pub fn charge_input(
        &mut self,
        bytes: usize,
        authenticated: bool,
        who: Who<'_>,
        bound: Option<&SessionJid>,
    ) -> Result<(), End> {
        self.guard.quiet_since = Instant::now();
        self.guard.probe_sent = None;
        if !self.guard.authenticated && authenticated {
            self.guard.authenticated = true;
            (self.server.protection).authenticated(self.peer.ip(), self.conn_id);
        }
        self.throttle(0, bytes, true, who, bound)
    }

    /// Charges one stanza before it is handled. In debt, the rest of what
    /// was read waits in the framer until the pause is over.
    pub fn charge_stanza(&mut self, who: Who<'_>, bound: Option<&SessionJid>) -> Result<(), End> {
        self.throttle(1, 0, true, who, bound)
    }

    /// A pause slice is over: still in debt means another slice (and the
    /// thresholds are checked again); otherwise reading resumes.
    pub fn on_resume(&mut self, who: Who<'_>, bound: Option<&SessionJid>) -> Result<(), End> {
        self.throttle(0, 0, false, who, bound)
    }

    /// Charges the connection's buckets and, for a `bound` session, its
    /// account's; the session is also the one told when it is slowed down.
    fn throttle(
        &mut self,
        stanzas: u32,
        bytes: usize,
        fresh: bool,
        who: Who<'_>,
        bound: Option<&SessionJid>,
    ) -> Result<(), End> {
        let now = Instant::now();
        let protection = &self.server.protection;
        let mut wait = self
            .guard
            .buckets
            .take(&protection.rate(), stanzas, bytes, now);
        if let Some(jid) = bound {
            wait = wait.max(protection.charge_account(jid.user(), stanzas, bytes, now));
        }
        if wait.is_zero() {
            self.guard.paused_until = None;
            // Only new input that fits the budget ends the episode: a paused
            // sender that resumes flooding is still in the same episode.
            if fresh && self.guard.throttled_since.take().is_some() {
                info!("{who}: no longer throttled");
                self.guard.warned = false;
            }
            return Ok(());
        }
        self.guard.paused_until = Some(now + wait.min(PAUSE_SLICE));
        let since = match self.guard.throttled_since {
            Some(since) => since,
            None => {
                info!("{who}: sending too fast, reading paused");
                Counters::bump(&protection.counters.throttled);
                self.guard.throttled_since = Some(now);
                now
            }
        };
        let rate = &self.server.config().rate;
        let throttled_for = now.saturating_duration_since(since);
        if throttled_for >= secs(rate.disconnect_after_secs) {
            info!("{who}: sent too fast for too long, disconnecting");
            Counters::bump(&protection.counters.rate_disconnects);
            return Err(End::Error(
                StreamCondition::PolicyViolation,
                Some("sending too fast for too long"),
            ));
        }
        if throttled_for >= secs(rate.warn_after_secs) && !self.guard.warned {
            self.guard.warned = true;
            info!("{who}: warned about its sending rate");
            Counters::bump(&protection.counters.rate_warnings);
            if let Some(jid) = bound {
                let _ = write!(
                    self.out,
                    "<message type='headline' from='{}' to='{}'><body>You are sending faster than \
                     this server allows ({} stanzas or {} bytes a second), so it has slowed you \
                     down. If this goes on for {} seconds you will be disconnected.</body></message>",
                    Esc(&self.server.config().domain),
                    Esc(jid.as_str()),
                    rate.stanzas_per_sec,
                    rate.bytes_per_sec,
                    rate.disconnect_after_secs
                );
            }
        }
        Ok(())
    }

    /// A wrong password: the `<failure/>` waits (longer with every failure
    /// from this address or for this account) and so does everything the
    /// peer pipelined behind it.
    pub fn delay_login_failure(&mut self, user: Option<&str>) {
        let now = Instant::now();
        let delay = self.server.protection.login_failed(
            &self.server.config().limits,
            self.peer.ip(),
            user,
            now,
        );
        if !delay.is_zero() {
            info!(
                "{}: failed login for {}, answering in {} ms",
                self.peer,
                user.unwrap_or("?"),
                delay.as_millis()
            );
            self.guard.hold_until = Some(now + delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_state_stays_small() {
        // Part of the 16 KiB per-session budget.
        assert!(
            std::mem::size_of::<Guard>() <= 192,
            "{}",
            std::mem::size_of::<Guard>()
        );
    }
}
