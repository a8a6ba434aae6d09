//! A bounded, forgetful table of recent login failures by address and by
//! account. It never grows past its capacity: expired entries go first,
//! then the stalest one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Addr(IpAddr),
    Account(Box<str>),
}

#[derive(Clone, Copy)]
struct Entry {
    count: u32,
    last: Instant,
}

pub struct Failures {
    entries: HashMap<Key, Entry>,
    capacity: usize,
    memory: Duration,
}

impl Failures {
    pub fn new(capacity: usize, memory: Duration) -> Failures {
        Failures {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            memory,
        }
    }

    /// Records one failure; returns how many `key` has had recently.
    pub fn record(&mut self, key: Key, now: Instant) -> u32 {
        let memory = self.memory;
        let fresh = |entry: &Entry| now.saturating_duration_since(entry.last) < memory;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, entry| fresh(entry));
            if self.entries.len() >= self.capacity {
                let stalest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.last)
                    .map(|(key, _)| key.clone());
                if let Some(stalest) = stalest {
                    self.entries.remove(&stalest);
                }
            }
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            count: 0,
            last: now,
        });
        if !fresh(entry) {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        entry.count
    }

    pub fn forget(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> Key {
        Key::Addr(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn counts_and_forgets_old_failures() {
        let mut table = Failures::new(8, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(table.record(addr(1), t0), 1);
        assert_eq!(table.record(addr(1), t0), 2);
        assert_eq!(table.record(Key::Account("bob".into()), t0), 1);
        assert_eq!(table.record(addr(1), t0 + Duration::from_secs(61)), 1);
        table.forget(&addr(1));
        assert_eq!(table.record(addr(1), t0), 1);
    }

    #[test]
    fn never_exceeds_capacity_and_evicts_the_stalest() {
        let mut table = Failures::new(4, Duration::from_secs(3600));
        let t0 = Instant::now();
        for n in 0..200u8 {
            table.record(addr(n), t0 + Duration::from_secs(n.into()));
            assert!(table.len() <= 4);
        }
        // The newest survive; the oldest were evicted.
        assert_eq!(table.record(addr(199), t0 + Duration::from_secs(300)), 2);
        assert_eq!(table.record(addr(0), t0 + Duration::from_secs(300)), 1);
    }
}
