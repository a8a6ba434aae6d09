//! A per-account budget of failed logins per minute, counted across every address: what
//! the per-address delays cannot see when guesses come from many hosts. Past the budget
//! an account's logins fail at once, without a password check, until its minute is over.
//! Bounded like the failure table; it never touches sessions that are already open.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The window the budget counts in.
const WINDOW: Duration = Duration::from_secs(60);

struct Window {
    start: Instant,
    failures: u32,
}

pub struct Attempts {
    accounts: HashMap<Box<str>, Window>,
    capacity: usize,
}

/// What recording a failure did to the account.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Still within the budget.
    Within,
    /// This failure used the budget up: worth one log line.
    Exhausted,
    /// The budget was already used up.
    Over,
}

impl Attempts {
    pub fn new(capacity: usize) -> Attempts {
        Attempts {
            accounts: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `user` has used up `budget` failures in its current window.
    pub fn exhausted(&self, user: &str, budget: u32, now: Instant) -> bool {
        self.accounts.get(user).is_some_and(|window| {
            now.saturating_duration_since(window.start) < WINDOW && window.failures >= budget
        })
    }

    /// Counts one failed login for `user`.
    pub fn record(&mut self, user: &str, budget: u32, now: Instant) -> Recorded {
        let live = |window: &Window| now.saturating_duration_since(window.start) < WINDOW;
        if !self.accounts.contains_key(user) && self.accounts.len() >= self.capacity {
            self.accounts.retain(|_, window| live(window));
            if self.accounts.len() >= self.capacity {
                let oldest = (self.accounts.iter())
                    .min_by_key(|(_, window)| window.start)
                    .map(|(user, _)| user.clone());
                if let Some(oldest) = oldest {
                    self.accounts.remove(&oldest);
                }
            }
        }
        let window = self.accounts.entry(user.into()).or_insert(Window {
            start: now,
            failures: 0,
        });
        if !live(window) {
            *window = Window {
                start: now,
                failures: 0,
            };
        }
        if window.failures >= budget {
            return Recorded::Over;
        }
        window.failures += 1;
        if window.failures == budget {
            Recorded::Exhausted
        } else {
            Recorded::Within
        }
    }

    /// A successful login ends the account's episode.
    pub fn forget(&mut self, user: &str) {
        self.accounts.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_per_account_per_window() {
        let mut table = Attempts::new(8);
        let t0 = Instant::now();
        assert_eq!(table.record("bob", 3, t0), Recorded::Within);
        assert_eq!(table.record("bob", 3, t0), Recorded::Within);
        assert!(!table.exhausted("bob", 3, t0));
        assert_eq!(table.record("bob", 3, t0), Recorded::Exhausted);
        assert!(table.exhausted("bob", 3, t0));
        assert_eq!(table.record("bob", 3, t0), Recorded::Over);
        assert!(!table.exhausted("alice", 3, t0));
        // Attempts refused in the episode do not make it longer.
        assert!(!table.exhausted("bob", 3, t0 + WINDOW));
        assert_eq!(table.record("bob", 3, t0 + WINDOW), Recorded::Within);
        table.forget("bob");
        assert!(!table.exhausted("bob", 1, t0 + WINDOW));
    }

    #[test]
    fn never_exceeds_capacity() {
        let mut table = Attempts::new(4);
        let t0 = Instant::now();
        for n in 0..100u32 {
            table.record(
                &format!("user{n}"),
                10,
                t0 + Duration::from_millis(n.into()),
            );
            assert!(table.accounts.len() <= 4);
        }
    }
}
