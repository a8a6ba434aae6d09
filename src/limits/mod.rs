//! Abuse protection shared by every connection: admission by address
//! (`[limits] max_connections*`), per-account rate buckets (`[rate]`),
//! brute-force delays for failed logins and the [`Counters`] of every limit
//! hit. It keeps only bounded bookkeeping and answers questions; it never
//! reads or writes a socket, never touches the store and never logs a
//! stanza body or a credential.

mod attempts;
pub mod bucket;
mod failures;

use crate::config::{Config, Limits as LimitsConfig};
use crate::stanza::StreamCondition;
use attempts::{Attempts, Recorded};
use bucket::Pair;
use failures::Failures;
use log::warn;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How many addresses and accounts the login-failure table remembers; past
/// it the stalest entry is forgotten.
const FAILURE_ENTRIES: usize = 4096;
/// A failure older than this no longer makes the next one slower.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// Refused connections are logged at most once per this interval, so a
/// connection flood cannot flood the log as well.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How often each limit was hit since the start; logged at shutdown.
#[derive(Default)]
pub struct Counters {
    pub refused_total: Cell<u64>,
    pub refused_per_ip: Cell<u64>,
    pub refused_unauthenticated: Cell<u64>,
    pub auth_delays: Cell<u64>,
    pub throttled: Cell<u64>,
    pub rate_warnings: Cell<u64>,
    pub rate_disconnects: Cell<u64>,
    pub idle_pings: Cell<u64>,
    pub idle_timeouts: Cell<u64>,
    pub write_timeouts: Cell<u64>,
    pub slow_readers: Cell<u64>,
}

impl Counters {
    pub fn bump(counter: &Cell<u64>) {
        counter.set(counter.get().saturating_add(1));
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused_total={} refused_per_ip={} refused_unauthenticated={} auth_delays={} \
             throttled={} rate_warnings={} rate_disconnects={} idle_pings={} idle_timeouts={} \
             write_timeouts={} slow_readers={}",
            self.refused_total.get(),
            self.refused_per_ip.get(),
            self.refused_unauthenticated.get(),
            self.auth_delays.get(),
            self.throttled.get(),
            self.rate_warnings.get(),
            self.rate_disconnects.get(),
            self.idle_pings.get(),
            self.idle_timeouts.get(),
            self.write_timeouts.get(),
            self.slow_readers.get(),
        )
    }
}

/// Why a new connection is turned away, for its stream error.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub condition: StreamCondition,
    pub text: &'static str,
}

/// Open connections from one address. Entries exist only while non-zero, so
/// the map is bounded by `max_connections`.
#[derive(Default, Clone, Copy)]
struct AddrCount {
    open: u32,
    unauthenticated: u32,
}

/// An account's shared bucket and how many bound sessions use it.
struct AccountRate {
    buckets: Pair,
    sessions: u32,
}

/// The protection state on [`crate::server::Server`].
pub struct Protection {
    pub counters: Counters,
    /// `[rate]` as refill settings; a reload replaces them (see [`Self::set_rate`]).
    rate: Cell<bucket::Limits>,
    open: Cell<u32>,
    /// Connections not yet authenticated, by id, oldest first: past the unauthenticated share of the
    /// capacity, the oldest one makes room for a new one.
    pre_auth: RefCell<VecDeque<(u64, IpAddr)>>,
    /// Connections closed to make room whose slot was freed at once (a closing stream may
    /// linger a while); their own release then counts nothing.
    evicted: RefCell<HashSet<u64>>,
    addrs: RefCell<HashMap<IpAddr, AddrCount>>,
    accounts: RefCell<HashMap<Box<str>, AccountRate>>,
    failures: RefCell<Failures>,
    attempts: RefCell<Attempts>,
    refusal_logged: Cell<Option<Instant>>,
    refusals_unlogged: Cell<u64>,
}

