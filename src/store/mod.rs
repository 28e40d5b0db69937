//! The token store: sharded, every command atomic.
//!
//! Pools are spread over shards by a hash of their name; each shard is one
//! `std::sync::Mutex` around its pools and its own timing wheel. A command
//! touches exactly one pool, so it takes exactly one lock, and commands on
//! pools in different shards never contend. The lock is a std mutex, not
//! tokio's, because it is never held across an `.await`: every critical
//! section is a few hash-map operations. A transaction ([`Txn`]) takes the
//! locks of every shard it touches, in shard order, so two transactions
//! never wait for each other in a circle.
//!
//! Exactness: every command first brings its shard's expiries up to "now"
//! (`run_due`), so a token is never served, kept alive or reported after its
//! deadline even if the background expiry driver is a few milliseconds behind.
//! The driver ([`expiry`]) only makes sure expiries (and their events) happen
//! on time when no command arrives.
//!
//! Events and persistence records are gathered while the lock is held (so
//! their order is the order of the changes) and published after it is
//! released.
//!
//! The rooms: [`types`] (what goes in and out), `ops` (the token
//! operations), `fire` (deadlines firing), `waiting` (blocked ACQUIREs),
//! `restore` (loading from the backing store), `txn` (several operations
//! as one), `census` (counts and invariants); below them the engines:
//! `pool`, `freeset`, `slab`, `queue` and [`crate::wheel`].

mod census;
pub mod expiry;
mod fire;
mod freeset;
mod huge;
mod keys;
mod names;
mod ops;
mod pool;
mod queue;
mod reclaim;
mod restore;
mod rewrite;
mod slab;
mod txn;
mod types;
mod waiting;

pub use keys::PoolUsage;
pub use ops::making_stock;
pub use pool::Record;
pub use reclaim::lazyfree_counts;
pub use txn::{NotLocked, Txn};
pub use types::{Change, ExpiryTotals, Journal, PoolStats, Restored, StoreConfig, TokenError, TokenInfo, Totals};
pub use waiting::{Acquired, Handed, Waiting};

use crate::clock::Clock;
use crate::notify::{EventKind, Events, Notifier};
use crate::token::TokenId;
use crate::wheel::Wheel;
use bytes::Bytes;
use pool::{Pool, SlotIdx};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Server-wide counters' changes made by firing deadlines, added to the
/// counters once per batch (`Store::flush_tally`) instead of once per
/// token: a locked instruction per counter and per token was an eighth of
/// a mass expiry (it waits for the token's slot writes, cache misses, to
/// drain). Always flushed before the shard's lock is released.
#[derive(Default)]
struct Tally {
    expired: u64,
    lease_expired: u64,
    /// Remembered expired tokens added, less those forgotten.
    remembered: isize,
}

/// One shard: a set of pools and their timing wheel.
struct Shard {
    names: names::Names,
    /// Boxed: a table entry is 8 bytes, not a whole pool, which keeps the
    /// table (and its growth) small when there are millions of pools.
    pools: names::Pools,
    /// Pending deadlines: (pool id, slot with [`fire::LEASE_ENTRY`] set for a
    /// lease). 16 bytes an entry. A token has a lifetime entry always and a
    /// lease entry while assigned, both reset lazily (see `run_due`). A slot
    /// may be reused by another token (and a pool id by another pool, see
    /// [`Shard::new_pool_id`]) before an old entry fires; the checks then
    /// fail, or at worst the new token is settled early, which is harmless
    /// (settling only applies what is actually due).
    wheel: Wheel<(PoolId, SlotIdx)>,
    /// Wheel entries that came due but were not fired yet (a batch ran out,
    /// see `Store::run_due`), in the order they fired from the wheel.
    backlog: queue::RunQueue<(u64, (PoolId, SlotIdx))>,
    /// Entries in `backlog` per pool id (a pool with none left is exact).
    /// Indexed by id, which is dense; empty while the backlog is.
    behind: Vec<u32>,
    /// Whether this shard is counted in `Shared::backlogged`.
    counted: bool,
    /// Remembered expired tokens in the order they are to be forgotten:
    /// (when, pool id, the tombstone's slot or [`fire::NOT_TOMB`], token).
    /// 32 bytes an entry, as without the slot (a `u128` is aligned to 16).
    forget: queue::RunQueue<(u64, PoolId, SlotIdx, TokenId)>,
    remembered: usize,
    /// What firing deadlines changed in the server-wide counters and has
    /// not yet added to them (see [`Tally`]).
    tally: Tally,
    /// Tokens and random picks come from a CSPRNG: tokens may be secrets.
    rng: StdRng,
    /// Scratch space for fired wheel entries (kept to avoid reallocating).
    fired: Vec<(u64, (PoolId, SlotIdx))>,
    /// Pools someone WATCHes: name → (watchers, version). Empty unless a
    /// client uses WATCH, so a command only pays an `is_empty` check.
    watched: HashMap<Bytes, (u32, u64)>,
    /// Live tokens in this shard (what the wheel's size is judged against).
    live: usize,
    /// Where the sweep of stale wheel entries stands, while one runs (see
    /// [`expiry`]).
    sweep: Option<crate::wheel::Sweep>,
    /// Whether the driver knows the wheel is big enough to hold a big slot
    /// and so looks for one to spread ahead of its time every 50 ms (see
    /// `Store::release`).
    big_wheel: bool,
    /// How late (µs) lifetimes and leases ended when their entries fired.
    lateness: crate::hist::Hist,
    /// While `run_due` fires entries: the instant (epoch µs) it does so; 0
    /// otherwise (recovery settles what came due while the server was down,
    /// which says nothing about the expiry engine).
    fire_us: u64,
    /// The worst lateness (µs) in the current `run_due`.
    worst_late_us: u64,
}

