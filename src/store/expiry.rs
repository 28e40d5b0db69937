//! The expiry driver: one per shard, sleeping until the shard's next
//! deadline and firing it.
//!
//! Commands already fire whatever is due in their shard before they run, so
//! the driver exists for the quiet case: a token that nobody touches must
//! still expire, and its event must go out, within a millisecond of its
//! deadline. The driver is woken early (through `ShardCell::wake` and
//! `ShardCell::driver`) only when a command arms a deadline earlier than the
//! one it sleeps until.
//!
//! Two kinds, with the same loop:
//! - [`spawn_threads`] (the server): an OS thread per shard, parked until the
//!   deadline's millisecond begins. The kernel wakes it within tens of
//!   microseconds of that.
//! - [`spawn`]: a tokio task per shard, asleep on tokio's timer. That timer
//!   ticks in whole milliseconds and rounds a deadline up, and so does the
//!   poll timeout under it: a task wakes 0–2 ms after the deadline (about
//!   1 ms on average; measured in the commit that brought the threads). It
//!   follows tokio's clock, so the store tests drive it on paused time.
//!
//! The thread drivers also pause while a subscriber's queue is past half
//! its limit ([`wait_for_subscribers`]). A task driver needs no pause: it
//! runs on the runtime's thread, between the writers, and yields to them
//! between batches.
//!
//! Between deadlines a driver also spreads its shard's next big wheel
//! cascade ahead of its time ([`crate::wheel::Wheel::prepare`]), a chunk
//! per lock hold, so that a slot of millions of entries (a pool filled at
//! once) costs many sub-millisecond steps instead of one stall of every
//! command on the shard when its time comes.

use super::fire::LEASE_ENTRY;
use super::pool::SlotIdx;
use super::{Due, PoolId, Store, Working, lock};
use crate::wheel::{PREPARE_MIN, Sweep};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use tokio::task::JoinHandle;

/// Stops the drivers when dropped (held by the server for its lifetime).
pub struct ExpiryDrivers {
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Drop for ExpiryDrivers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            t.thread().unpark();
            // A driver holds no lock while parked and a tick is short.
            let _ = t.join();
        }
    }
}

/// Starts one task driver per shard (tokio's timer; see the module docs).
pub fn spawn(store: &Store) -> ExpiryDrivers {
    let tasks = (0..store.shard_cells().len())
        .map(|idx| {
            let store = store.clone();
            tokio::spawn(async move { drive(store, idx).await })
        })
        .collect();
    ExpiryDrivers { tasks, threads: Vec::new(), stop: Arc::default() }
}

/// Starts one thread driver per shard (see the module docs). Fails only if
/// the OS will not start a thread.
pub fn spawn_threads(store: &Store) -> std::io::Result<ExpiryDrivers> {
    let mut drivers = ExpiryDrivers { tasks: Vec::new(), threads: Vec::new(), stop: Arc::default() };
    for idx in 0..store.shard_cells().len() {
        let (store, stop) = (store.clone(), drivers.stop.clone());
        let t = thread::Builder::new()
            .name(format!("tokend-expiry-{idx}"))
            .spawn(move || drive_thread(store, idx, &stop))?;
        drivers.threads.push(t);
    }
    Ok(drivers)
}

impl Store {
    /// Fires a batch of what is due in shard `idx` and returns when to look
    /// again (epoch ms, `u64::MAX` when nothing is pending; now, when a
    /// backlog is left).
    pub(crate) fn tick(&self, idx: usize) -> u64 {
        self.with_shard_at(idx, Due::Batch, |s, now, _| {
            let next = if s.backlog.is_empty() {
                s.wheel.next_expiration().unwrap_or(u64::MAX).min(s.forget.front().map_or(u64::MAX, |e| e.0))
            } else {
                now
            };
            // Stored under the lock: a command arming an earlier deadline after
            // this point sees it and wakes us (see `Store::with_shard_at`).
            self.shard_cells()[idx].wake_at.store(next, Ordering::Release);
            self.shared.earliest_wake.fetch_min(next, Ordering::AcqRel);
            next
        })
    }

