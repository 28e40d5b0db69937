//! Several operations as one (MULTI/EXEC): the shards they touch are
//! locked together, in shard order, for the whole transaction.
//!
//! No other command sees a state between the operations, whichever pools
//! and shards they touch; taking the locks in one global order (ascending
//! shard index) means two transactions can never each hold a lock the other
//! waits for. The changes of the whole transaction go to the journal as one
//! unit, which the backing store writes in one atomic step; events are
//! published after the locks are released, in order.

use super::census::totals_of;
use super::expiry::timers_in;
use super::fire::Firing;
use super::keys::{PoolUsage, keys_in_shard, scan_shard, usage_in_shard};
use super::pool::Pool;
use super::waiting::Acquired;
use super::{Effects, ExpiryTotals, Journal, PoolStats, Shard, Store, TokenError, TokenInfo, Totals, lock};
use crate::token::TokenId;
use bytes::Bytes;
use std::sync::{Arc, MutexGuard};

/// An operation named a pool whose shard the transaction did not lock: the
/// caller declared its pools wrongly (a bug, reported as an error reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLocked;

#[cfg(debug_assertions)]
thread_local! {
    /// Whether this thread holds a transaction's shard locks.
    static HOLDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Debug builds: panics if this thread holds a transaction's shard locks.
/// Locking one of them again would wait forever for itself, and locking
/// another would take locks out of the one order: whatever a command reads
/// inside EXEC, it reads through the [`Txn`].
pub(super) fn assert_no_txn_here() {
    #[cfg(debug_assertions)]
    assert!(!HOLDING.get(), "a shard locked by the thread that holds a transaction's locks: read it through the Txn");
}

fn set_holding(_on: bool) {
    #[cfg(debug_assertions)]
    HOLDING.set(_on);
}

/// The locked shards of a transaction and what its operations did.
pub struct Txn<'a> {
    store: &'a Store,
    journal: Option<&'a Arc<dyn Journal>>,
    /// (shard index, guard, earliest deadline armed in it), by index.
    shards: Vec<(usize, MutexGuard<'a, Shard>, u64)>,
    fx: Effects<'a>,
    now: u64,
    /// Pools deleted by the transaction, freed once it ends.
    freed: Vec<Pool>,
}

impl Store {
    /// Locks the shards of `pools` (every shard with `all`, for commands
    /// that read the whole store) and brings their expiries up to date.
    pub fn txn<'a, 'p>(&'a self, pools: impl IntoIterator<Item = &'p [u8]>, all: bool) -> Txn<'a> {
        let pools: Vec<&[u8]> = if all { Vec::new() } else { pools.into_iter().collect() };
        let mut idx: Vec<usize> = if all {
            (0..self.shared.shards.len()).collect()
        } else {
            pools.iter().map(|p| self.shard_index(p)).collect()
        };
        idx.sort_unstable();
        idx.dedup();
        // Help with the backlogs before the locks are taken together (a
        // batch per hold, see `Store::with_shard_at`): under them, only
        // what fell due since is left to fire.
        if self.behind() && all {
            idx.iter().for_each(|&i| self.catch_up(i, None));
        } else if self.behind() {
            pools.iter().for_each(|p| self.catch_up(self.shard_index(p), Some(p)));
        }
        let journal = self.shared.journal.get();
        let mut fx = Effects::new(&self.shared.notifier, journal.is_some());
        let mut shards: Vec<_> = idx.into_iter().map(|i| (i, lock(&self.shared.shards[i].state), u64::MAX)).collect();
        set_holding(true);
        // The clock is read once all locks are held: the transaction runs
        // at one instant.
        let now = self.shared.clock.now_ms();
        for (i, g, earliest) in shards.iter_mut() {
            fx.watching = !g.watched.is_empty();
            if !self.run_due(g, now, &mut fx, Firing::Command) {
                if all {
                    self.clear_backlog(g, now, &mut fx, None);
                }
                for p in pools.iter().filter(|p| self.shard_index(p) == *i) {
                    if let Some(pid) = g.pid(p) {
                        self.clear_backlog(g, now, &mut fx, Some(pid));
                    }
                }
            }
            Self::settle_shard_effects(g, &mut fx, earliest, &self.shared.next_version);
        }
        Txn { store: self, journal, shards, fx, now, freed: Vec::new() }
    }

    /// After work on one shard of a transaction: bumps the shard's watched
    /// pools that changed and notes the earliest deadline armed in it.
    fn settle_shard_effects(
        g: &mut Shard,
        fx: &mut Effects,
        earliest: &mut u64,
        versions: &std::sync::atomic::AtomicU64,
    ) {
        if fx.watching {
            g.bump_watched(&mut fx.touched, versions);
        }
        *earliest = (*earliest).min(std::mem::replace(&mut fx.earliest_armed, u64::MAX));
    }
}