/// A pool's number within its shard, as wheel entries name it: 32 bits, so
/// that an entry is 16 bytes. Ids are unique among the shard's live pools
/// (see [`Shard::new_pool_id`]).
type PoolId = u32;

pub(crate) struct ShardCell {
    state: Mutex<Shard>,
    /// Wakes this shard's expiry driver when an earlier deadline is armed
    /// (a task driver waits on it; a thread driver is unparked).
    pub(crate) wake: Notify,
    /// The thread driving this shard's expiries, when it is one.
    pub(crate) driver: std::sync::OnceLock<std::thread::Thread>,
    /// The time the driver sleeps until (epoch ms; u64::MAX when idle).
    pub(crate) wake_at: AtomicU64,
}

struct Shared {
    shards: Box<[ShardCell]>,
    config: StoreConfig,
    clock: Clock,
    notifier: Arc<Notifier>,
    /// Set once, before any client is served (a lock-free read per command).
    journal: std::sync::OnceLock<Arc<dyn Journal>>,
    live_tokens: AtomicU64,
    /// Shards with a backlog of due expiries (see `Store::run_due`): while
    /// 0, a request need not look for its pools' shards' backlogs.
    backlogged: AtomicU64,
    /// The earliest of the shards' `wake_at`, or earlier (see
    /// [`Store::maybe_due`]): lowered with them, raised lazily by a reader
    /// that finds it past and no shard due.
    earliest_wake: AtomicU64,
    /// Remembered expired tokens in the whole server (bounded by
    /// `max_expired_remembered`).
    remembered_total: std::sync::atomic::AtomicUsize,
    /// Expiries so far: lifetimes ended, leases ended (INFO stats).
    expired_total: AtomicU64,
    lease_expired_total: AtomicU64,
    /// Times an expiry driver waited for subscribers to catch up, and µs
    /// waited in all (INFO expiry; see `expiry::wait_for_subscribers`).
    subscriber_waits: AtomicU64,
    subscriber_wait_us: AtomicU64,
    /// The expiry totals at the last `CONFIG RESETSTAT`: INFO shows what
    /// came since, while the totals (Prometheus counters) only grow.
    expiry_base: Mutex<ExpiryTotals>,
    /// Thread drivers awake (firing, or doing background work), not parked
    /// until a deadline (see `Store::expiry_working`).
    drivers_working: AtomicU64,
    next_waiter_id: AtomicU64,
    /// Versions handed to watched pools when they change (WATCH).
    next_version: AtomicU64,
    hasher: BuildHasherDefault<DefaultHasher>,
    /// Redis's latency monitor (expiries that fired late; the command
    /// core adds its own events).
    latency: crate::latency::LatencyMonitor,
    /// Masks the slot number in new pools' tokens ([`crate::token::with_slot`]):
    /// random per server, or kept in the backing Redis so that recovered
    /// tokens still name their slots.
    slot_key: AtomicU64,
}

/// Counts a thread in a gauge while it works (see
/// [`Store::threads_working`]; the expiry drivers' gauge is the store's,
/// the stock makers' the process's): from its start to its drop, but for
/// [`Working::idle`]. An expiry driver's short pauses (between the batches
/// of a backlog, between chunks of background work, while subscribers
/// catch up) leave it counted: it wants the core back within
/// microseconds.
struct Working<'a>(&'a AtomicU64);