impl Protection {
    pub fn new(config: &Config) -> Protection {
        Protection {
            counters: Counters::default(),
            rate: Cell::new(bucket::Limits::from_config(&config.rate)),
            open: Cell::new(0),
            pre_auth: RefCell::default(),
            evicted: RefCell::default(),
            addrs: RefCell::default(),
            accounts: RefCell::default(),
            failures: RefCell::new(Failures::new(FAILURE_ENTRIES, FAILURE_MEMORY)),
            attempts: RefCell::new(Attempts::new(FAILURE_ENTRIES)),
            refusal_logged: Cell::new(None),
            refusals_unlogged: Cell::new(0),
        }
    }

    /// The refill settings every bucket is charged with now.
    pub fn rate(&self) -> bucket::Limits {
        self.rate.get()
    }

    /// New `[rate]` settings for every bucket, existing ones included. Buckets keep their
    /// tokens and their debt (a full one is cut to a smaller burst at its next charge), so a
    /// reload never hands a flooder a fresh burst.
    pub fn set_rate(&self, rate: &crate::config::Rate) {
        self.rate.set(bucket::Limits::from_config(rate));
    }

    /// Counts a new, unauthenticated connection `id` from `ip`, or says which limit it
    /// would break. Every `Ok` is matched by one [`Self::release`]. `Ok(Some(old))` names
    /// the oldest unauthenticated connection, which must be closed to make room: the
    /// unauthenticated share of the capacity is full, and a flood of half-open streams
    /// from many addresses must neither lock logins out nor reach the capacity kept
    /// for logged-in sessions.
    pub fn admit(
        &self,
        limits: &LimitsConfig,
        ip: IpAddr,
        id: u64,
    ) -> Result<Option<u64>, Refusal> {
        let mut addrs = self.addrs.borrow_mut();
        let count = addrs.get(&ip).copied().unwrap_or_default();
        let refusal = if self.open.get() >= limits.max_connections {
            Counters::bump(&self.counters.refused_total);
            Some(Refusal {
                condition: StreamCondition::ResourceConstraint,
                text: "the server has too many connections",
            })
        } else if count.open >= limits.max_connections_per_ip {
            Counters::bump(&self.counters.refused_per_ip);
            Some(Refusal {
                condition: StreamCondition::PolicyViolation,
                text: "too many connections from your address",
            })
        } else if count.unauthenticated >= limits.max_unauthenticated_per_ip {
            Counters::bump(&self.counters.refused_unauthenticated);
            Some(Refusal {
                condition: StreamCondition::PolicyViolation,
                text: "too many unauthenticated connections from your address",
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        self.open.set(self.open.get() + 1);
        addrs.insert(
            ip,
            AddrCount {
                open: count.open + 1,
                unauthenticated: count.unauthenticated + 1,
            },
        );
        drop(addrs);
        let mut pre_auth = self.pre_auth.borrow_mut();
        let evict = (pre_auth.len() as u32 >= unauthenticated_cap(limits))
            .then(|| pre_auth.pop_front())
            .flatten();
        pre_auth.push_back((id, ip));
        drop(pre_auth);
        Ok(evict.map(|(old, old_ip)| {
            Counters::bump(&self.counters.refused_unauthenticated);
            self.uncount(old_ip, false);
            self.evicted.borrow_mut().insert(old);
            old
        }))
    }

    /// Connection `id` no longer waits to authenticate (it did, or it is gone).
    fn leave_pre_auth(&self, id: u64) {
        let mut pre_auth = self.pre_auth.borrow_mut();
        if let Some(at) = pre_auth.iter().position(|&(queued, _)| queued == id) {
            pre_auth.remove(at);
        }
    }

    /// Whether to log this refusal: `Some(n)` with the `n` refusals left
    /// unlogged since the last logged one, or `None` to stay quiet.
    pub fn refusal_to_log(&self, now: Instant) -> Option<u64> {
        let due = self
            .refusal_logged
            .get()
            .is_none_or(|last| now.saturating_duration_since(last) >= REFUSAL_LOG_INTERVAL);
        if due {
            self.refusal_logged.set(Some(now));
            Some(self.refusals_unlogged.replace(0))
        } else {
            Counters::bump(&self.refusals_unlogged);
            None
        }
    }

    /// The connection from `ip` authenticated: it no longer counts against
    /// `max_unauthenticated_per_ip`.
    pub fn authenticated(&self, ip: IpAddr, id: u64) {
        self.leave_pre_auth(id);
        if let Some(count) = self.addrs.borrow_mut().get_mut(&ip) {
            count.unauthenticated = count.unauthenticated.saturating_sub(1);
        }
    }

    /// Whether a connection from `ip` has authenticated and is still open: services
    /// that need no login give such an address more room than a stranger.
    pub fn has_authenticated(&self, ip: IpAddr) -> bool {
        self.addrs
            .borrow()
            .get(&ip)
            .is_some_and(|count| count.open > count.unauthenticated)
    }

    /// An admitted connection ended.
    pub fn release(&self, ip: IpAddr, id: u64, was_authenticated: bool) {
        if self.evicted.borrow_mut().remove(&id) {
            return;
        }
        self.leave_pre_auth(id);
        self.uncount(ip, was_authenticated);
    }

    /// Takes a connection from `ip` out of the counts.
    fn uncount(&self, ip: IpAddr, was_authenticated: bool) {
        self.open.set(self.open.get().saturating_sub(1));
        let mut addrs = self.addrs.borrow_mut();
        if let Some(count) = addrs.get_mut(&ip) {
            count.open = count.open.saturating_sub(1);
            if !was_authenticated {
                count.unauthenticated = count.unauthenticated.saturating_sub(1);
            }
            if count.open == 0 {
                addrs.remove(&ip);
                crate::memory::shrink_sparse(&mut addrs);
            }
        }
    }

    /// A session of `user` was bound: it shares the account's bucket.
    pub fn bind_account(&self, user: &str, now: Instant) {
        let mut accounts = self.accounts.borrow_mut();
        match accounts.get_mut(user) {
            Some(account) => account.sessions += 1,
            None => {
                accounts.insert(
                    user.into(),
                    AccountRate {
                        buckets: Pair::full(&self.rate(), now),
                        sessions: 1,
                    },
                );
            }
        }
    }

    /// A bound session of `user` ended; the last one drops the bucket.
    pub fn unbind_account(&self, user: &str) {
        let mut accounts = self.accounts.borrow_mut();
        if let Some(account) = accounts.get_mut(user) {
            account.sessions = account.sessions.saturating_sub(1);
            if account.sessions == 0 {
                accounts.remove(user);
                crate::memory::shrink_sparse(&mut accounts);
            }
        }
    }

    /// Charges a read to the account; how long its sessions must pause.
    pub fn charge_account(&self, user: &str, stanzas: u32, bytes: usize, now: Instant) -> Duration {
        self.accounts
            .borrow_mut()
            .get_mut(user)
            .map_or(Duration::ZERO, |account| {
                account.buckets.take(&self.rate(), stanzas, bytes, now)
            })
    }

    /// A wrong password from `ip` for `user` (if known): how long to hold
    /// the `<failure/>` reply. Doubles with every failure of either, capped.
    pub fn login_failed(
        &self,
        limits: &LimitsConfig,
        ip: IpAddr,
        user: Option<&str>,
        now: Instant,
    ) -> Duration {
        let mut failures = self.failures.borrow_mut();
        let mut count = failures.record(failures::Key::Addr(ip), now);
        if let Some(user) = user {
            count = count.max(failures.record(failures::Key::Account(user.into()), now));
            let budget = limits.auth_attempts_per_account_per_min;
            if self.attempts.borrow_mut().record(user, budget, now) == Recorded::Exhausted {
                warn!(
                    "{user}: {budget} failed logins within a minute from all addresses \
                     (limits.auth_attempts_per_account_per_min); further attempts fail at once \
                     for the rest of the minute, open sessions stay"
                );
            }
        }
        Counters::bump(&self.counters.auth_delays);
        failure_delay(limits, count)
    }

    /// A successful login forgets the account's and the address's failures.
    pub fn login_succeeded(&self, ip: IpAddr, user: &str) {
        let mut failures = self.failures.borrow_mut();
        failures.forget(&failures::Key::Addr(ip));
        failures.forget(&failures::Key::Account(user.into()));
        self.attempts.borrow_mut().forget(user);
    }

    /// Whether `user` has used up its failed-login budget for now: a login attempt for
    /// it fails at once, without a password check (so guessing gains nothing).
    pub fn account_locked(&self, limits: &LimitsConfig, user: &str, now: Instant) -> bool {
        let budget = limits.auth_attempts_per_account_per_min;
        self.attempts.borrow().exhausted(user, budget, now)
    }
}

/// How many connections may be open before authenticating, from all addresses.
fn unauthenticated_cap(limits: &LimitsConfig) -> u32 {
    let share = u64::from(limits.max_connections) * u64::from(limits.max_unauthenticated_percent);
    u32::try_from(share / 100).unwrap_or(u32::MAX).max(1)
}

/// `base × 2^(failures-1)`, capped.
fn failure_delay(limits: &LimitsConfig, failures: u32) -> Duration {
    let base = u64::from(limits.auth_failure_delay_ms);
    let shift = failures.saturating_sub(1).min(20);
    let ms = base
        .saturating_mul(1 << shift)
        .min(limits.auth_failure_delay_max_ms.into());
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: u32, per_ip: u32, unauth: u32) -> Config {
        let mut config = Config::default();
        config.limits.max_connections = max_connections;
        config.limits.max_connections_per_ip = per_ip;
        config.limits.max_unauthenticated_per_ip = unauth;
        config
    }

    #[test]
    fn admission_limits_each_apply() {
        let config = config(3, 2, 1);
        let guard = Protection::new(&config);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        guard.admit(&config.limits, a, 11).unwrap();
        let refused = guard.admit(&config.limits, a, 12).unwrap_err();
        assert_eq!(refused.condition, StreamCondition::PolicyViolation);
        assert!(refused.text.contains("unauthenticated"));
        guard.authenticated(a, 11);
        guard.admit(&config.limits, a, 13).unwrap();
        guard.authenticated(a, 13);
        let refused = guard.admit(&config.limits, a, 14).unwrap_err();
        assert_eq!(refused.text, "too many connections from your address");
        guard.admit(&config.limits, b, 15).unwrap();
        let refused = guard.admit(&config.limits, c, 16).unwrap_err();
        assert_eq!(refused.condition, StreamCondition::ResourceConstraint);
        guard.release(b, 15, false);
        guard.admit(&config.limits, c, 17).unwrap();
        guard.release(a, 11, true);
        guard.release(a, 13, true);
        guard.release(c, 17, false);
        assert!(guard.addrs.borrow().is_empty());
        assert_eq!(guard.open.get(), 0);
        assert_eq!(guard.counters.refused_total.get(), 1);
        assert_eq!(guard.counters.refused_per_ip.get(), 1);
        assert_eq!(guard.counters.refused_unauthenticated.get(), 1);
    }

    #[test]
    fn past_the_unauthenticated_share_the_oldest_makes_room() {
        let mut config = config(8, 8, 8);
        config.limits.max_unauthenticated_percent = 50;
        let guard = Protection::new(&config);
        let ip = |n: u8| IpAddr::from([10, 0, 1, n]);
        for id in 1..=4 {
            assert_eq!(guard.admit(&config.limits, ip(id as u8), id), Ok(None));
        }
        // Connection 2 logs in: it is no longer a candidate.
        guard.authenticated(ip(2), 2);
        assert_eq!(guard.admit(&config.limits, ip(5), 5), Ok(None));
        assert_eq!(guard.admit(&config.limits, ip(6), 6), Ok(Some(1)));
        assert_eq!(guard.admit(&config.limits, ip(7), 7), Ok(Some(3)));
        guard.release(ip(1), 1, false);
        guard.release(ip(3), 3, false);
        assert_eq!(guard.pre_auth.borrow().len(), 4);
        // The two closed ones stopped counting when they were picked, not at release.
        assert_eq!(guard.open.get(), 5);
        assert!(guard.evicted.borrow().is_empty());
        assert_eq!(guard.counters.refused_unauthenticated.get(), 2);
    }

    #[test]
    fn refusal_logging_is_throttled() {
        let guard = Protection::new(&Config::default());
        let t0 = Instant::now();
        assert_eq!(guard.refusal_to_log(t0), Some(0));
        assert_eq!(guard.refusal_to_log(t0 + Duration::from_secs(1)), None);
        assert_eq!(guard.refusal_to_log(t0 + Duration::from_secs(2)), None);
        assert_eq!(guard.refusal_to_log(t0 + Duration::from_secs(10)), Some(2));
    }

    #[test]
    fn account_buckets_are_shared_and_dropped_with_the_last_session() {
        let mut config = Config::default();
        config.rate.stanza_burst = 10;
        config.rate.stanzas_per_sec = 10;
        let guard = Protection::new(&config);
        let now = Instant::now();
        guard.bind_account("alice", now);
        guard.bind_account("alice", now);
        assert_eq!(guard.charge_account("alice", 10, 0, now), Duration::ZERO);
        assert!(guard.charge_account("alice", 5, 0, now) > Duration::ZERO);
        guard.unbind_account("alice");
        assert_eq!(guard.accounts.borrow().len(), 1);
        guard.unbind_account("alice");
        assert!(guard.accounts.borrow().is_empty());
        assert_eq!(guard.charge_account("alice", 99, 0, now), Duration::ZERO);
    }

    #[test]
    fn new_rates_apply_to_existing_buckets_without_refilling_them() {
        let mut config = Config::default();
        config.rate.stanza_burst = 10;
        config.rate.stanzas_per_sec = 10;
        let guard = Protection::new(&config);
        let now = Instant::now();
        guard.bind_account("mallory", now);
        // 10 tokens of debt at 10/s: one second.
        let wait = guard.charge_account("mallory", 20, 0, now);
        assert!((wait.as_secs_f32() - 1.0).abs() < 0.01, "{wait:?}");
        config.rate.stanza_burst = 1000;
        config.rate.stanzas_per_sec = 1;
        guard.set_rate(&config.rate);
        // The debt is still there, now paid back at 1/s: ten seconds, not a fresh burst.
        let wait = guard.charge_account("mallory", 0, 0, now);
        assert!((wait.as_secs_f32() - 10.0).abs() < 0.01, "{wait:?}");
        // A smaller burst caps what a full bucket holds at its next charge.
        config.rate.stanza_burst = 2;
        config.rate.stanzas_per_sec = 10;
        guard.set_rate(&config.rate);
        let later = now + Duration::from_secs(3600);
        assert_eq!(guard.charge_account("mallory", 2, 0, later), Duration::ZERO);
        assert!(guard.charge_account("mallory", 1, 0, later) > Duration::ZERO);
    }

    #[test]
    fn login_failures_double_and_are_capped() {
        let config = Config::default();
        let limits = &config.limits;
        let guard = Protection::new(&config);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let other: IpAddr = "10.0.0.10".parse().unwrap();
        let now = Instant::now();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(guard.login_failed(limits, ip, Some("bob"), now)), 250);
        assert_eq!(ms(guard.login_failed(limits, ip, Some("bob"), now)), 500);
        // Another address guessing the same account is slowed down as well.
        assert_eq!(
            ms(guard.login_failed(limits, other, Some("bob"), now)),
            1000
        );
        for _ in 0..10 {
            guard.login_failed(limits, ip, None, now);
        }
        assert_eq!(ms(guard.login_failed(limits, ip, None, now)), 8000);
        guard.login_succeeded(ip, "bob");
        assert_eq!(ms(guard.login_failed(limits, ip, None, now)), 250);
    }
}