impl<'a> Txn<'a> {
    /// Runs `f` on the shard of `pool`.
    fn on<R>(
        &mut self,
        pool: &[u8],
        f: impl FnOnce(&Store, &mut Shard, u64, &mut Effects) -> R,
    ) -> Result<R, NotLocked> {
        let idx = self.store.shard_index(pool);
        let i = self.shards.binary_search_by_key(&idx, |(i, _, _)| *i).map_err(|_| NotLocked)?;
        let (_, g, earliest) = &mut self.shards[i];
        self.fx.watching = !g.watched.is_empty();
        let r = f(self.store, g, self.now, &mut self.fx);
        Store::settle_shard_effects(g, &mut self.fx, earliest, &self.store.shared.next_version);
        Ok(r)
    }

    /// TOKEN.GEN.
    pub fn gen_tokens(
        &mut self,
        pool: &[u8],
        lifetime_ms: Option<u64>,
        count: u64,
    ) -> Result<Result<Vec<TokenId>, TokenError>, NotLocked> {
        self.on(pool, |_, _, _, _| ())?;
        if let Err(e) = self.store.reserve_tokens(count) {
            return Ok(Err(e));
        }
        if count == 0 {
            return Ok(Ok(Vec::new()));
        }
        let mut stock = super::ops::GenStock::default();
        self.on(pool, |st, s, now, fx| Ok(st.op_gen(s, now, fx, pool, lifetime_ms, count, &mut stock)))
    }

    /// TOKEN.IMPORT.
    pub fn import(
        &mut self,
        pool: &[u8],
        id: TokenId,
        life_ms: u64,
        lease_ms: Option<u64>,
    ) -> Result<Result<bool, TokenError>, NotLocked> {
        self.on(pool, |_, _, _, _| ())?;
        if let Err(e) = self.store.reserve_tokens(1) {
            return Ok(Err(e));
        }
        let added = self.on(pool, |st, s, now, fx| st.op_import(s, now, fx, pool, id, life_ms, lease_ms))?;
        if !added {
            self.store.shared.live_tokens.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Ok(added))
    }

    /// TOKEN.ACQUIRE; a transaction never blocks (as BLPOP inside MULTI).
    pub fn acquire(&mut self, pool: &[u8], lease_ms: Option<u64>) -> Result<Acquired, NotLocked> {
        self.on(pool, |st, s, now, fx| st.op_acquire(s, now, fx, pool, lease_ms, false))
    }

    /// TOKEN.KEEPALIVE.
    pub fn keepalive(&mut self, pool: &[u8], id: TokenId) -> Result<Result<u64, TokenError>, NotLocked> {
        self.on(pool, |st, s, now, fx| st.op_keepalive(s, now, fx, pool, id))
    }

    /// TOKEN.UNBLOCK.
    pub fn unblock(&mut self, pool: &[u8], id: TokenId) -> Result<Result<(), TokenError>, NotLocked> {
        self.on(pool, |st, s, now, fx| st.op_unblock(s, now, fx, pool, id))
    }

    /// TOKEN.DEL.
    pub fn del(&mut self, pool: &[u8], id: TokenId) -> Result<bool, NotLocked> {
        self.on(pool, |st, s, _, fx| st.op_del(s, fx, pool, id))
    }

    /// TOKEN.DELEXPIRED.
    pub fn del_expired(&mut self, pool: &[u8]) -> Result<u64, NotLocked> {
        self.on(pool, |st, s, _, fx| st.op_del_expired(s, fx, pool))
    }

    /// TOKEN.INFO.
    pub fn info(&mut self, pool: &[u8], id: TokenId) -> Result<Result<TokenInfo, TokenError>, NotLocked> {
        self.on(pool, |_, s, now, _| Store::op_info(s, now, pool, id))
    }

    /// TOKEN.STATS.
    pub fn stats(&mut self, pool: &[u8]) -> Result<PoolStats, NotLocked> {
        self.on(pool, |_, s, _, _| Store::op_stats(s, pool))
    }