impl<'a> Working<'a> {
    fn new(count: &'a AtomicU64) -> Working<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Working(count)
    }

    /// Un-counts the thread while `park` runs. It is counted again on the
    /// way out even if `park` unwinds, so that the guard's drop then
    /// takes off the one count it holds, not a second.
    fn idle(&self, park: impl FnOnce()) {
        struct Recount<'a>(&'a AtomicU64);
        impl Drop for Recount<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.0.fetch_sub(1, Ordering::Relaxed);
        let _recount = Recount(self.0);
        park();
    }
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The store handle: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// What one command did besides its reply: events and changes, gathered under
/// the lock and handed out after it.
struct Effects<'a> {
    notifier: &'a Notifier,
    events: Events,
    changes: Option<Vec<Change>>,
    /// Deadline armed that is earlier than the driver's wake-up time.
    earliest_armed: u64,
    /// The shard has watched pools: note the pools that change.
    watching: bool,
    touched: Vec<Bytes>,
    /// Big wheel storage to free once the lock is released.
    garbage: Vec<Vec<(u64, (PoolId, SlotIdx))>>,
    /// Blocked clients handed a token: told the journal unit of its
    /// assignment when the changes are appended (see [`Waiting::assigned_in`]).
    handed: Vec<Arc<AtomicU64>>,
}

/// Big wheel storage goes to the free thread: an Effects is dropped after
/// its lock is released, on a connection's thread as often as a driver's.
impl Drop for Effects<'_> {
    fn drop(&mut self) {
        if reclaim::entries_bytes(&self.garbage) > reclaim::INLINE_MAX_BYTES {
            reclaim::later(reclaim::Garbage::Entries(std::mem::take(&mut self.garbage)));
        }
    }
}

impl<'a> Effects<'a> {
    fn new(notifier: &'a Notifier, journal: bool) -> Effects<'a> {
        Effects {
            notifier,
            events: Events::default(),
            changes: journal.then(Vec::new),
            earliest_armed: u64::MAX,
            watching: false,
            touched: Vec::new(),
            garbage: Vec::new(),
            handed: Vec::new(),
        }
    }

    fn event(&mut self, kind: EventKind, pool: &[u8], token: TokenId) {
        if self.notifier.wants(kind) {
            self.events.push(kind, pool, token);
        }
    }

    /// True if [`Effects::change`] keeps changes (to journal them, or for
    /// WATCH): a command that makes many can skip the loop otherwise.
    fn keeps_changes(&self) -> bool {
        self.changes.is_some() || self.watching
    }

    /// Records a change of state. Every change goes through here, which is
    /// what lets WATCH see every change to a pool.
    fn change(&mut self, f: impl FnOnce() -> Change) {
        if self.changes.is_none() && !self.watching {
            return;
        }
        let c = f();
        if self.watching {
            self.touched.push(c.pool().clone());
        }
        if let Some(v) = &mut self.changes {
            v.push(c);
        }
    }
}

thread_local! {
    /// The sequence number of the journal unit this thread appended last
    /// (see [`Store::take_appended`]).
    static APPENDED: Cell<Option<u64>> = const { Cell::new(None) };
}

impl Shard {
    fn new(now: u64) -> Shard {
        Shard {
            names: Default::default(),
            pools: Default::default(),
            wheel: Wheel::new(now),
            backlog: Default::default(),
            behind: Vec::new(),
            counted: false,
            forget: Default::default(),
            remembered: 0,
            tally: Tally::default(),
            rng: StdRng::from_rng(&mut rand::rng()),
            fired: Vec::new(),
            watched: HashMap::new(),
            live: 0,
            sweep: None,
            big_wheel: false,
            lateness: crate::hist::Hist::default(),
            fire_us: 0,
            worst_late_us: 0,
        }
    }

    /// The id of the pool named `name`.
    fn pid(&self, name: &[u8]) -> Option<PoolId> {
        self.names.get(&self.pools, name)
    }

    /// The pool named `name`.
    fn pool(&self, name: &[u8]) -> Option<&Pool> {
        self.pid(name).and_then(|pid| self.pools.get(&pid))
    }

