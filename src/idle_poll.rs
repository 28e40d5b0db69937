//! Polling for new requests a little while before the runtime's thread goes
//! to sleep.
//!
//! A thread asleep in `epoll_wait` must be woken by whoever sends to it. On
//! a virtual machine that wake-up is an inter-processor interrupt, a VM
//! exit inside the client's `send`, and tens of microseconds before the
//! woken vCPU runs. KVM hosts poll for 200 µs before halting a vCPU for this
//! reason (`halt_poll_ns`), and guests can do the same (`cpuidle-haltpoll`),
//! but neither is always on. Measured on a 2-core VM with guest polling off:
//! one connection's ACQUIRE+UNBLOCK cycle took 68 µs at the median with the
//! thread sleeping between requests and 22 µs with it polling; under
//! redis-benchmark, the client spent 8.9% of its time waking the server
//! against 4.7% when the server was Redis (whose thread blocked in
//! `epoll_wait` a third as often for the same requests).
//!
//! With `--idle-poll-us N`, after a request the thread keeps polling its
//! sockets (without blocking) for a window of at most N µs before it
//! sleeps. The window adapts the way cpuidle-haltpoll's does: a quiet spell
//! that ended soon after the thread went to sleep (within N) doubles it;
//! one longer than N halves it. A client that sends a request at least
//! every N µs keeps the core busy; a trickle of requests, or none, costs
//! nothing.
//!
//! It is off by default. Polling spends CPU time that a virtual machine's
//! host may take back: on the same VM, with polling on, a client on the
//! other vCPU was now and then not run for 7.2 ms (steal time 50 ms in 13 s,
//! against 10 ms without), which a latency-bound deployment must not get by
//! default. Where cores are dedicated, polling is the cheaper way to wait.
//!
//! Only the single-threaded runtime polls (one per process pinned to one
//! core, or `--threads 1`): with several workers, the one polling would
//! take the wake-ups of the others.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where a window of 0 starts when it grows (cpuidle-haltpoll's
/// `guest_halt_poll_grow_start`, 50 µs, scaled to the smaller limit).
const GROW_START: Duration = Duration::from_micros(25);

/// The default limit, µs (`--idle-poll-us`): off.
pub const DEFAULT_LIMIT_US: u64 = 0;

/// The largest limit `--idle-poll-us` and `CONFIG SET` take (1 s).
pub const MAX_LIMIT_US: u64 = 1_000_000;

/// The poller's state, shared with the connections that report activity.
#[derive(Debug)]
pub struct IdlePoll {
    /// The longest window, µs (0: never poll).
    limit_us: AtomicU64,
    /// A poller runs (only on a single-threaded runtime).
    running: AtomicBool,
    /// Bumped once per batch of requests handled.
    activity: AtomicU64,
    /// The poller sleeps until the next activity (not while off: then only
    /// a new limit wakes it).
    asleep: AtomicBool,
    wake: Notify,
    /// Quiet spells that ended while polling.
    hits: AtomicU64,
    /// Quiet spells the poller slept through.
    sleeps: AtomicU64,
    /// The current window, µs.
    window_us: AtomicU64,
}

/// What INFO shows of the poller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub hits: u64,
    pub sleeps: u64,
    pub window_us: u64,
}

impl IdlePoll {
    pub fn new(limit_us: u64) -> IdlePoll {
        IdlePoll {
            limit_us: AtomicU64::new(limit_us),
            running: AtomicBool::new(false),
            activity: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            wake: Notify::new(),
            hits: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
            window_us: AtomicU64::new(0),
        }
    }

    /// Marks a poller as running from now on: called before it is spawned,
    /// so that a request served before its first turn sees it.
    pub fn starting(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    /// A poller runs: the runtime is single-threaded.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    pub fn limit_us(&self) -> u64 {
        self.limit_us.load(Ordering::Relaxed)
    }