    /// Counts over the whole store: only when every shard is locked.
    pub fn totals(&self) -> Result<Totals, NotLocked> {
        self.all_locked()?;
        Ok(totals_of(self.shards.iter().map(|(_, g, _)| &**g)))
    }

    /// For what reads the whole store: every shard must be locked.
    fn all_locked(&self) -> Result<(), NotLocked> {
        if self.shards.len() == self.store.shared.shards.len() { Ok(()) } else { Err(NotLocked) }
    }

    /// Pending timers over the whole store (INFO): only when every shard
    /// is locked.
    pub fn pending_timers(&self) -> Result<usize, NotLocked> {
        self.all_locked()?;
        Ok(self.shards.iter().map(|(_, g, _)| timers_in(g)).sum())
    }

    /// [`Store::expiry_totals`] from the locked shards (INFO, CONFIG
    /// RESETSTAT): only when every shard is locked. The store's own would
    /// lock them again, which this thread cannot.
    pub fn expiry_totals(&self) -> Result<ExpiryTotals, NotLocked> {
        self.all_locked()?;
        let mut lateness = crate::hist::Hist::default();
        for (_, g, _) in &self.shards {
            lateness.merge(&g.lateness);
        }
        Ok(self.store.expiry_totals_with(lateness))
    }

    /// How many shards the transaction holds.
    pub(super) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Runs `f` on the `i`-th locked shard.
    pub(super) fn on_shard<R>(&mut self, i: usize, f: impl FnOnce(&Store, &mut Shard, u64, &mut Effects) -> R) -> R {
        let (_, g, earliest) = &mut self.shards[i];
        self.fx.watching = !g.watched.is_empty();
        let r = f(self.store, g, self.now, &mut self.fx);
        Store::settle_shard_effects(g, &mut self.fx, earliest, &self.store.shared.next_version);
        r
    }

    /// DEL / UNLINK of one pool.
    pub fn drop_pool(&mut self, pool: &[u8]) -> Result<bool, NotLocked> {
        let p = self.on(pool, |st, s, _, fx| st.op_drop_pool(s, fx, pool))?;
        let existed = p.is_some();
        // Freed when the transaction ends is soon enough (and off the locks).
        self.freed.extend(p);
        Ok(existed)
    }

    /// EXISTS of one pool.
    pub fn exists(&mut self, pool: &[u8]) -> Result<bool, NotLocked> {
        self.on(pool, |_, s, _, _| s.pid(pool).is_some())
    }

    /// MEMORY USAGE of one pool.
    pub fn memory_usage(&mut self, pool: &[u8]) -> Result<Option<PoolUsage>, NotLocked> {
        self.on(pool, |_, s, _, _| usage_in_shard(s, pool))
    }

    /// KEYS over every shard (all must be locked).
    pub fn keys(&self, pattern: &[u8]) -> Result<Vec<Bytes>, NotLocked> {
        self.all_locked()?;
        let mut out = Vec::new();
        for (_, g, _) in &self.shards {
            keys_in_shard(g, pattern, &mut out);
        }
        Ok(out)
    }

    /// SCAN inside a transaction: every matching pool in one reply (every
    /// shard is locked, so there is no later call to continue from).
    pub fn scan(&self, pattern: Option<&[u8]>) -> Result<Vec<Bytes>, NotLocked> {
        self.all_locked()?;
        let mut out = Vec::new();
        for (_, g, _) in &self.shards {
            scan_shard(g, 0, usize::MAX, pattern, &mut out);
        }
        Ok(out)
    }

    /// Whether `pool` is still at the version WATCH saw.
    pub fn unchanged_since(&mut self, pool: &[u8], version: u64) -> Result<bool, NotLocked> {
        self.on(pool, |_, s, _, _| s.watched.get(pool).is_some_and(|w| w.1 == version))
    }
}

impl Drop for Txn<'_> {
    /// Ends the transaction: its changes go to the journal as one unit
    /// (still under every lock), the locks are released, the drivers of
    /// shards with earlier deadlines are woken and the events published.
    fn drop(&mut self) {
        self.store.append(self.journal, &mut self.fx);
        let wake: Vec<(usize, u64)> = self.shards.drain(..).map(|(i, _g, earliest)| (i, earliest)).collect();
        set_holding(false);
        for (i, earliest) in wake {
            self.store.wake_driver(i, earliest);
        }
        self.store.shared.notifier.emit(&self.fx.events);
        for p in self.freed.drain(..) {
            super::keys::dispose(p);
        }
    }
}
