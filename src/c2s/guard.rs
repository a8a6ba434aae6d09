//! One connection's share of abuse protection: rate-limit backpressure and
//! its warnings, keepalive probes and idle timeouts, bounded writes and the
//! login-failure delay. Shared bookkeeping lives in [`crate::limits`]; this
//! module only applies it to the connection. It never logs stanza bodies or
//! credentials.

use super::{Connection, End, Stage};
use crate::limits::bucket::Pair;
use crate::limits::Counters;
use crate::stanza::{Stanza, StreamCondition};
use crate::xml::Esc;
use log::info;
use smol::{future, Timer};
use std::fmt::Write;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Per-connection protection state (under 200 bytes).
pub(super) struct Guard {
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
enum Probe {
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

impl Connection {
    /// Who to name in a log line: the account once known, and the address.
    pub(super) fn who(&self) -> String {
        match (&self.session, &self.user) {
            (Some(session), _) => format!("{} from {}", session.jid, self.peer),
            (None, Some(user)) => format!("{user} from {}", self.peer),
            (None, None) => self.peer.to_string(),
        }
    }

    /// When the connection task must wake up even if nothing happens: the
    /// auth deadline before login, then the keepalive schedule.
    pub(super) fn next_deadline(&self, auth_deadline: Instant) -> Instant {
        let keepalive = &self.server.config().keepalive;
        match (self.stage, self.guard.probe_sent) {
            (Stage::Plain | Stage::Secured, _) => auth_deadline,
            (_, Some(sent)) => sent + secs(keepalive.ping_timeout_secs),
            (_, None) => self.guard.quiet_since + secs(keepalive.idle_secs),
        }
    }