    /// An id no live pool of this shard has: a retired one if any, so that
    /// the table stays as long as the most pools the shard held at once.
    /// Wheel entries and forget-queue entries that still name a retired id
    /// are checked against the token they find (its armed deadline, its
    /// remembered expiry) and do nothing to another pool's tokens (see
    /// [`Shard::wheel`]).
    fn new_pool_id(&mut self) -> PoolId {
        self.pools.new_id()
    }

    /// Drops a pool that nothing refers to any more (no tokens, no
    /// remembered expired tokens, no waiters): it no longer exists, here or
    /// in the backing store's list of pools.
    fn drop_if_empty(s: &mut Shard, pid: PoolId, fx: &mut Effects) {
        if s.pools.get(&pid).is_some_and(|p| p.is_empty())
            && let Some(p) = s.unlink_pool(pid)
        {
            fx.change(|| Change::DropPool { pool: Bytes::copy_from_slice(&p.name) });
        }
    }

    /// Takes a pool out of the shard (its name, its place in the scan
    /// order); the caller settles its counts.
    fn unlink_pool(&mut self, pid: PoolId) -> Option<Pool> {
        self.names.remove(&self.pools, pid);
        let p = self.pools.remove(&pid)?;
        Some(*p)
    }

    /// Puts fired wheel entries (`run[from..]`) at the back of the
    /// backlog, and gives back an empty `Vec` for the next ones.
    fn queue_due(&mut self, run: Vec<(u64, (PoolId, SlotIdx))>, from: usize) -> Vec<(u64, (PoolId, SlotIdx))> {
        for &(_, (pid, _)) in run.iter().skip(from) {
            let i = pid as usize;
            if self.behind.len() <= i {
                self.behind.resize(i + 1, 0);
            }
            self.behind[i] += 1;
        }
        self.backlog.push_run(run, from);
        self.backlog.take_spare()
    }

    /// Takes the oldest entry of the backlog.
    fn pop_due(&mut self) -> Option<(u64, (PoolId, SlotIdx))> {
        let e = self.backlog.pop_front()?;
        if let Some(n) = self.behind.get_mut(e.1.0 as usize) {
            *n = n.saturating_sub(1);
        }
        if self.backlog.is_empty() {
            self.behind.clear();
        }
        Some(e)
    }

    /// The backlog entry `k` places behind the next one.
    fn due_ahead(&self, k: usize) -> Option<&(u64, (PoolId, SlotIdx))> {
        self.backlog.get(k)
    }

    /// Whether pool `pid` has due entries waiting in the backlog (so its
    /// tokens may be past their deadlines).
    fn is_behind(&self, pid: PoolId) -> bool {
        self.behind.get(pid as usize).is_some_and(|&n| n > 0)
    }

    /// Whether `pool` has due entries waiting in the backlog.
    fn pool_behind(&self, pool: &[u8]) -> bool {
        !self.backlog.is_empty() && self.pid(pool).is_some_and(|pid| self.is_behind(pid))
    }

    /// True when the wheel holds enough stale entries that a sweep should
    /// start (see [`expiry`]'s `sweep_step`) and none runs.
    fn needs_sweep(&self) -> bool {
        self.sweep.is_none()
            && self.wheel.len() > expiry::SWEEP_FACTOR.saturating_mul(self.live).saturating_add(expiry::SWEEP_SLACK)
    }

    /// Gives watched pools that changed a new version (under the lock).
    fn bump_watched(&mut self, touched: &mut Vec<Bytes>, versions: &AtomicU64) {
        for name in touched.drain(..) {
            if let Some(w) = self.watched.get_mut(&name) {
                w.1 = versions.fetch_add(1, Ordering::Relaxed) + 1;
            }
        }
    }
}

impl Store {
    /// A store with the given settings, clock and notifier. Call
    /// [`expiry::spawn`] to start its expiry drivers.
    pub fn new(config: StoreConfig, clock: Clock, notifier: Arc<Notifier>) -> Store {
        reclaim::start();
        let now = clock.now_ms();
        let n = config.shards.max(1);
        let shards = (0..n)
            .map(|_| ShardCell {
                state: Mutex::new(Shard::new(now)),
                wake: Notify::new(),
                driver: std::sync::OnceLock::new(),
                wake_at: AtomicU64::new(u64::MAX),
            })
            .collect();
        Store {
            shared: Arc::new(Shared {
                shards,
                config,
                clock,
                notifier,
                journal: std::sync::OnceLock::new(),
                live_tokens: AtomicU64::new(0),
                backlogged: AtomicU64::new(0),
                earliest_wake: AtomicU64::new(u64::MAX),
                remembered_total: Default::default(),
                expired_total: AtomicU64::new(0),
                lease_expired_total: AtomicU64::new(0),
                subscriber_waits: AtomicU64::new(0),
                subscriber_wait_us: AtomicU64::new(0),
                expiry_base: Mutex::default(),
                drivers_working: AtomicU64::new(0),
                next_waiter_id: AtomicU64::new(1),
                next_version: AtomicU64::new(1),
                hasher: BuildHasherDefault::default(),
                latency: crate::latency::LatencyMonitor::new(DEFAULT_LATENCY_THRESHOLD_MS),
                slot_key: AtomicU64::new(rand::random()),
            }),
        }
    }

