//! The token store: sharded, every command atomic.
//!
//! Pools are spread over shards by a hash of their name; each shard is one
//! `std::sync::Mutex` around its pools and its own timing wheel. A command
//! touches exactly one pool, so it takes exactly one lock, and commands on
//! pools in different shards never contend. The lock is a std mutex, not
//! tokio's, because it is never held across an `.await`: every critical
//! section is a few hash-map operations.
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

pub mod expiry;
mod freeset;
mod huge;
mod pool;
mod queue;
mod slab;

pub use pool::Record;

use crate::clock::Clock;
use crate::notify::{Event, EventKind, Notifier};
use crate::token::{self, TokenHash, TokenId};
use crate::wheel::Wheel;
use bytes::Bytes;
use pool::{Pool, SlotIdx, Waiter};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, oneshot};

/// Store settings (from the command line).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Number of shards; more shards, less contention between pools.
    pub shards: usize,
    /// Lifetime (ms) when GEN gives none.
    pub default_lifetime_ms: u64,
    /// Lease (ms) when ACQUIRE gives none.
    pub default_lease_ms: u64,
    /// How long expired tokens are remembered (ms); 0 = not at all.
    pub expired_memory_ms: u64,
    /// At most this many expired tokens remembered per server.
    pub max_expired_remembered: usize,
    /// At most this many live tokens per server (GEN beyond it: `-OOM`).
    pub max_tokens: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            shards: 16,
            default_lifetime_ms: 300_000,
            default_lease_ms: 60_000,
            expired_memory_ms: 3_600_000,
            max_expired_remembered: 1_000_000,
            max_tokens: 50_000_000,
        }
    }
}

/// Why a token command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The pool never had the token, or it was deleted or forgotten.
    NoToken,
    /// The token's lifetime ended (and it is still remembered).
    Expired,
    /// UNBLOCK of a free token.
    NotAssigned,
    /// The server's token limit would be exceeded.
    Oom,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::NoToken => "NOTOKEN no such token in this pool",
            TokenError::Expired => "EXPIRED the token's lifetime has ended",
            TokenError::NotAssigned => "NOTASSIGNED the token is not assigned",
            TokenError::Oom => "OOM command not allowed when the token limit (--max-tokens) is reached",
        })
    }
}

impl std::error::Error for TokenError {}

/// A token's state, as TOKEN.INFO reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    pub assigned: bool,
    pub lifetime_left_ms: u64,
    /// `None` while free.
    pub lease_left_ms: Option<u64>,
    pub times_acquired: u64,
}

/// A pool's counts, as TOKEN.STATS reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub total: u64,
    pub free: u64,
    pub assigned: u64,
    pub expired_remembered: u64,
    pub blocked_waiters: u64,
}

/// A change to persist, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The token exists with this record.
    Put { pool: Bytes, token: TokenId, record: Record },
    /// The token is gone (deleted; or expired and already forgotten).
    Del { pool: Bytes, token: TokenId },
    /// The token expired; remembered until `forget_at`.
    Expired { pool: Bytes, token: TokenId, forget_at: u64 },
    /// A remembered expired token is forgotten.
    Forget { pool: Bytes, token: TokenId },
    /// Every remembered expired token of the pool is forgotten (DELEXPIRED).
    ForgetAll { pool: Bytes },
}

/// Where changes go to be made durable (the backing Redis).
pub trait Journal: Send + Sync {
    /// Queues changes; called with the shard lock held, so it must not block.
    fn append(&self, changes: Vec<Change>);
}

/// What ACQUIRE got.
pub enum Acquired {
    Token(TokenId),
    /// No free token and no BLOCK.
    Empty,
    /// No free token; the caller is queued (BLOCK).
    Wait(Waiting),
}

/// A queued blocked ACQUIRE. Dropping it without [`Waiting::cancel`] or
/// [`Waiting::release`] leaves at most a closed entry that is skipped.
pub struct Waiting {
    store: Store,
    pool: Bytes,
    id: u64,
    rx: oneshot::Receiver<TokenId>,
}

impl Waiting {
    /// Resolves when a token was handed over (None if the store dropped us).
    pub async fn recv(&mut self) -> Option<TokenId> {
        (&mut self.rx).await.ok()
    }

    /// Leaves the queue (timeout). If a token was handed over meanwhile, it is
    /// returned: it belongs to this client.
    pub fn cancel(mut self) -> Option<TokenId> {
        self.store.remove_waiter(&self.pool, self.id);
        // After removal under the lock nobody can send any more.
        self.rx.try_recv().ok()
    }

    /// Leaves the queue because the client is gone; a token handed over
    /// meanwhile goes back to the free set (and to the next waiter).
    pub fn release(self) {
        let store = self.store.clone();
        let pool = self.pool.clone();
        if let Some(t) = self.cancel() {
            let _ = store.unblock(&pool, t);
        }
    }
}