    pub(super) fn on_deadline(&mut self, auth_deadline: Instant) -> Result<(), End> {
        let now = Instant::now();
        if now < self.next_deadline(auth_deadline) {
            return Ok(());
        }
        if matches!(self.stage, Stage::Plain | Stage::Secured) {
            info!("{}: not authenticated in time", self.peer);
            return Err(End::Error(StreamCondition::ConnectionTimeout, None));
        }
        let counters = &self.server.protection.counters;
        if self.guard.probe_sent.is_some() {
            info!("{}: no answer to the keepalive ping", self.who());
            Counters::bump(&counters.idle_timeouts);
            return Err(End::Error(StreamCondition::ConnectionTimeout, None));
        }
        Counters::bump(&counters.idle_pings);
        match self.probe() {
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

    /// How to find out whether a silent client is still there, asking only
    /// what it has shown it understands.
    fn probe(&self) -> Probe {
        let Some(session) = &self.session else {
            // An unbound stream cannot take an iq; it only gets the grace period.
            return Probe::Grace;
        };
        if self.sm.is_some() {
            // XEP-0198 §4: any client that enabled it must answer `<r/>`.
            return Probe::Ack;
        }
        if self.guard.speaks_ping || crate::pep::caps::wants(session, crate::ping::NS) {
            return Probe::Ping(session.jid.as_str().into());
        }
        Probe::Whitespace
    }

    /// Notes what a client's stanza shows about its keepalive support.
    pub(super) fn note_keepalive_support(&mut self, stanza: &Stanza) {
        if crate::ping::shows_support(stanza) {
            self.guard.speaks_ping = true;
        }
    }

    /// A failed read or write: the connection is lost. The kernel aborting it
    /// because sent data went unacknowledged (TCP_USER_TIMEOUT; reported as a
    /// timeout, or as the host being unreachable when address resolution failed
    /// meanwhile) is the keepalive finding a vanished host, and counted as such.
    pub(super) fn lost(&self, error: &io::Error) -> End {
        use io::ErrorKind::{HostUnreachable, NetworkUnreachable, TimedOut};
        if matches!(
            error.kind(),
            TimedOut | HostUnreachable | NetworkUnreachable
        ) {
            info!("{}: the peer stopped acknowledging ({error})", self.who());
            Counters::bump(&self.server.protection.counters.idle_timeouts);
        }
        End::Gone
    }

    /// Charges what one read brought in, pausing reads while in debt and
    /// warning, then disconnecting, a sender that keeps it up.
    pub(super) fn charge_input(&mut self, bytes: usize) -> Result<(), End> {
        self.guard.quiet_since = Instant::now();
        self.guard.probe_sent = None;
        if !self.guard.authenticated && matches!(self.stage, Stage::Authenticated | Stage::Bound) {
            self.guard.authenticated = true;
            (self.server.protection).authenticated(self.peer.ip(), self.conn_id);
        }
        self.throttle(0, bytes, true)
    }

    /// Charges one stanza before it is handled. In debt, the rest of what
    /// was read waits in the framer until the pause is over.
    pub(super) fn charge_stanza(&mut self) -> Result<(), End> {
        self.throttle(1, 0, true)
    }

    /// A pause slice is over: still in debt means another slice (and the
    /// thresholds are checked again); otherwise reading resumes.
    pub(super) fn on_resume(&mut self) -> Result<(), End> {
        self.throttle(0, 0, false)
    }

    fn throttle(&mut self, stanzas: u32, bytes: usize, fresh: bool) -> Result<(), End> {
        let now = Instant::now();
        let protection = &self.server.protection;
        let mut wait = self
            .guard
            .buckets
            .take(&protection.rate(), stanzas, bytes, now);
        if let (Some(_), Some(user)) = (&self.session, &self.user) {
            wait = wait.max(protection.charge_account(user, stanzas, bytes, now));
        }
        if wait.is_zero() {
            self.guard.paused_until = None;
            // Only new input that fits the budget ends the episode: a paused
            // sender that resumes flooding is still in the same episode.
            if fresh && self.guard.throttled_since.take().is_some() {
                info!("{}: no longer throttled", self.who());
                self.guard.warned = false;
            }
            return Ok(());
        }
        self.guard.paused_until = Some(now + wait.min(PAUSE_SLICE));
        let since = match self.guard.throttled_since {
            Some(since) => since,
            None => {
                info!("{}: sending too fast, reading paused", self.who());
                Counters::bump(&protection.counters.throttled);
                self.guard.throttled_since = Some(now);
                now
            }
        };
        let rate = &self.server.config().rate;
        let throttled_for = now.saturating_duration_since(since);
        if throttled_for >= secs(rate.disconnect_after_secs) {
            info!("{}: sent too fast for too long, disconnecting", self.who());
            Counters::bump(&protection.counters.rate_disconnects);
            return Err(End::Error(
                StreamCondition::PolicyViolation,
                Some("sending too fast for too long"),
            ));
        }
        if throttled_for >= secs(rate.warn_after_secs) && !self.guard.warned {
            self.guard.warned = true;
            info!("{}: warned about its sending rate", self.who());
            Counters::bump(&protection.counters.rate_warnings);
            if let Some(session) = &self.session {
                let _ = write!(
                    self.out,
                    "<message type='headline' from='{}' to='{}'><body>You are sending faster than \
                     this server allows ({} stanzas or {} bytes a second), so it has slowed you \
                     down. If this goes on for {} seconds you will be disconnected.</body></message>",
                    Esc(&self.server.config().domain),
                    Esc(session.jid.as_str()),
                    rate.stanzas_per_sec,
                    rate.bytes_per_sec,
                    rate.disconnect_after_secs
                );
            }
        }
        Ok(())
    }

    /// Writes stanzas to the client, counting them for stream management.
    pub(super) async fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.record_sent(bytes)?;
        self.write_raw(bytes).await
    }

    /// Writes to the client, giving up (and ending the session) when the
    /// write blocks longer than `keepalive.write_timeout_secs`.
    pub(super) async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), End> {
        let timeout = secs(self.server.config().keepalive.write_timeout_secs);
        self.publish_held(bytes.len());
        let transport = &mut self.transport;
        let written = future::or(async { Some(transport.write_all(bytes).await) }, async {
            Timer::after(timeout).await;
            None
        })
        .await;
        self.publish_held(0);
        match written {
            Some(Ok(())) => {
                self.guard.unwritten = Vec::new();
                Ok(())
            }
            Some(Err(error)) => Err(self.lost(&error)),
            None => {
                info!("{}: write blocked too long, closing", self.who());
                Counters::bump(&self.server.protection.counters.write_timeouts);
                Err(End::Gone)
            }
        }
    }

    /// A wrong password: the `<failure/>` waits (longer with every failure
    /// from this address or for this account) and so does everything the
    /// client pipelined behind it.
    pub(super) fn delay_login_failure(&mut self, user: Option<&str>) {
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

    /// No-loss rule for the stanza a failed write was carrying.
    pub(super) async fn keep_unwritten(&mut self) {
        let unwritten = std::mem::take(&mut self.guard.unwritten);
        let Some(session) = &self.session else {
            return;
        };
        let user = session.jid.user();
        for xml in unwritten {
            let _ = crate::offline::keep(&self.server, user, xml.as_bytes().to_vec()).await;
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