    fn note_subscriber_wait(&self, waited: std::time::Duration) {
        self.shared.subscriber_waits.fetch_add(1, Ordering::Relaxed);
        self.shared.subscriber_wait_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// Spreads one chunk of shard `idx`'s next big cascade. `None`: the
    /// wheel is too small to hold a big slot; `Some(more)`: whether more is
    /// left to spread now.
    pub(crate) fn prepare_cascade(&self, idx: usize) -> Option<bool> {
        let mut g = lock(&self.shard_cells()[idx].state);
        g.big_wheel = g.wheel.len() >= PREPARE_MIN;
        if !g.big_wheel {
            return None;
        }
        Some(g.wheel.prepare(self.clock().now_ms(), PREPARE_CHUNK) > 0)
    }

    /// Sweeps one budget of shard `idx`'s stale wheel entries. `None`: no
    /// sweep is needed; `Some(more)`: whether the sweep goes on.
    ///
    /// A token holds at most two live entries (its lifetime, and its lease
    /// while assigned); everything else in the wheel is stale (a lease given
    /// back early, a token deleted, a deadline moved). A sweep starts when
    /// the wheel holds more than [`SWEEP_FACTOR`] entries per live token (and
    /// [`SWEEP_SLACK`] more), so at least half of what it looks at is stale:
    /// the work is paid for by the inserts that made the garbage, and the
    /// wheel stays within a constant factor of the live tokens whatever the
    /// rates and durations.
    pub(crate) fn sweep_step(&self, idx: usize) -> Option<bool> {
        let mut g = lock(&self.shard_cells()[idx].state);
        let s = &mut *g;
        if s.sweep.is_none() {
            if !s.needs_sweep() {
                return None;
            }
            s.sweep = Some(Sweep::default());
        }
        let super::Shard { wheel, pools, sweep, .. } = s;
        let mut at = sweep.unwrap_or_default();
        let done = wheel.retain_step(&mut at, SWEEP_CHUNK, |when, &(pid, entry)| live_entry(pools, when, pid, entry));
        *sweep = (!done).then_some(at);
        Some(!done)
    }

    /// Pending wheel entries in all shards, those due but queued in a
    /// backlog included (INFO).
    pub fn pending_timers(&self) -> usize {
        self.shard_cells().iter().map(|c| timers_in(&lock(&c.state))).sum()
    }
}

/// A shard's pending wheel entries, those due but queued in its backlog
/// included.
pub(super) fn timers_in(s: &super::Shard) -> usize {
    s.wheel.len() + s.backlog.len()
}

/// Whether a wheel entry is the live one of its token: what `Store::run_due`
/// would act on when it fires (anything else it drops, and so may a sweep).
fn live_entry(pools: &super::names::Pools, when: u64, pid: PoolId, entry: SlotIdx) -> bool {
    let (slot, lease) = (entry & !LEASE_ENTRY, entry & LEASE_ENTRY != 0);
    let Some(p) = pools.get(&pid) else { return false };
    if lease && p.free.contains(slot) {
        return false;
    }
    let Some(rec) = p.get(slot) else { return false };
    if lease { rec.is_assigned() && rec.lease_armed == when as u32 } else { rec.armed == when }
}

/// Wheel entries spread per lock hold while preparing a big cascade (about
/// a quarter of a millisecond).
const PREPARE_CHUNK: usize = 8 * 1024;

/// Wheel entries per live token above which a sweep of stale entries
/// starts: twice the two live entries a token can have, so that at least
/// half of what a sweep looks at is garbage.
pub(crate) const SWEEP_FACTOR: usize = 4;

/// Entries the wheel may hold beyond [`SWEEP_FACTOR`] per live token
/// before a sweep starts (1 MiB of entries): small shards are not swept
/// for a handful of stale entries.
pub(crate) const SWEEP_SLACK: usize = 64 * 1024;

/// Wheel entries a sweep looks at per lock hold: each is a pool lookup and
/// a slot read, so about the cost of a prepare chunk.
const SWEEP_CHUNK: usize = 8 * 1024;

/// While a shard's wheel is big enough to hold a big slot, its driver looks
/// for one to prepare at least this often (ms): a slot filling up does not
/// wake the driver by itself (only the wheel growing big does).
const PREPARE_RECHECK_MS: u64 = 50;

/// One step of a driver between ticks: whether to spread another chunk, or
/// when to look again (`next`, or sooner while there may be a big slot).
enum Prepare {
    More,
    Until(u64),
}

/// Spreads the next big cascade a chunk at a time, then sweeps stale
/// entries a chunk at a time; a deadline that comes due interrupts both.
fn prepare_step(store: &Store, idx: usize, next: u64) -> Prepare {
    let prepared = store.prepare_cascade(idx);
    if prepared == Some(true) {
        // Even with deadlines due: a big slot left unspread when its time
        // comes cascades whole, in one hold of the lock.
        return Prepare::More;
    }
    if store.sweep_step(idx) == Some(true) && store.clock().now_ms() < next {
        return Prepare::More;
    }
    match prepared {
        None => Prepare::Until(next),
        _ => Prepare::Until(next.min(store.clock().now_ms().saturating_add(PREPARE_RECHECK_MS))),
    }
}

/// The longest pause between two chunks of background work.
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// The pause of a thread driver between two batches of a backlog of
/// expiries: enough for a command waiting for the lock to take it (the
/// thread leaves the CPU), short enough that the driver fires for about
/// nine tenths of the time.
const BACKLOG_PAUSE: std::time::Duration = std::time::Duration::from_micros(20);

/// A tick slower than this is logged (debug): it delays every expiry of the
/// shard by as much.
const SLOW_TICK: std::time::Duration = std::time::Duration::from_millis(2);

/// The longest a thread driver waits for subscribers after a tick (see
/// [`wait_for_subscribers`]): the tick itself holds the lock at most
/// 1 ms (`fire::BATCH_TIME`), so while a subscriber lags, expiry goes on
/// at a third of its speed or more.
const SUBSCRIBER_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// How often a waiting driver looks at the subscribers' queues again.
const SUBSCRIBER_RECHECK: std::time::Duration = std::time::Duration::from_micros(100);

/// Waits, at most [`SUBSCRIBER_WAIT`], while a subscriber's queue is past
/// half its limit, if a burst of events took it there since the last look
/// (`PubSub::filling`). Expiry events are made on the
/// driver's thread and written on the runtime's: where the two share a
/// core, a mass expiry can make them faster than they are written, and a
/// subscriber reading as fast as it can was cut off at its limit (one of
/// five runs of the 10M-token bench) for the server's own lag. Waiting
/// gives the core to the writer. The wait is bounded, so a subscriber that
/// is slow itself still fills its queue and is cut off, and slows expiry
/// for everyone else only until then. Expiry stays exact while it waits:
/// a command judges a token by its own deadline.
fn wait_for_subscribers(store: &Store) {
    let pubsub = store.notifier().pubsub();
    if !pubsub.filling() {
        return;
    }
    let start = std::time::Instant::now();
    while start.elapsed() < SUBSCRIBER_WAIT && pubsub.past_half() {
        thread::sleep(SUBSCRIBER_RECHECK);
    }
    store.note_subscriber_wait(start.elapsed());
}

/// Makes this thread's short sleeps as long as asked. Linux lets a sleep
/// run up to the thread's timer slack (50 µs by default) past its end, so
/// the 20 µs [`BACKLOG_PAUSE`] after each 1 ms batch of a backlog took 77
/// µs on average (measured on the bench's VM), and expiry fired for 93% of
/// the time; with a slack of 1 ns the pause took 29 µs (97%).
fn precise_sleeps() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes a number and changes only this
    // thread's timer slack; a failure leaves the default, which is fine.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

fn note_slow_tick(idx: usize, started: std::time::Instant) {
    let took = started.elapsed();
    if took > SLOW_TICK {
        tracing::debug!(shard = idx, ms = took.as_secs_f64() * 1e3, "slow expiry tick");
    }
}

async fn drive(store: Store, idx: usize) {
    loop {
        let started = std::time::Instant::now();
        let mut next = store.tick(idx);
        note_slow_tick(idx, started);
        let cell = &store.shard_cells()[idx];
        loop {
            match prepare_step(&store, idx, next) {
                Prepare::More => tokio::task::yield_now().await,
                Prepare::Until(at) => {
                    next = at;
                    break;
                }
            }
        }
        if next == u64::MAX {
            cell.wake.notified().await;
        } else if next <= store.clock().now_ms() {
            tokio::task::yield_now().await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep_until(store.clock().instant_at(next)) => {}
                _ = cell.wake.notified() => {}
            }
        }
    }
}