/// One shard: a set of pools and their timing wheel.
struct Shard {
    names: HashMap<Bytes, PoolId>,
    pools: HashMap<PoolId, Pool, TokenHash>,
    /// Pending deadlines: (pool id, slot with [`LEASE_ENTRY`] set for a
    /// lease). 16 bytes an entry. A token has a lifetime entry always and a
    /// lease entry while assigned, both reset lazily (see `run_due`). A slot
    /// may be reused by another token before an old entry fires; the checks
    /// then fail, or at worst the new token is settled early, which is
    /// harmless (settling only applies what is actually due).
    wheel: Wheel<(PoolId, SlotIdx)>,
    /// Remembered expired tokens in the order they are to be forgotten.
    forget: queue::ChunkedQueue<(u64, PoolId, TokenId)>,
    remembered: usize,
    /// Tokens and random picks come from a CSPRNG: tokens may be secrets.
    rng: StdRng,
    /// Scratch space for fired wheel entries (kept to avoid reallocating).
    fired: Vec<(u64, (PoolId, SlotIdx))>,
}

/// A pool's number within the server (never reused before 2^32 pools).
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
    /// Remembered expired tokens in the whole server (bounded by
    /// `max_expired_remembered`).
    remembered_total: std::sync::atomic::AtomicUsize,
    /// Expiries so far: lifetimes ended, leases ended (INFO stats).
    expired_total: AtomicU64,
    lease_expired_total: AtomicU64,
    next_pool_id: AtomicU32,
    next_waiter_id: AtomicU64,
    hasher: BuildHasherDefault<DefaultHasher>,
    /// Masks the slot number in new pools' tokens ([`token::with_slot`]):
    /// random per server, or kept in the backing Redis so that recovered
    /// tokens still name their slots.
    slot_key: AtomicU64,
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
    events: Vec<Event>,
    changes: Option<Vec<Change>>,
    /// Deadline armed that is earlier than the driver's wake-up time.
    earliest_armed: u64,
}

impl<'a> Effects<'a> {
    fn event(&mut self, kind: EventKind, pool: &Bytes, token: TokenId) {
        if self.notifier.wants(kind) {
            self.events.push(Event { kind, pool: pool.clone(), token });
        }
    }
    fn change(&mut self, f: impl FnOnce() -> Change) {
        if let Some(c) = &mut self.changes {
            c.push(f());
        }
    }
}

/// The top bit of the slot number in a wheel entry: set for a lease entry,
/// clear for a lifetime entry. Slot numbers stay below it
/// ([`pool::MAX_SLOTS`]).
const LEASE_ENTRY: SlotIdx = 1 << 31;

/// Registers a token's lifetime deadline unless a lifetime entry at or
/// before it is live.
fn arm_life(wheel: &mut Wheel<(PoolId, SlotIdx)>, pid: PoolId, slot: SlotIdx, rec: &mut Record, fx: &mut Effects) {
    let due = rec.life_deadline;
    if rec.armed == 0 || due < rec.armed {
        rec.armed = due;
        wheel.insert(due, (pid, slot));
        fx.earliest_armed = fx.earliest_armed.min(due);
    }
}

/// Registers an assigned token's lease deadline as its live lease entry
/// (any older lease entry becomes stale).
fn arm_lease(wheel: &mut Wheel<(PoolId, SlotIdx)>, pid: PoolId, slot: SlotIdx, rec: &mut Record, fx: &mut Effects) {
    let due = rec.lease_deadline;
    rec.lease_armed = due as u32;
    wheel.insert(due, (pid, slot | LEASE_ENTRY));
    fx.earliest_armed = fx.earliest_armed.min(due);
}

