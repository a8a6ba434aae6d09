//! A stream's stanza allowance: a peer (another server, a component) is kept to an average
//! rate with bursts by reading it no faster, so its TCP window fills and nobody else waits.

use smol::Timer;
use std::time::{Duration, Instant};

/// Stanzas a peer may still send at once, refilled at the rate it is allowed.
pub struct Pacer {
    allowance: f64,
    filled: Instant,
}

impl Pacer {
    /// A full allowance of `burst` stanzas.
    pub fn new(burst: u32) -> Pacer {
        Pacer {
            allowance: burst.into(),
            filled: Instant::now(),
        }
    }

    /// Takes one stanza's allowance, first waiting for it at `rate` stanzas a second (at
    /// most `burst` saved up). True when it had to wait.
    pub async fn take(&mut self, rate: u32, burst: u32) -> bool {
        let rate = f64::from(rate.max(1));
        let now = Instant::now();
        let refill = now.duration_since(self.filled).as_secs_f64() * rate;
        self.allowance = (self.allowance + refill).min(burst.into());
        self.filled = now;
        if self.allowance < 1.0 {
            let wait = (1.0 - self.allowance) / rate;
            Timer::after(Duration::from_secs_f64(wait)).await;
            self.allowance = 1.0;
            self.filled = Instant::now();
            self.allowance -= 1.0;
            return true;
        }
        self.allowance -= 1.0;
        false
    }
}