    /// `CONFIG SET idle-poll-us`: takes effect at the next quiet spell.
    pub fn set_limit_us(&self, us: u64) {
        self.limit_us.store(us, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub fn counts(&self) -> Counts {
        Counts {
            hits: self.hits.load(Ordering::Relaxed),
            sleeps: self.sleeps.load(Ordering::Relaxed),
            window_us: self.window_us.load(Ordering::Relaxed),
        }
    }

    /// Something was served: the quiet spell (if any) is over. Costs two
    /// loads of a line nobody writes unless a poller runs with a limit: with
    /// several worker threads, a counter bumped by all of them would bounce
    /// between their cores.
    #[inline]
    pub fn touch(&self) {
        if !self.running.load(Ordering::Relaxed) || self.limit_us.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.activity.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) && self.asleep.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Polls while the runtime's other tasks are idle, until `stop`. Each
    /// turn yields to the runtime, which then looks at its sockets without
    /// blocking, and to the other threads of this core (the expiry and
    /// stock threads): polling only fills time nobody else wants.
    pub async fn run(&self, stop: &CancellationToken) {
        self.starting();
        self.poll(stop).await;
        self.running.store(false, Ordering::Relaxed);
    }

    async fn poll(&self, stop: &CancellationToken) {
        let mut window = Duration::ZERO;
        let mut seen = self.activity.load(Ordering::SeqCst);
        let mut quiet_since = Instant::now();
        loop {
            if self.limit_us() == 0 {
                window = Duration::ZERO;
                self.window_us.store(0, Ordering::Relaxed);
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.cancelled() => return,
                }
                seen = self.activity.load(Ordering::SeqCst);
                quiet_since = Instant::now();
                continue;
            }
            let now = Instant::now();
            let a = self.activity.load(Ordering::SeqCst);
            if a != seen {
                if now.duration_since(quiet_since) > POLL_TURN {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                }
                seen = a;
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= window {
                self.asleep.store(true, Ordering::SeqCst);
                if self.activity.load(Ordering::SeqCst) == seen {
                    self.sleeps.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = stop.cancelled() => return,
                    }
                }
                self.asleep.store(false, Ordering::SeqCst);
                let woke = Instant::now();
                let limit = Duration::from_micros(self.limit_us());
                window = adjust(window, woke.duration_since(quiet_since), limit);
                self.window_us.store(window.as_micros() as u64, Ordering::Relaxed);
                seen = self.activity.load(Ordering::SeqCst);
                quiet_since = woke;
                continue;
            } else {
                std::thread::yield_now();
            }
            if stop.is_cancelled() {
                return;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// A quiet spell shorter than this is the gap between two turns of a busy
/// runtime, not one that polling bridged.
const POLL_TURN: Duration = Duration::from_micros(2);

/// The next window after a quiet spell of `quiet` that the thread slept
/// through (cpuidle-haltpoll's `adjust_poll_limit`, grow and shrink by 2).
fn adjust(window: Duration, quiet: Duration, limit: Duration) -> Duration {
    let next = if quiet <= window {
        window
    } else if quiet <= limit {
        (window * 2).max(GROW_START)
    } else {
        window / 2
    };
    next.min(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LIMIT: Duration = Duration::from_micros(100);
    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// A poller with this limit, running on the test's runtime.
    fn start(limit_us: u64) -> (Arc<IdlePoll>, CancellationToken, tokio::task::JoinHandle<()>) {
        let p = Arc::new(IdlePoll::new(limit_us));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (p, stop) = (p.clone(), stop.clone());
            async move { p.run(&stop).await }
        });
        (p, stop, task)
    }

    #[test]
    fn the_window_grows_for_short_spells_and_shrinks_for_long_ones() {
        // A spell the limit would have bridged: grow from the start value.
        assert_eq!(adjust(Duration::ZERO, us(60), LIMIT), GROW_START);
        assert_eq!(adjust(us(25), us(60), LIMIT), us(50));
        assert_eq!(adjust(us(50), us(60), LIMIT), us(100));
        assert_eq!(adjust(us(100), us(99), LIMIT), us(100));
        // Never past the limit.
        assert_eq!(adjust(us(80), us(90), LIMIT), LIMIT);
        // Longer than the limit: polling would not have helped.
        assert_eq!(adjust(us(100), us(5000), LIMIT), us(50));
        assert_eq!(adjust(us(50), us(5000), LIMIT), us(25));
        assert_eq!(adjust(Duration::ZERO, us(5000), LIMIT), Duration::ZERO);
        // A lowered limit (CONFIG SET) takes effect at once; 0 turns it off.
        assert_eq!(adjust(us(100), us(10), us(40)), us(40));
        assert_eq!(adjust(us(100), us(10), Duration::ZERO), Duration::ZERO);
        assert_eq!(adjust(us(25), us(30), Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn off_it_sleeps_through_touches_until_a_limit_is_set() {
        let (p, stop, task) = start(0);
        for _ in 0..100 {
            p.touch();
            tokio::task::yield_now().await;
        }
        assert_eq!(p.counts(), Counts::default(), "off: no polling, no sleeps counted");
        p.set_limit_us(MAX_LIMIT_US);
        while p.counts().sleeps == 0 {
            tokio::task::yield_now().await;
        }
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_touch_wakes_the_sleeping_poller_and_stop_ends_it() {
        // A limit no pause of this test's machine reaches.
        let (p, stop, task) = start(MAX_LIMIT_US);
        // Let it reach its first sleep (window 0).
        while p.counts().sleeps == 0 {
            tokio::task::yield_now().await;
        }
        p.touch();
        while p.counts().sleeps < 2 {
            tokio::task::yield_now().await;
        }
        // Woken right after it slept: the spell was short, the window grew.
        assert_eq!(p.counts().window_us, GROW_START.as_micros() as u64);
        stop.cancel();
        task.await.unwrap();
    }
}
