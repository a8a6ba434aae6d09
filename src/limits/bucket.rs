//! Token buckets: the arithmetic of rate limiting and nothing else. A bucket
//! may go into debt so a read that has already happened is always charged;
//! the debt says how long the reader must pause.

use std::time::{Duration, Instant};

/// `tokens` refill at `rate` per second up to `burst`.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f32,
    updated: Instant,
}

/// A bucket's settings (from `[rate]`).
#[derive(Clone, Copy, Debug)]
pub struct Refill {
    pub rate: f32,
    pub burst: f32,
}

impl Bucket {
    pub fn full(refill: Refill, now: Instant) -> Bucket {
        Bucket {
            tokens: refill.burst,
            updated: now,
        }
    }

    /// Takes `amount` tokens (going into debt if needed) and returns how long
    /// until the debt is paid back: zero while the bucket is not in debt.
    pub fn take(&mut self, refill: Refill, amount: f32, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f32();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * refill.rate).min(refill.burst) - amount;
        if self.tokens >= 0.0 || refill.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f32(-self.tokens / refill.rate)
        }
    }
}

/// The two buckets every sender has: stanzas and bytes.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    stanzas: Bucket,
    bytes: Bucket,
}

impl Pair {
    pub fn full(limits: &Limits, now: Instant) -> Pair {
        Pair {
            stanzas: Bucket::full(limits.stanzas, now),
            bytes: Bucket::full(limits.bytes, now),
        }
    }

    /// Charges one read; the longer of the two waits.
    pub fn take(&mut self, limits: &Limits, stanzas: u32, bytes: usize, now: Instant) -> Duration {
        let a = self.stanzas.take(limits.stanzas, stanzas as f32, now);
        let b = self.bytes.take(limits.bytes, bytes as f32, now);
        a.max(b)
    }
}

/// Both refill settings, computed once from the config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub stanzas: Refill,
    pub bytes: Refill,
}

impl Limits {
    pub fn from_config(rate: &crate::config::Rate) -> Limits {
        Limits {
            stanzas: Refill {
                rate: rate.stanzas_per_sec as f32,
                burst: rate.stanza_burst as f32,
            },
            bytes: Refill {
                rate: rate.bytes_per_sec as f32,
                burst: rate.byte_burst as f32,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Refill = Refill {
        rate: 10.0,
        burst: 20.0,
    };

    #[test]
    fn burst_is_free_then_debt_means_waiting() {
        let t0 = Instant::now();
        let mut bucket = Bucket::full(TEN, t0);
        assert_eq!(bucket.take(TEN, 20.0, t0), Duration::ZERO);
        // 5 tokens of debt at 10/s: half a second.
        let wait = bucket.take(TEN, 5.0, t0);
        assert!((wait.as_secs_f32() - 0.5).abs() < 0.01, "{wait:?}");
        // After paying it back the bucket is at zero, not in debt.
        assert_eq!(
            bucket.take(TEN, 0.0, t0 + Duration::from_millis(500)),
            Duration::ZERO
        );
    }

    #[test]
    fn refill_is_capped_at_burst() {
        let t0 = Instant::now();
        let mut bucket = Bucket::full(TEN, t0);
        bucket.take(TEN, 20.0, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(bucket.take(TEN, 20.0, later), Duration::ZERO);
        assert!(bucket.take(TEN, 1.0, later) > Duration::ZERO);
    }

    #[test]
    fn pair_waits_for_the_slower_bucket() {
        let t0 = Instant::now();
        let limits = Limits {
            stanzas: TEN,
            bytes: Refill {
                rate: 100.0,
                burst: 100.0,
            },
        };
        let mut pair = Pair::full(&limits, t0);
        let wait = pair.take(&limits, 1, 300, t0);
        assert!((wait.as_secs_f32() - 2.0).abs() < 0.01, "{wait:?}");
    }
}