    /// Sets the key that masks slot numbers in tokens (before any pool
    /// exists, i.e. before [`Store::restore`]; pools keep the key they were
    /// made with).
    pub fn set_slot_key(&self, key: u64) {
        self.shared.slot_key.store(key, Ordering::Relaxed);
    }

    /// The key that masks slot numbers in new tokens.
    pub fn slot_key(&self) -> u64 {
        self.shared.slot_key.load(Ordering::Relaxed)
    }

    /// Sends every later change to `journal` (once, at start-up; a second
    /// call is ignored).
    pub fn set_journal(&self, journal: Arc<dyn Journal>) {
        let _ = self.shared.journal.set(journal);
    }

    /// The sequence number of the journal unit the calling thread appended
    /// last, and forgets it. A command runs on one thread without awaiting,
    /// so a connection that reads this right after a write command learns
    /// which unit holds that command's changes (and can wait for exactly it).
    pub fn take_appended() -> Option<u64> {
        APPENDED.with(Cell::take)
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The notifier.
    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.shared.notifier
    }

    /// Live tokens in the whole server.
    pub fn live_tokens(&self) -> u64 {
        self.shared.live_tokens.load(Ordering::Relaxed)
    }

    /// Expiries so far: (lifetimes ended, leases ended).
    pub fn counters(&self) -> (u64, u64) {
        (self.shared.expired_total.load(Ordering::Relaxed), self.shared.lease_expired_total.load(Ordering::Relaxed))
    }

    /// Whether an expiry thread driver is at work rather than parked until
    /// its next deadline.
    pub fn expiry_working(&self) -> bool {
        self.shared.drivers_working.load(Ordering::Relaxed) > 0
    }

    /// Whether a thread of the store's own wants a core now: an expiry
    /// driver at work ([`Store::expiry_working`]), the free thread with
    /// storage left to give back ([`lazyfree_counts`]), or a GEN's stock
    /// being made ([`making_stock`]). A thread polling for requests on the
    /// same core (`--idle-poll-us`) would take the core from them.
    pub fn threads_working(&self) -> bool {
        self.expiry_working() || lazyfree_counts().0 > 0 || making_stock()
    }

    /// `CONFIG RESETSTAT`: INFO's expiry counts start from zero again
    /// ([`Store::since_reset`]), from `now`, the totals just read (by
    /// [`Store::expiry_totals`], or under a transaction's locks by
    /// [`Txn::expiry_totals`]); the totals go on.
    pub fn reset_counters_to(&self, now: ExpiryTotals) {
        *self.shared.expiry_base.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// Expiries since the start: how many lifetimes and leases ended, how
    /// late (µs after their deadlines), and how often and how long the
    /// expiry drivers waited for subscribers to catch up.
    pub fn expiry_totals(&self) -> ExpiryTotals {
        let mut lateness = crate::hist::Hist::default();
        for cell in self.shared.shards.iter() {
            lateness.merge(&lock(&cell.state).lateness);
        }
        self.expiry_totals_with(lateness)
    }

    /// The expiry totals around the shards' lateness, merged by the caller.
    fn expiry_totals_with(&self, lateness: crate::hist::Hist) -> ExpiryTotals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExpiryTotals {
            expired: load(&self.shared.expired_total),
            lease_expired: load(&self.shared.lease_expired_total),
            lateness,
            subscriber_waits: load(&self.shared.subscriber_waits),
            subscriber_wait_us: load(&self.shared.subscriber_wait_us),
        }
    }

    /// [`Store::counters`] since the last `CONFIG RESETSTAT` (INFO stats),
    /// without the shards' locks that the lateness takes.
    pub fn counters_since_reset(&self) -> (u64, u64) {
        let (expired, lease_expired) = self.counters();
        let base = self.shared.expiry_base.lock().unwrap_or_else(|e| e.into_inner());
        (expired.saturating_sub(base.expired), lease_expired.saturating_sub(base.lease_expired))
    }

