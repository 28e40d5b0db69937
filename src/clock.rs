//! The server's time source.
//!
//! Deadlines are absolute epoch milliseconds so that they can be persisted and
//! survive a restart. The clock is anchored once to the wall clock and then
//! advances with `tokio::time::Instant`, which has two consequences we want:
//! it never goes backwards (a wall-clock step does not fire or delay every
//! timer at once), and under tokio's paused time (`#[tokio::test(start_paused
//! = true)]`, `tokio::time::advance`) the whole server — store, expiry driver
//! and sleeps — runs on a clock the test controls.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A monotonic millisecond clock anchored to the Unix epoch.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Epoch milliseconds at `base`.
    base_ms: u64,
    /// The instant that corresponds to `base_ms`.
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock anchored to the current wall-clock time.
    pub fn new() -> Clock {
        let base_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        Clock::starting_at(base_ms)
    }

    /// A clock that reads `base_ms` now (tests use a round number).
    pub fn starting_at(base_ms: u64) -> Clock {
        Clock { base_ms, base: Instant::now() }
    }

    /// Epoch milliseconds now.
    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    /// The instant at which `now_ms()` will read `ms` (for `sleep_until`).
    pub fn instant_at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms.saturating_sub(self.base_ms))
    }
}

/// Sleeps until `deadline`, or forever when there is none (a `select!` arm
/// for an optional timeout, as BLOCK 0 needs).
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