impl Store {
    /// A store with the given settings, clock and notifier. Call
    /// [`expiry::spawn`] to start its expiry drivers.
    pub fn new(config: StoreConfig, clock: Clock, notifier: Arc<Notifier>) -> Store {
        let now = clock.now_ms();
        let n = config.shards.max(1);
        let shards = (0..n)
            .map(|_| ShardCell {
                state: Mutex::new(Shard {
                    names: HashMap::new(),
                    pools: HashMap::default(),
                    wheel: Wheel::new(now),
                    forget: Default::default(),
                    remembered: 0,
                    rng: StdRng::from_rng(&mut rand::rng()),
                    fired: Vec::new(),
                }),
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
                remembered_total: Default::default(),
                expired_total: AtomicU64::new(0),
                lease_expired_total: AtomicU64::new(0),
                next_pool_id: AtomicU32::new(1),
                next_waiter_id: AtomicU64::new(1),
                hasher: BuildHasherDefault::default(),
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

    pub(crate) fn shard_cells(&self) -> &[ShardCell] {
        &self.shared.shards
    }

    fn shard_index(&self, pool: &[u8]) -> usize {
        (self.shared.hasher.hash_one(pool) % self.shared.shards.len() as u64) as usize
    }

    /// Runs `f` on the pool's shard with expiries brought up to date, then
    /// publishes what it did.
    fn with_shard<R>(&self, pool: &[u8], f: impl FnOnce(&mut Shard, u64, &mut Effects) -> R) -> R {
        let idx = self.shard_index(pool);
        self.with_shard_at(idx, true, |s, now, fx| f(s, now, fx))
    }

    /// Runs `f` on shard `idx`; with `due`, fires what is due first (every
    /// command does; restoring from the backing store must not, so that
    /// nothing fires before the journal is attached).
    fn with_shard_at<R>(&self, idx: usize, due: bool, f: impl FnOnce(&mut Shard, u64, &mut Effects) -> R) -> R {
        let cell = &self.shared.shards[idx];
        let journal = self.shared.journal.get();
        let mut fx = Effects {
            notifier: &self.shared.notifier,
            events: Vec::new(),
            changes: journal.map(|_| Vec::new()),
            earliest_armed: u64::MAX,
        };
        let r = {
            let mut g = lock(&cell.state);
            let now = self.shared.clock.now_ms();
            if due {
                self.run_due(&mut g, now, &mut fx);
            }
            let r = f(&mut g, now, &mut fx);
            if let (Some(j), Some(c)) = (journal, fx.changes.take())
                && !c.is_empty()
            {
                j.append(c);
            }
            r
        };
        if fx.earliest_armed < cell.wake_at.load(Ordering::Acquire) {
            cell.wake.notify_one();
            if let Some(t) = cell.driver.get() {
                t.unpark();
            }
        }
        self.shared.notifier.emit(&fx.events);
        r
    }

    /// Fires every deadline up to `now` in this shard and forgets expired
    /// tokens whose memory ran out.
    ///
    /// Entries are reset lazily: a KEEPALIVE that moves a deadline later
    /// inserts nothing, and UNBLOCK leaves the lease entry in the wheel. A
    /// fired entry is live if the token still has it armed (`armed` for a
    /// lifetime entry, `lease_armed` for a lease entry); a stale one is
    /// dropped. A lease entry of a token that is free is stale whatever its
    /// deadline, and that is told from the free set's bitmap alone: every
    /// ACQUIRE → UNBLOCK leaves one such entry behind, and at 10M tokens
    /// reading the token's slot when it fires would be a cache and TLB miss.
    fn run_due(&self, s: &mut Shard, now: u64, fx: &mut Effects) {
        let mut fired = std::mem::take(&mut s.fired);
        s.wheel.poll(now, &mut fired);
        for (when, (pid, entry)) in fired.drain(..) {
            let (slot, lease) = (entry & !LEASE_ENTRY, entry & LEASE_ENTRY != 0);
            let Some(p) = s.pools.get_mut(&pid) else { continue };
            if lease && p.free.contains(slot) {
                continue;
            }
            let Some(rec) = p.get_mut(slot) else { continue };
            if lease {
                if !rec.is_assigned() || rec.lease_armed != when as u32 {
                    continue;
                }
            } else if rec.armed != when {
                continue;
            } else {
                rec.armed = 0;
            }
            self.settle(s, pid, slot, now, lease, fx);
        }
        s.fired = fired;
        while let Some(&(at, pid, id)) = s.forget.front() {
            if at > now {
                break;
            }
            s.forget.pop_front();
            self.forget_one(s, pid, id, at, fx);
        }
    }

    /// Forgets a remembered expired token if the queue entry is current.
    fn forget_one(&self, s: &mut Shard, pid: PoolId, id: TokenId, at: u64, fx: &mut Effects) {
        if let Some(pool) = s.pools.get_mut(&pid)
            && pool.expired.get(&id) == Some(&at)
        {
            pool.expired.remove(&id);
            let name = pool.name.clone();
            self.forgot(s, 1);
            fx.change(|| Change::Forget { pool: name, token: id });
            Self::drop_if_empty(s, pid);
        }
    }

    /// Applies whatever is due for one token, in deadline order, and re-arms
    /// its next deadline. A lease that ended strictly before the lifetime is
    /// processed first (after downtime both may be due: `leaseexpired` then
    /// `expired`); at the same millisecond the lifetime wins and only
    /// `expired` happens. `lease_entry`: the token's live lease entry fired
    /// (so a lease that goes on needs a new one).
    fn settle(&self, s: &mut Shard, pid: PoolId, slot: SlotIdx, now: u64, lease_entry: bool, fx: &mut Effects) {
        let Some(pool) = s.pools.get_mut(&pid) else { return };
        let Some(rec) = pool.get(slot).copied() else { return };
        let mut freed = false;
        if rec.is_assigned() && rec.lease_deadline <= now && rec.lease_deadline < rec.life_deadline {
            if let Some(r) = pool.get_mut(slot) {
                r.lease_deadline = 0;
            }
            pool.push_free(slot);
            freed = true;
            self.shared.lease_expired_total.fetch_add(1, Ordering::Relaxed);
            let name = pool.name.clone();
            fx.event(EventKind::LeaseExpired, &name, pool.id(slot));
            self.put_change(pool, slot, fx);
        }
        if rec.life_deadline <= now {
            self.expire(s, pid, slot, now, fx);
            return;
        }
        if freed {
            self.serve_waiters(s, pid, now, fx);
        }
        let Shard { pools, wheel, .. } = s;
        if let Some(rec) = pools.get_mut(&pid).and_then(|p| p.get_mut(slot)) {
            arm_life(wheel, pid, slot, rec, fx);
            if lease_entry && rec.is_assigned() {
                arm_lease(wheel, pid, slot, rec, fx);
            }
        }
    }

    /// Deletes a token whose lifetime ended and remembers it as expired.
    fn expire(&self, s: &mut Shard, pid: PoolId, slot: SlotIdx, now: u64, fx: &mut Effects) {
        let Some(pool) = s.pools.get_mut(&pid) else { return };
        let Some((id, _)) = pool.remove(slot) else { return };
        self.shared.live_tokens.fetch_sub(1, Ordering::Relaxed);
        self.shared.expired_total.fetch_add(1, Ordering::Relaxed);
        let name = pool.name.clone();
        fx.event(EventKind::Expired, &name, id);
        if self.shared.config.expired_memory_ms > 0 {
            let forget_at = now + self.shared.config.expired_memory_ms;
            pool.expired.insert(id, forget_at);
            s.forget.push_back((forget_at, pid, id));
            s.remembered += 1;
            let total = self.shared.remembered_total.fetch_add(1, Ordering::Relaxed) + 1;
            fx.change(|| Change::Expired { pool: name, token: id, forget_at });
            // Over the server-wide bound: this shard forgets its oldest. (The
            // bound can be overshot by at most what other shards hold until
            // they next expire something.)
            if total > self.shared.config.max_expired_remembered {
                while self.shared.remembered_total.load(Ordering::Relaxed) > self.shared.config.max_expired_remembered {
                    let Some((at, p, t)) = s.forget.pop_front() else { break };
                    self.forget_one(s, p, t, at, fx);
                }
            }
        } else {
            fx.change(|| Change::Del { pool: name, token: id });
            Self::drop_if_empty(s, pid);
        }
    }

    /// Counts `n` remembered expired tokens of shard `s` as forgotten.
    fn forgot(&self, s: &mut Shard, n: usize) {
        s.remembered -= n;
        self.shared.remembered_total.fetch_sub(n, Ordering::Relaxed);
    }

    fn put_change(&self, pool: &Pool, slot: SlotIdx, fx: &mut Effects) {
        if let Some(record) = pool.get(slot).copied() {
            let (name, token) = (pool.name.clone(), pool.id(slot));
            fx.change(|| Change::Put { pool: name, token, record });
        }
    }

    fn drop_if_empty(s: &mut Shard, pid: PoolId) {
        if s.pools.get(&pid).is_some_and(Pool::is_empty)
            && let Some(p) = s.pools.remove(&pid)
        {
            s.names.remove(&p.name);
        }
    }

    /// Makes the token in `slot`, just taken out of the free set, assigned
    /// with `lease`.
    fn assign(s: &mut Shard, pid: PoolId, slot: SlotIdx, lease: u64, now: u64, fx: &mut Effects) -> Option<TokenId> {
        let Shard { pools, wheel, .. } = s;
        let pool = pools.get_mut(&pid)?;
        let id = pool.id(slot);
        let rec = pool.get_mut(slot)?;
        rec.lease = lease;
        // Never 0, which would read as free.
        rec.lease_deadline = now.saturating_add(lease).max(1);
        // Cover rule: an assigned token never dies before its lease ends.
        rec.life_deadline = rec.life_deadline.max(rec.lease_deadline);
        rec.times_acquired = rec.times_acquired.saturating_add(1);
        // The lifetime only moved later: its entry re-arms when it fires.
        arm_lease(wheel, pid, slot, rec, fx);
        let record = *rec;
        let name = pool.name.clone();
        fx.event(EventKind::TokenAcquire, &name, id);
        fx.change(|| Change::Put { pool: name, token: id, record });
        Some(id)
    }

    /// Hands free tokens to blocked clients, oldest first.
    fn serve_waiters(&self, s: &mut Shard, pid: PoolId, now: u64, fx: &mut Effects) {
        loop {
            let Shard { pools, rng, .. } = &mut *s;
            let Some(pool) = pools.get_mut(&pid) else { return };
            if pool.free.is_empty() {
                return;
            }
            let Some(w) = pool.waiters.pop_front() else { return };
            if w.tx.is_closed() {
                continue;
            }
            let Some(slot) = pool.take_random_free(rng) else { return };
            let id = pool.id(slot);
            // Hand over first: if the client vanished this instant, the token
            // simply stays free.
            if w.tx.send(id).is_ok() {
                Self::assign(s, pid, slot, w.lease, now, fx);
            } else {
                pool.push_free(slot);
            }
        }
    }

    fn remove_waiter(&self, pool: &[u8], waiter: u64) {
        self.with_shard(pool, |s, _, _| {
            if let Some(&pid) = s.names.get(pool) {
                if let Some(p) = s.pools.get_mut(&pid) {
                    p.waiters.retain(|w| w.id != waiter);
                }
                Self::drop_if_empty(s, pid);
            }
        })
    }

    fn pool_id(&self, s: &mut Shard, name: &[u8]) -> PoolId {
        if let Some(&pid) = s.names.get(name) {
            return pid;
        }
        // Copy the name: a slice of the network buffer would pin the whole
        // read chunk in memory for as long as the pool lives.
        let name = Bytes::copy_from_slice(name);
        let pid = self.shared.next_pool_id.fetch_add(1, Ordering::Relaxed);
        let key = self.slot_key();
        s.names.insert(name.clone(), pid);
        s.pools.insert(pid, Pool::new(name, key));
        pid
    }

    /// TOKEN.GEN: makes `count` new free tokens with `lifetime_ms` (or the default).
    pub fn gen_tokens(&self, pool: &[u8], lifetime_ms: Option<u64>, count: u64) -> Result<Vec<TokenId>, TokenError> {
        let lifetime = lifetime_ms.unwrap_or(self.shared.config.default_lifetime_ms);
        let live = &self.shared.live_tokens;
        // Reserve first, so that concurrent GENs cannot overshoot the limit.
        if live.fetch_add(count, Ordering::Relaxed).saturating_add(count) > self.shared.config.max_tokens {
            live.fetch_sub(count, Ordering::Relaxed);
            return Err(TokenError::Oom);
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        Ok(self.with_shard(pool, |s, now, fx| {
            let pid = self.pool_id(s, pool);
            let mut out = Vec::with_capacity(count as usize);
            let Shard { pools, wheel, rng, .. } = s;
            let Some(p) = pools.get_mut(&pid) else { return out };
            p.reserve(count as usize);
            while (out.len() as u64) < count {
                let slot = p.alloc_slot();
                let id = loop {
                    let id = p.new_token(rng.random(), slot);
                    // 2^-90 per pair (the slot alone rules out every token
                    // placed where it names); cheap to rule out.
                    if !p.contains(id) && !p.expired.contains_key(&id) {
                        break id;
                    }
                };
                let rec = Record::new_free(now, lifetime);
                p.put(slot, id, rec);
                if let Some(r) = p.get_mut(slot) {
                    arm_life(wheel, pid, slot, r, fx);
                }
                fx.event(EventKind::TokenGen, &p.name, id);
                fx.change(|| Change::Put { pool: p.name.clone(), token: id, record: rec });
                out.push(id);
            }
            self.serve_waiters(s, pid, now, fx);
            out
        }))
    }

    /// TOKEN.ACQUIRE: a uniformly random free token, assigned with `lease_ms`
    /// (or the default). With `block` and none free, the caller is queued
    /// (the caller runs the timer).
    pub fn acquire(&self, pool: &[u8], lease_ms: Option<u64>, block: bool) -> Acquired {
        let lease = lease_ms.unwrap_or(self.shared.config.default_lease_ms);
        self.with_shard(pool, |s, now, fx| {
            let pid = match s.names.get(pool) {
                Some(&pid) => pid,
                None if block => self.pool_id(s, pool),
                None => return Acquired::Empty,
            };
            let Some(p) = s.pools.get_mut(&pid) else { return Acquired::Empty };
            // Fairness: a newcomer never jumps the queue of blocked clients.
            let queue_empty = p.waiters.iter().all(|w| w.tx.is_closed());
            if queue_empty && let Some(slot) = p.take_random_free(&mut s.rng) {
                return match Self::assign(s, pid, slot, lease, now, fx) {
                    Some(id) => Acquired::Token(id),
                    None => Acquired::Empty,
                };
            }
            if !block {
                return Acquired::Empty;
            }
            let (tx, rx) = oneshot::channel();
            let id = self.shared.next_waiter_id.fetch_add(1, Ordering::Relaxed);
            p.waiters.push_back(Waiter { id, lease, tx });
            Acquired::Wait(Waiting { store: self.clone(), pool: p.name.clone(), id, rx })
        })
    }

    /// Starts loading the slots of `ids` in `pool`, for commands that will
    /// run soon (the connection's look-ahead over a pipelined batch). A hint:
    /// it changes nothing, never waits for a busy shard, and skips pools
    /// small enough to stay in cache, without reading `ids` at all.
    ///
    /// Why: at 10M tokens the slot an UNBLOCK or KEEPALIVE names is a cache
    /// and TLB miss; issued for a whole batch at once, the misses overlap
    /// instead of stalling each command in turn.
    pub fn prefetch(&self, pool: &[u8], ids: impl IntoIterator<Item = TokenId>) {
        let cell = &self.shared.shards[self.shard_index(pool)];
        let Ok(g) = cell.state.try_lock() else { return };
        let Some(p) = g.names.get(pool).and_then(|pid| g.pools.get(pid)) else { return };
        if p.slot_count() < PREFETCH_MIN_SLOTS {
            return;
        }
        for id in ids {
            p.prefetch_named(id);
        }
    }

    /// Looks a token up, distinguishing never-had from expired; returns the
    /// pool id and the token's slot.
    fn find(s: &Shard, pool: &[u8], id: TokenId) -> Result<(PoolId, SlotIdx), TokenError> {
        let pid = *s.names.get(pool).ok_or(TokenError::NoToken)?;
        let p = s.pools.get(&pid).ok_or(TokenError::NoToken)?;
        match p.find(id) {
            Some(slot) => Ok((pid, slot)),
            None if p.expired.contains_key(&id) => Err(TokenError::Expired),
            None => Err(TokenError::NoToken),
        }
    }

    /// TOKEN.KEEPALIVE: restarts the lifetime (and the lease if assigned)
    /// from now; returns the lifetime left in ms.
    pub fn keepalive(&self, pool: &[u8], id: TokenId) -> Result<u64, TokenError> {
        self.with_shard(pool, |s, now, fx| {
            let (pid, slot) = Self::find(s, pool, id)?;
            let Shard { pools, wheel, .. } = s;
            let p = pools.get_mut(&pid).ok_or(TokenError::NoToken)?;
            let rec = p.get_mut(slot).ok_or(TokenError::NoToken)?;
            rec.life_deadline = now.saturating_add(rec.lifetime);
            if rec.is_assigned() {
                let before = rec.lease_deadline;
                rec.lease_deadline = now.saturating_add(rec.lease).max(1);
                rec.life_deadline = rec.life_deadline.max(rec.lease_deadline);
                // Later (the usual case): the live entry re-arms when it
                // fires. Earlier (a recovered lease longer than its
                // duration) needs an entry of its own.
                if rec.lease_deadline < before {
                    arm_lease(wheel, pid, slot, rec, fx);
                }
            }
            let left = rec.life_deadline - now;
            // The lifetime can move earlier (it may have been stretched to
            // cover a lease): then it needs an entry of its own too.
            arm_life(wheel, pid, slot, rec, fx);
            fx.event(EventKind::TokenKeepalive, &p.name, id);
            self.put_change(p, slot, fx);
            Ok(left)
        })
    }

    /// TOKEN.UNBLOCK: assigned → free; the lifetime goes on.
    pub fn unblock(&self, pool: &[u8], id: TokenId) -> Result<(), TokenError> {
        self.with_shard(pool, |s, now, fx| {
            let (pid, slot) = Self::find(s, pool, id)?;
            let p = s.pools.get_mut(&pid).ok_or(TokenError::NoToken)?;
            let rec = p.get_mut(slot).ok_or(TokenError::NoToken)?;
            if !rec.is_assigned() {
                return Err(TokenError::NotAssigned);
            }
            rec.lease_deadline = 0;
            p.push_free(slot);
            let name = p.name.clone();
            fx.event(EventKind::TokenUnblock, &name, id);
            self.put_change(p, slot, fx);
            self.serve_waiters(s, pid, now, fx);
            Ok(())
        })
    }

    /// TOKEN.DEL: deletes a live or remembered-expired token.
    pub fn del(&self, pool: &[u8], id: TokenId) -> bool {
        self.with_shard(pool, |s, _, fx| {
            let Some(&pid) = s.names.get(pool) else { return false };
            let Some(p) = s.pools.get_mut(&pid) else { return false };
            let name = p.name.clone();
            let found = if let Some(slot) = p.find(id) {
                p.remove(slot);
                self.shared.live_tokens.fetch_sub(1, Ordering::Relaxed);
                fx.event(EventKind::TokenDel, &name, id);
                true
            } else if p.expired.remove(&id).is_some() {
                self.forgot(s, 1);
                true
            } else {
                false
            };
            if found {
                fx.change(|| Change::Del { pool: name, token: id });
                Self::drop_if_empty(s, pid);
            }
            found
        })
    }

    /// TOKEN.DELEXPIRED: forgets every remembered expired token of the pool.
    pub fn del_expired(&self, pool: &[u8]) -> u64 {
        self.with_shard(pool, |s, _, fx| {
            let Some(&pid) = s.names.get(pool) else { return 0 };
            let Some(p) = s.pools.get_mut(&pid) else { return 0 };
            let n = p.expired.len();
            p.expired.clear();
            let name = p.name.clone();
            fx.change(|| Change::ForgetAll { pool: name });
            self.forgot(s, n);
            Self::drop_if_empty(s, pid);
            n as u64
        })
    }

    /// TOKEN.INFO.
    pub fn info(&self, pool: &[u8], id: TokenId) -> Result<TokenInfo, TokenError> {
        self.with_shard(pool, |s, now, _| {
            let (pid, slot) = Self::find(s, pool, id)?;
            let r = s.pools.get(&pid).and_then(|p| p.get(slot)).ok_or(TokenError::NoToken)?;
            Ok(TokenInfo {
                assigned: r.is_assigned(),
                lifetime_left_ms: r.life_deadline.saturating_sub(now),
                lease_left_ms: r.is_assigned().then(|| r.lease_deadline.saturating_sub(now)),
                times_acquired: r.times_acquired as u64,
            })
        })
    }

    /// TOKEN.STATS.
    pub fn stats(&self, pool: &[u8]) -> PoolStats {
        self.with_shard(pool, |s, _, _| {
            let Some(p) = s.names.get(pool).and_then(|pid| s.pools.get(pid)) else {
                return PoolStats::default();
            };
            let total = p.len() as u64;
            let free = p.free.len() as u64;
            PoolStats {
                total,
                free,
                assigned: total - free,
                expired_remembered: p.expired.len() as u64,
                blocked_waiters: p.live_waiters() as u64,
            }
        })
    }

    /// Server-wide counts: (pools, live tokens, assigned, remembered expired, blocked).
    pub fn totals(&self) -> (u64, u64, u64, u64, u64) {
        let mut t = (0, 0, 0, 0, 0);
        for cell in self.shared.shards.iter() {
            let g = lock(&cell.state);
            for p in g.pools.values() {
                t.0 += 1;
                t.1 += p.len() as u64;
                t.2 += (p.len() - p.free.len()) as u64;
                t.3 += p.expired.len() as u64;
                t.4 += p.live_waiters() as u64;
            }
        }
        t
    }

    /// Checks every invariant of every pool (tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut live = 0;
        for cell in self.shared.shards.iter() {
            let g = lock(&cell.state);
            let mut remembered = 0;
            for p in g.pools.values() {
                p.check()?;
                live += p.len() as u64;
                remembered += p.expired.len();
            }
            if remembered != g.remembered {
                return Err(format!("remembered count {} != {}", g.remembered, remembered));
            }
        }
        let total: usize = self.shared.shards.iter().map(|c| lock(&c.state).remembered).sum();
        if total != self.shared.remembered_total.load(Ordering::Relaxed) {
            return Err(format!(
                "remembered total {} != {total}",
                self.shared.remembered_total.load(Ordering::Relaxed)
            ));
        }
        if live != self.live_tokens() {
            return Err(format!("live token count {} != {}", self.live_tokens(), live));
        }
        Ok(())
    }

    /// Loads state recovered from the backing store (start-up, before any
    /// client is served and before the expiry drivers run). Nothing fires
    /// here: deadlines that passed while the server was down fire on the
    /// drivers' first run, in deadline order — past-due entries fire in the
    /// order they were armed, so those (only those) are sorted first.
    pub fn restore(&self, items: Vec<Restored>) {
        let now = self.shared.clock.now_ms();
        let due_of = |r: &Restored| match r {
            Restored::Live { record, .. } => record.due(),
            Restored::Expired { forget_at, .. } => *forget_at,
        };
        let (mut past, future): (Vec<_>, Vec<_>) = items.into_iter().partition(|r| due_of(r) <= now);
        past.sort_by_key(due_of);
        let items: Vec<Restored> = past.into_iter().chain(future).collect();
        // Slots named beyond this are not honoured (an old token names a
        // random one of 2^32): such tokens go to any vacant slot instead.
        let bound = items.len().saturating_mul(2).saturating_add(RESTORE_SLOT_SLACK).min(pool::MAX_SLOTS);
        // Tokens that name a vacant slot get it first; the others
        // (misplaced) fill the gaps afterwards. A token due in the future is
        // armed as it is placed (its slot is in cache then); past-due ones
        // are armed last, in the order above, so that they fire in deadline
        // order whichever pass placed them.
        // The slab of each pool is sized once for the slots its tokens name,
        // and each token's slot is prefetched a few tokens ahead: the slots
        // come in random order, and each would be a cache and TLB miss.
        let mut spans: HashMap<&Bytes, usize> = HashMap::new();
        for item in &items {
            if let Restored::Live { pool, token, .. } = item {
                let named = token::slot_of(*token, self.slot_key()) as usize;
                if named < bound {
                    let e = spans.entry(pool).or_default();
                    *e = (*e).max(named + 1);
                }
            }
        }
        for (pool, span) in spans {
            let mut g = self.lock_shard_of(pool);
            let pid = self.pool_id(&mut g, pool);
            if let Some(p) = g.pools.get_mut(&pid) {
                p.presize(span);
            }
        }
        let mut unplaced = Vec::new();
        let mut past_due = Vec::new();
        // Places a token in `slot`, or else in the one it names: None if
        // that one cannot be had; Some(true) if the token is past due (it
        // is left for the ordered arming below), Some(false) once armed.
        let place = |s: &mut Shard, pid: PoolId, slot: Option<SlotIdx>, id: TokenId, record: &Record| -> Option<bool> {
            let Shard { pools, wheel, .. } = s;
            let p = pools.get_mut(&pid)?;
            let slot = match slot {
                Some(slot) => slot,
                None => p.claim(id, bound)?,
            };
            p.put(slot, id, Record { armed: 0, lease_armed: 0, ..*record });
            self.shared.live_tokens.fetch_add(1, Ordering::Relaxed);
            let r = p.get_mut(slot)?;
            if record.due() > now {
                self.arm_restored(wheel, pid, slot, r);
                return Some(false);
            }
            Some(true)
        };
        self.restore_runs(&items, |s, pid, i, item| match item {
            Restored::Live { pool, token: id, record } => {
                if let (Some(p), Some(Restored::Live { pool: next_pool, token: next, .. })) =
                    (s.pools.get(&pid), items.get(i + RESTORE_PREFETCH))
                    && next_pool == pool
                {
                    p.prefetch_named(*next);
                }
                if s.pools.get(&pid).is_some_and(|p| !p.contains(*id)) {
                    match place(s, pid, None, *id, record) {
                        None => unplaced.push(i),
                        Some(true) => past_due.push(i),
                        Some(false) => {}
                    }
                }
            }
            Restored::Expired { token: id, forget_at, .. } => {
                let Shard { pools, forget, remembered, .. } = s;
                if let Some(p) = pools.get_mut(&pid)
                    && p.expired.insert(*id, *forget_at).is_none()
                {
                    forget.push_back((*forget_at, pid, *id));
                    *remembered += 1;
                    self.shared.remembered_total.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut cursors: HashMap<PoolId, usize> = HashMap::new();
        for i in unplaced {
            let Restored::Live { pool, token: id, record } = &items[i] else { continue };
            let mut g = self.lock_shard_of(pool);
            let pid = self.pool_id(&mut g, pool);
            let Some(p) = g.pools.get_mut(&pid) else { continue };
            if p.contains(*id) {
                continue;
            }
            let slot = p.claim_any(cursors.entry(pid).or_default());
            if place(&mut g, pid, Some(slot), *id, record) == Some(true) {
                past_due.push(i);
            }
        }
        past_due.sort_unstable();
        for i in past_due {
            let Restored::Live { pool, token: id, .. } = &items[i] else { continue };
            let mut g = self.lock_shard_of(pool);
            let Some(&pid) = g.names.get(pool) else { continue };
            let Shard { pools, wheel, .. } = &mut *g;
            if let Some(p) = pools.get_mut(&pid)
                && let Some(slot) = p.find(*id)
                && let Some(r) = p.get_mut(slot)
            {
                self.arm_restored(wheel, pid, slot, r);
            }
        }
        for cell in self.shared.shards.iter() {
            for p in lock(&cell.state).pools.values_mut() {
                p.relist_vacant();
            }
        }
        // The forget queues must be in forget-time order.
        for cell in self.shared.shards.iter() {
            lock(&cell.state).forget.sort_by_key(|e| e.0);
        }
    }
}

impl Store {
    /// Locks the shard `pool` lives in, as it is (recovery: nothing is
    /// fired, nothing published).
    fn lock_shard_of(&self, pool: &[u8]) -> MutexGuard<'_, Shard> {
        lock(&self.shared.shards[self.shard_index(pool)].state)
    }

    /// Arms a recovered token's deadlines: the lease first, which ends no
    /// later than the lifetime. Nothing is published during recovery (no
    /// journal yet), so the effects are a throwaway.
    fn arm_restored(&self, wheel: &mut Wheel<(PoolId, SlotIdx)>, pid: PoolId, slot: SlotIdx, r: &mut Record) {
        let mut fx =
            Effects { notifier: &self.shared.notifier, events: Vec::new(), changes: None, earliest_armed: u64::MAX };
        if r.is_assigned() {
            arm_lease(wheel, pid, slot, r, &mut fx);
        }
        arm_life(wheel, pid, slot, r, &mut fx);
    }

    /// Calls `f` on each item with its pool's shard locked and the pool's
    /// id (the pool is made if new), taking one lock per run of items of the
    /// same pool (recovery reads pool by pool, so runs are long).
    fn restore_runs(&self, items: &[Restored], mut f: impl FnMut(&mut Shard, PoolId, usize, &Restored)) {
        let mut i = 0;
        while i < items.len() {
            let pool = items[i].pool();
            let end = items[i..].iter().position(|r| r.pool() != pool).map_or(items.len(), |n| i + n);
            let mut g = self.lock_shard_of(pool);
            let pid = self.pool_id(&mut g, pool);
            for (j, item) in items.iter().enumerate().take(end).skip(i) {
                f(&mut g, pid, j, item);
            }
            i = end;
        }
    }
}

/// Pools with fewer slots than this are not prefetched: 2 MiB of slots,
/// which stay in cache between the commands that touch them.
const PREFETCH_MIN_SLOTS: usize = 1 << 15;

/// How many tokens ahead recovery prefetches the slot a token names.
const RESTORE_PREFETCH: usize = 16;

/// Slots a recovered token may name beyond twice the number of recovered
/// items (see [`Store::restore`]): 64 bytes each at most, 4 MiB.
const RESTORE_SLOT_SLACK: usize = 65_536;

/// State recovered from the backing store.
#[derive(Debug, Clone)]
pub enum Restored {
    Live { pool: Bytes, token: TokenId, record: Record },
    Expired { pool: Bytes, token: TokenId, forget_at: u64 },
}

impl Restored {
    /// The pool it belongs to.
    pub fn pool(&self) -> &Bytes {
        match self {
            Restored::Live { pool, .. } | Restored::Expired { pool, .. } => pool,
        }
    }
}

/// Locks a shard. A panic while holding the lock would be a bug; we still
/// keep serving rather than poisoning every later command.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
