//! The server's time source.
//!
//! Deadlines are absolute epoch milliseconds so that they can be persisted and
//! survive a restart. The clock is anchored once to the wall clock and then
//! advances with `tokio::time::Instant`, which has two consequences we want:
//! it never goes backwards (a wall-clock step does not fire or delay every
//! timer at once), and under tokio's paused time (`#[tokio::test(start_paused
//! = true)]`, `tokio::time::advance`) the whole server — store, expiry driver
//! and sleeps — runs on a clock the test controls.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A step added to the wall clock as this process reads it (tests: an NTP
/// step or a suspend, without touching the machine's clock).
static WALL_STEP_MS: AtomicI64 = AtomicI64::new(0);

/// The wall clock now, as time since the epoch.
fn wall() -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let step = WALL_STEP_MS.load(Ordering::Relaxed);
    if step >= 0 {
        now + Duration::from_millis(step as u64)
    } else {
        now.saturating_sub(Duration::from_millis(step.unsigned_abs()))
    }
}

/// The wall clock now, epoch milliseconds.
pub fn wall_ms() -> u64 {
    wall().as_millis() as u64
}

/// Steps this process's view of the wall clock by `ms` (tests only: what an
/// NTP correction or a suspend does to a running server).
pub fn step_wall_clock_for_tests(ms: i64) {
    WALL_STEP_MS.fetch_add(ms, Ordering::Relaxed);
}

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
    /// A clock anchored to the current wall-clock time, on its millisecond
    /// boundaries: `now_ms()` turns to `m` when the wall clock does, not up
    /// to a millisecond later (which would make every deadline fire that
    /// much late as seen by anyone reading the wall clock).
    pub fn new() -> Clock {
        // The wall clock read between two instants: `now` is taken as the
        // moment halfway, within a microsecond or so of the reading.
        let before = Instant::now();
        let epoch = wall();
        let now = before + before.elapsed() / 2;
        let into_ms = Duration::from_nanos(u64::from(epoch.subsec_nanos() % 1_000_000));
        match now.checked_sub(into_ms) {
            Some(base) => Clock { base_ms: epoch.as_millis() as u64, base },
            None => Clock { base_ms: epoch.as_millis() as u64, base: now },
        }
    }

    /// A clock that reads `base_ms` now (tests use a round number).
    pub fn starting_at(base_ms: u64) -> Clock {
        Clock { base_ms, base: Instant::now() }
    }

    /// Epoch milliseconds now.
    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    /// Epoch microseconds now (for measuring how late a deadline fired).
    pub fn now_us(&self) -> u64 {
        self.base_ms * 1000 + self.base.elapsed().as_micros() as u64
    }

    /// How far the wall clock is ahead of this clock now, ms (0 right after
    /// [`Clock::new`]; it moves when the wall clock is stepped).
    pub fn wall_skew_ms(&self) -> i64 {
        wall_ms() as i64 - self.now_ms() as i64
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

#[cfg(test)]
mod tests {
    use super::*;

    fn wall_us() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
    }

    #[tokio::test]
    async fn turns_each_millisecond_with_the_wall_clock() {
        // For each of 20 fresh clocks: where in the wall clock's millisecond
        // does it turn to the next? Anchored on the boundary, within a few
        // µs of it; anchored on a truncated reading, anywhere (it lags by
        // the fraction it dropped, here 200 µs or more). A preempted sample
        // may land anywhere, so 15 of the 20 must be within 100 µs.
        let mut near = 0;
        for i in 0..20 {
            // Made at 200..770 µs into a wall-clock millisecond.
            let at = 200 + 30 * i;
            while wall_us() % 1000 / 10 != at / 10 {}
            let clock = Clock::new();
            let m0 = clock.now_ms();
            let turned_at = loop {
                let w = wall_us();
                if clock.now_ms() != m0 {
                    break w;
                }
            };
            let into = turned_at % 1000;
            if !(100..900).contains(&into) {
                near += 1;
            }
        }
        assert!(near >= 15, "{near} of 20 clocks turned within 100 µs of the wall clock's millisecond");
    }
}