    /// Expiry totals read `now` (by [`Store::expiry_totals`], or under a
    /// transaction's locks) less what they were at the last `CONFIG
    /// RESETSTAT` (INFO).
    pub fn since_reset(&self, now: ExpiryTotals) -> ExpiryTotals {
        let base = self.shared.expiry_base.lock().unwrap_or_else(|e| e.into_inner());
        ExpiryTotals {
            expired: now.expired.saturating_sub(base.expired),
            lease_expired: now.lease_expired.saturating_sub(base.lease_expired),
            lateness: now.lateness.since(&base.lateness),
            subscriber_waits: now.subscriber_waits.saturating_sub(base.subscriber_waits),
            subscriber_wait_us: now.subscriber_wait_us.saturating_sub(base.subscriber_wait_us),
        }
    }

    /// The latency monitor.
    pub fn latency(&self) -> &crate::latency::LatencyMonitor {
        &self.shared.latency
    }

    pub(crate) fn shard_cells(&self) -> &[ShardCell] {
        &self.shared.shards
    }

    /// The shard a pool lives in.
    pub fn shard_index(&self, pool: &[u8]) -> usize {
        (self.shared.hasher.hash_one(pool) % self.shared.shards.len() as u64) as usize
    }

    /// Runs `f` on the pool's shard with the pool's expiries brought up to
    /// date, then publishes what it did.
    fn with_shard<R>(&self, pool: &[u8], f: impl FnOnce(&mut Shard, u64, &mut Effects) -> R) -> R {
        let idx = self.shard_index(pool);
        self.with_shard_at(idx, Due::Pool(pool), f)
    }

    /// Runs `f` on shard `idx` after firing what is due as `due` says, then
    /// publishes what it did.
    ///
    /// A command fires a small share of what is due (other pools' expiries
    /// are the driver's work). If its own pool still has entries waiting in
    /// the backlog, it helps with the backlog a batch per lock hold, the
    /// lock released in between, until its pool has none, and only then
    /// runs: it never sees its pool's tokens past their deadlines, and the
    /// other pools of the shard wait for one batch at most. The front ends
    /// await [`Store::ready`] first, so what is left to help with here fell
    /// due in the moment since.
    fn with_shard_at<R>(&self, idx: usize, due: Due, f: impl FnOnce(&mut Shard, u64, &mut Effects) -> R) -> R {
        let cell = &self.shared.shards[idx];
        let journal = self.shared.journal.get();
        loop {
            let mut fx = Effects::new(&self.shared.notifier, journal.is_some());
            let mut g = lock(&cell.state);
            fx.watching = !g.watched.is_empty();
            let now = self.shared.clock.now_ms();
            let done = match due {
                Due::Batch => self.run_due(&mut g, now, &mut fx, fire::Firing::Batch),
                Due::Pool(_) => self.run_due(&mut g, now, &mut fx, fire::Firing::Command),
                Due::Ready => self.due_before_ready(&mut g, now, &mut fx),
            };
            if !done
                && let Due::Pool(pool) = due
                && g.pool_behind(pool)
            {
                self.release(idx, g, fx, journal, now);
                self.catch_up(idx, Some(pool));
                continue;
            }
            let r = f(&mut g, now, &mut fx);
            self.release(idx, g, fx, journal, now);
            return r;
        }
    }

    /// Fires shard `idx`'s backlog a batch per lock hold, the lock released
    /// in between, until `pool` (every pool with `None`) has nothing left in
    /// it.
    fn catch_up(&self, idx: usize, pool: Option<&[u8]>) {
        while !self.help(idx, pool) {
            std::thread::yield_now();
        }
    }

    /// Fires one batch of shard `idx`'s backlog; returns whether `pool`
    /// (every pool with `None`) has nothing left in it.
    fn help(&self, idx: usize, pool: Option<&[u8]>) -> bool {
        self.with_shard_at(idx, Due::Batch, |s, _, _| match pool {
            Some(p) => !s.pool_behind(p),
            None => s.backlog.is_empty(),
        })
    }

    /// Whether some shard has a backlog of due expiries (a lock-free look).
    pub fn behind(&self) -> bool {
        self.shared.backlogged.load(Ordering::Relaxed) > 0
    }