fn drive_thread(store: Store, idx: usize, stop: &AtomicBool) {
    precise_sleeps();
    let cell = &store.shard_cells()[idx];
    // Registered before the first tick: a deadline armed from then on
    // unparks this thread, and one armed before is seen by the tick.
    let _ = cell.driver.set(thread::current());
    let working = Working::new(&store.shared.drivers_working);
    while !stop.load(Ordering::Acquire) {
        let started = std::time::Instant::now();
        let mut next = store.tick(idx);
        note_slow_tick(idx, started);
        wait_for_subscribers(&store);
        while !stop.load(Ordering::Acquire) {
            let step = std::time::Instant::now();
            match prepare_step(&store, idx, next) {
                // Background work (a cascade spread ahead of time, a sweep
                // of stale entries) runs at most half the time: after each
                // chunk the lock is left free for as long as the chunk held
                // it. Without the pause the thread takes the lock back at
                // once, and a command waiting for it can starve: a client
                // on the shard of an unlinked 10M-token pool waited 32 ms
                // while the sweep went through its 10M stale entries.
                Prepare::More => thread::sleep(step.elapsed().min(MAX_PAUSE)),
                Prepare::Until(at) => {
                    next = at;
                    break;
                }
            }
        }
        if next == u64::MAX {
            working.idle(thread::park);
        } else if next <= store.clock().now_ms() {
            // A backlog is left (see `Store::run_due`): the lock is free
            // for a moment, so that commands waiting for it go first.
            thread::sleep(BACKLOG_PAUSE);
        } else {
            // The instant the clock turns to `next` (a spurious or early
            // wake-up just ticks again and finds nothing due).
            let at = store.clock().instant_at(next).into_std();
            if let Some(left) = at.checked_duration_since(std::time::Instant::now()) {
                working.idle(|| thread::park_timeout(left));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_driver_counts_as_working_but_while_parked_until_a_deadline() {
        let count = AtomicU64::new(0);
        {
            let a = Working::new(&count);
            let _b = Working::new(&count);
            assert_eq!(count.load(Ordering::Relaxed), 2);
            a.idle(|| assert_eq!(count.load(Ordering::Relaxed), 1, "parked: not counted"));
            assert_eq!(count.load(Ordering::Relaxed), 2, "awake again");
        }
        assert_eq!(count.load(Ordering::Relaxed), 0, "ended");
    }

    #[test]
    fn a_park_that_unwinds_leaves_the_count_balanced() {
        let count = AtomicU64::new(0);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let driver = Working::new(&count);
            driver.idle(|| panic!("park unwinds"));
        }));
        assert!(unwound.is_err());
        assert_eq!(count.load(Ordering::Relaxed), 0, "counted once, un-counted once");
    }
}