    /// Whether a request may meet due expiries that nobody has fired yet:
    /// some shard has a backlog, or some shard's driver's time to look
    /// has come (it has not queued what fell due yet). Lock-free: one
    /// atomic load while nothing with a deadline is stored, a clock read
    /// more otherwise; the shards are looked at only once the earliest
    /// wake time has passed. A front end that finds this false runs its
    /// requests at once ([`Store::ready`] is for when it is true); it
    /// reads this once for the requests it read together.
    pub fn maybe_due(&self) -> bool {
        if self.behind() {
            return true;
        }
        let hint = self.shared.earliest_wake.load(Ordering::Acquire);
        if hint == u64::MAX {
            return false;
        }
        let now = self.shared.clock.now_ms();
        if hint > now {
            return false;
        }
        // Drivers lower the hint but never raise it: it may be a wake time
        // some driver has already passed. The shards say.
        let earliest = self.shared.shards.iter().map(|c| c.wake_at.load(Ordering::Acquire)).min().unwrap_or(u64::MAX);
        if earliest > now {
            // A driver lowering it meanwhile may be overwritten: the hint is
            // then late, and a request on that shard fires what is due under
            // its lock, as it always may (see `Store::with_shard_at`).
            self.shared.earliest_wake.store(earliest, Ordering::Release);
            return false;
        }
        true
    }

    /// Waits until `pool` has no due expiries left in its shard's backlog,
    /// firing the backlog a batch per lock hold and yielding to the runtime
    /// between batches: a front end calls this before a request on `pool`
    /// when [`Store::maybe_due`], so that the request never holds a worker
    /// thread (and every connection on it) for a whole backlog.
    ///
    /// What fell due in the shard and is not yet queued (the request came
    /// in the instant it fell due, before the driver looked) is taken from
    /// the wheel first, so a mass expiry of the pool itself is fired here
    /// too, in batches, rather than by the request under its lock.
    pub async fn ready(&self, pool: &[u8]) {
        let idx = self.shard_index(pool);
        let cell = &self.shared.shards[idx];
        // Nothing queued anywhere and nothing due in the shard: what falls
        // due from now on is the request's small share.
        if !self.behind() && cell.wake_at.load(Ordering::Acquire) > self.shared.clock.now_ms() {
            return;
        }
        if self.with_shard_at(idx, Due::Ready, |s, _, _| s.pool_behind(pool)) {
            self.help_until_done(idx, Some(pool)).await;
        }
    }

    /// Waits until no shard has due expiries left in its backlog, firing
    /// them a batch per lock hold and yielding to the runtime between
    /// batches: a front end awaits this before a request that locks every
    /// shard at once (FLUSHALL, a transaction that reads the whole store),
    /// which would otherwise fire every backlog under its locks, holding
    /// its worker thread (and every connection on it) for all of them.
    pub async fn ready_all(&self) {
        for idx in 0..self.shared.shards.len() {
            self.help_until_done(idx, None).await;
        }
    }

    /// [`Store::catch_up`] for a task: the runtime gets the thread back
    /// between batches.
    async fn help_until_done(&self, idx: usize, pool: Option<&[u8]>) {
        while !self.help(idx, pool) {
            tokio::task::yield_now().await;
        }
    }

    /// Counts shard `s` in [`Shared::backlogged`] while it has a backlog.
    fn note_backlog(&self, s: &mut Shard) {
        let has = !s.backlog.is_empty();
        if has != s.counted {
            s.counted = has;
            if has {
                self.shared.backlogged.fetch_add(1, Ordering::Relaxed);
            } else {
                self.shared.backlogged.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Ends a hold of shard `idx`'s lock: journals the changes and bumps
    /// watched pools (under the lock), then wakes the driver if needed and
    /// publishes the events.
    fn release(
        &self,
        idx: usize,
        mut g: MutexGuard<'_, Shard>,
        mut fx: Effects,
        journal: Option<&Arc<dyn Journal>>,
        now: u64,
    ) {
        if fx.watching {
            g.bump_watched(&mut fx.touched, &self.shared.next_version);
        }
        self.append(journal, &mut fx);
        if g.needs_sweep() {
            // Start a sweep now: the driver may be asleep until a
            // far deadline, and nothing else would wake it.
            g.sweep = Some(crate::wheel::Sweep::default());
            fx.earliest_armed = now;
        }
        if !g.big_wheel && g.wheel.len() >= crate::wheel::PREPARE_MIN {
            // The driver may be asleep until a far deadline, the one it
            // saw while the wheel was small: a pool filled since can put
            // millions of entries in one slot, which must be spread ahead.
            g.big_wheel = true;
            fx.earliest_armed = now;
        }
        drop(g);
        self.wake_driver(idx, fx.earliest_armed);
        self.shared.notifier.emit(&fx.events);
    }

    /// Hands a command's changes to the journal as one unit (called under
    /// the locks of every shard they touch, so units are in the order of
    /// the changes), and tells the blocked clients it handed tokens to
    /// which unit that is (0: none).
    fn append(&self, journal: Option<&Arc<dyn Journal>>, fx: &mut Effects) {
        let mut seq = 0;
        if let (Some(j), Some(c)) = (journal, fx.changes.take())
            && !c.is_empty()
        {
            seq = j.append(c);
            APPENDED.with(|a| a.set(Some(seq)));
        }
        for unit in fx.handed.drain(..) {
            unit.store(seq, Ordering::Release);
        }
    }

    /// Returns once no command holds shard `pool`'s lock: what a command
    /// that held it did under it (its journal unit appended) is done.
    fn pass_lock(&self, pool: &[u8]) {
        drop(lock(&self.shared.shards[self.shard_index(pool)].state));
    }

    /// Wakes shard `idx`'s driver if a deadline earlier than the one it
    /// sleeps until was armed. Its wake time is lowered at once (the
    /// driver stores the real one when it ticks): [`Store::maybe_due`]
    /// knows of the deadline before the driver has looked.
    fn wake_driver(&self, idx: usize, earliest_armed: u64) {
        let cell = &self.shared.shards[idx];
        if earliest_armed < cell.wake_at.load(Ordering::Acquire) {
            self.lower_wake_at(idx, earliest_armed);
            cell.wake.notify_one();
            if let Some(t) = cell.driver.get() {
                t.unpark();
            }
        }
    }

    /// Lowers shard `idx`'s wake time to `at` if it is later, and the
    /// shards' earliest with it. Out of line: rare, and `release` is on
    /// every command's path.
    #[cold]
    #[inline(never)]
    fn lower_wake_at(&self, idx: usize, at: u64) {
        self.shared.shards[idx].wake_at.fetch_min(at, Ordering::AcqRel);
        self.shared.earliest_wake.fetch_min(at, Ordering::AcqRel);
    }

    /// The id of pool `name` in shard `s`, making the pool if it is new.
    fn pool_id(&self, s: &mut Shard, name: &[u8]) -> PoolId {
        if let Some(pid) = s.pid(name) {
            return pid;
        }
        // The name is copied (a slice of the network buffer would pin the
        // whole read chunk in memory for as long as the pool lives).
        let pid = s.new_pool_id();
        let key = self.slot_key();
        s.pools.insert(pid, Box::new(Pool::new(name, key)));
        s.names.insert(&s.pools, pid);
        pid
    }

    /// WATCH: registers a watcher of `pool` and returns the pool's version
    /// (which changes whenever the pool does, see [`Effects::change`]).
    pub fn watch(&self, pool: &[u8]) -> u64 {
        let versions = &self.shared.next_version;
        let mut g = lock(&self.shared.shards[self.shard_index(pool)].state);
        let w = g
            .watched
            .entry(Bytes::copy_from_slice(pool))
            .or_insert_with(|| (0, versions.fetch_add(1, Ordering::Relaxed) + 1));
        w.0 += 1;
        w.1
    }

    /// Undoes one [`Store::watch`] of `pool`.
    pub fn unwatch(&self, pool: &[u8]) {
        let mut g = lock(&self.shared.shards[self.shard_index(pool)].state);
        if let Some(w) = g.watched.get_mut(pool) {
            w.0 -= 1;
            if w.0 == 0 {
                g.watched.remove(pool);
            }
        }
    }
}

/// What a hold of a shard's lock fires before its work.
#[derive(Clone, Copy)]
enum Due<'p> {
    /// A batch: the expiry driver, or a command helping with the backlog.
    Batch,
    /// A command on this pool (see [`Store::with_shard_at`]).
    Pool(&'p [u8]),
    /// A request about to run (see [`Store::due_before_ready`]).
    Ready,
}

/// `--latency-monitor-threshold`'s default (ms): an expiry that fires 5 ms
/// late breaks tokend's promise, so it is recorded unless asked otherwise.
pub const DEFAULT_LATENCY_THRESHOLD_MS: u64 = 5;

/// Locks a shard. A panic while holding the lock would be a bug; we still
/// keep serving rather than poisoning every later command.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    txn::assert_no_txn_here();
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
