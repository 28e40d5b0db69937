//! The token operations. Each is an `op_*` function that works on a shard
//! the caller has locked (with expiries already brought up to date), so
//! that a single command ([`Store::with_shard`]) and a transaction
//! ([`super::Txn`]) run the very same code; the public methods here are the
//! single-command form.

use super::fire::{arm_lease, arm_life};
use super::pool::{Pool, Slot, SlotIdx};
use super::slab::{Spare, Staged};
use super::waiting::{Acquired, Waiter, Waiting};
use super::{Change, Effects, PoolId, PoolStats, Record, Shard, Store, TokenError, TokenInfo};
use crate::notify::EventKind;
use crate::token::{self, TokenId};
use bytes::Bytes;
use rand::RngExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// What a GEN needs that can be made before its shard is locked: its
/// tokens' random bits and, for a big one, slab chunks already faulted in,
/// or, when the pool's slab grows past a chunk, the new slots themselves.
/// Drawing 16 random bytes a token, the kernel zeroing fresh pages and
/// writing each slot were most of a GEN COUNT 100000's hold of the lock;
/// what is left under it is a record per slot, written in order, and a
/// wheel entry per token.
#[derive(Default)]
pub(super) struct GenStock {
    /// 128 random bits per token, in the vector that becomes the GEN's
    /// reply (no other allocation).
    bits: Vec<TokenId>,
    spare: Spare,
    /// A GEN that makes the slab grow by more than a chunk gets its slots
    /// made here, with the key of the pool they were made for: then `bits`
    /// hold the tokens themselves.
    staged: Option<(Staged, u64)>,
    /// Room for those tokens' wheel entries, faulted in.
    run: Vec<(u64, (PoolId, SlotIdx))>,
}

/// GENs of fewer tokens than this get no [`GenStock`]: a few milliseconds
/// of work at most, in one go.
const GEN_STOCK_MIN: u64 = 4096;

/// The niceness of the thread that makes a GEN's stock. Faulting in a
/// fresh 2 MiB huge page is one uninterruptible step for the thread that
/// does it (4.4 ms on a VM whose host backs guest memory on first touch,
/// 0.1 ms once backed): on the connection's thread, every client of that
/// thread waited for each chunk. On a thread of its own at equal priority,
/// the scheduler still let it finish its slice first (a probe's worst wait
/// 4.6-6.6 ms); at nice 10 a request preempts it at once (3.2-4.6 ms, the
/// VM's floor), and the stock still gets a tenth of a saturated core.
const STOCK_NICE: libc::c_int = 10;

/// Threads making a GEN's stock now (see [`making_stock`]).
static STOCK_MAKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether a thread of the process is making a GEN's stock.
pub fn making_stock() -> bool {
    STOCK_MAKERS.load(std::sync::atomic::Ordering::Relaxed) > 0
}

fn below_normal_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: sets the calling thread's own niceness (Linux applies
    // PRIO_PROCESS with who 0 to the calling thread); failure leaves it.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, STOCK_NICE);
    }
}

/// The stock of a GEN of `count` tokens: random bits, and the slots or
/// chunks that `plan` ([`Store::gen_plan`]) says it will need.
fn make_stock(count: usize, ((chunks, last), stage): ((usize, usize), Option<(usize, u64)>)) -> GenStock {
    let mut bits: Vec<TokenId> = vec![0; count];
    rand::rng().fill(&mut bits[..]);
    let mut stock = GenStock::default();
    match stage {
        Some((base, key)) => {
            // The slots themselves, as GEN would make them.
            let mut staged = Staged::new(base, bits.len());
            for (i, b) in bits.iter_mut().enumerate() {
                *b = token::with_slot(b.to_le_bytes(), (base + i) as SlotIdx, key);
                staged.set(i, Slot { id: *b, rec: Record::stored(0, 0, 0, 0, 0) });
            }
            stock.staged = Some((staged, key));
            // Written once so that its pages are there (zeros would be
            // mapped without being touched).
            stock.run = vec![(u64::MAX, (0, 0)); bits.len()];
            stock.run.clear();
        }
        None => {
            for k in 0..chunks {
                stock.spare.add_faulted(k, last);
            }
        }
    }
    stock.bits = bits;
    stock
}

#[cfg(test)]
thread_local! {
    /// GENs on this thread whose slots made outside the lock went in.
    pub(super) static ADOPTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// The stock [`Store::stock_gen`] made for the GEN this thread runs
    /// next (a command runs on one thread, without awaiting, right after
    /// its front end awaited the stock).
    static STOCK: std::cell::Cell<Option<GenStock>> = const { std::cell::Cell::new(None) };
}

/// Pools with fewer slots than this are not prefetched: 2 MiB of slots,
/// which stay in cache between the commands that touch them.
const PREFETCH_MIN_SLOTS: usize = 1 << 15;

impl Store {
    /// TOKEN.GEN: makes `count` new free tokens with `lifetime_ms` (or the default).
    pub fn gen_tokens(&self, pool: &[u8], lifetime_ms: Option<u64>, count: u64) -> Result<Vec<TokenId>, TokenError> {
        self.reserve_tokens(count)?;
        if count == 0 {
            return Ok(Vec::new());
        }
        // A GEN run without a stock (a small one, or one from a front end
        // that makes none) draws and maps under the lock.
        let mut stock = STOCK.take().unwrap_or_default();
        let ids = self.with_shard(pool, |s, now, fx| self.op_gen(s, now, fx, pool, lifetime_ms, count, &mut stock));
        // Chunks not used are unmapped here, after the lock.
        drop(stock);
        Ok(ids)
    }

    /// Counts `count` more live tokens against `--max-tokens`, before they
    /// are made, so that concurrent GENs cannot overshoot the limit.
    pub(super) fn reserve_tokens(&self, count: u64) -> Result<(), TokenError> {
        let live = &self.shared.live_tokens;
        if live.fetch_add(count, Ordering::Relaxed).saturating_add(count) > self.shared.config.max_tokens {
            live.fetch_sub(count, Ordering::Relaxed);
            return Err(TokenError::Oom);
        }
        Ok(())
    }

    /// Makes the stock of a GEN of `count` tokens into `pool` ahead of it,
    /// for the GEN this thread runs next. A front end awaits this just
    /// before running a big GEN: the stock is milliseconds of CPU, most of
    /// it the kernel zeroing fresh pages, which would hold up every other
    /// connection served by this thread (the only one when the server has
    /// one core). It is made on a thread of its own (see `STOCK_NICE`),
    /// which a request arriving meanwhile preempts.
    /// Returns whether it made one (a GEN too small for a stock gets none).
    pub async fn stock_gen(&self, pool: &[u8], count: u64) -> bool {
        if count < GEN_STOCK_MIN {
            return false;
        }
        let plan = self.gen_plan(pool, count as usize);
        let made = tokio::task::spawn_blocking(move || {
            // A thread of its own at a lower priority (see `STOCK_NICE`);
            // the blocking pool's thread only waits for it, which also
            // keeps a paused clock from jumping meanwhile (tests).
            let maker = std::thread::Builder::new().name("tokend-stock".into()).spawn(move || {
                below_normal_priority();
                let _counted = super::Working::new(&STOCK_MAKERS);
                make_stock(count as usize, plan)
            });
            maker.ok()?.join().ok()
        });
        // Without a stock (no thread could start) the GEN makes it all under
        // the lock, as a small one does.
        let Ok(Some(stock)) = made.await else { return false };
        STOCK.set(Some(stock));
        true
    }

    /// Drops a stock that [`Store::stock_gen`] made and no GEN used (the
    /// GEN was queued in a transaction, or failed before it ran).
    pub fn discard_stock() {
        STOCK.take();
    }

    /// How a GEN of `count` tokens into `pool` would grow its slab, as
    /// things are now (a look under the lock that fires nothing): the
    /// chunks it would add ([`super::slab::Slab::chunks_wanted`]), and
    /// where its slots could be made outside the lock ([`Pool::stage_at`]).
    /// The GEN may find things changed: then it makes what is missing
    /// under the lock, and what it does not use is unmapped after it.
    fn gen_plan(&self, pool: &[u8], count: usize) -> ((usize, usize), Option<(usize, u64)>) {
        let g = super::lock(&self.shared.shards[self.shard_index(pool)].state);
        match g.pid(pool).and_then(|pid| g.pools.get(&pid)) {
            Some(p) => (p.chunks_wanted(count), p.stage_at(count)),
            None => {
                let fresh = Pool::new(pool, self.slot_key());
                (fresh.chunks_wanted(count), fresh.stage_at(count))
            }
        }
    }

    /// GEN on a locked shard; the tokens were reserved ([`Store::reserve_tokens`]).
    /// What `stock` holds is used first.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn op_gen(
        &self,
        s: &mut Shard,
        now: u64,
        fx: &mut Effects,
        pool: &[u8],
        lifetime_ms: Option<u64>,
        count: u64,
        stock: &mut GenStock,
    ) -> Vec<TokenId> {
        let lifetime = lifetime_ms.unwrap_or(self.shared.config.default_lifetime_ms);
        let pid = self.pool_id(s, pool);
        let Shard { pools, wheel, rng, .. } = s;
        let Some(p) = pools.get_mut(&pid) else { return Vec::new() };
        // The stock's random bits become the ids in place.
        let mut out = std::mem::take(&mut stock.bits);
        out.truncate(count as usize);
        // The pool's name for the changes, copied once (and only if they
        // are kept: most GENs make one token).
        let name = if fx.keeps_changes() { Bytes::copy_from_slice(&p.name) } else { Bytes::new() };
        // Slots made outside the lock for the pool as it is now: only their
        // records are left to set.
        if let Some((staged, key)) = stock.staged.as_mut()
            && staged.len() == out.len()
            && let Some(first) = p.adopt(staged, *key, &mut stock.spare)
        {
            #[cfg(test)]
            ADOPTED.set(ADOPTED.get() + 1);
            // One record for all: each slot is written once, in order, and
            // the wheel entries need no slot.
            let rec = Record::new_free(now, lifetime);
            let due = rec.life_deadline.max(1);
            p.set_new_run(first, out.len(), Record { armed: due, ..rec });
            let mut run = std::mem::take(&mut stock.run);
            run.clear();
            run.extend((first..first + out.len() as SlotIdx).map(|slot| (due, (pid, slot))));
            wheel.insert_run(due, run);
            fx.earliest_armed = fx.earliest_armed.min(due);
            if fx.notifier.wants(EventKind::TokenGen) {
                out.iter().for_each(|&id| fx.event(EventKind::TokenGen, &p.name, id));
            }
            if fx.keeps_changes() {
                out.iter().zip(first..).for_each(|(&id, slot)| {
                    fx.change(|| Change::Put { pool: name.clone(), token: id, record: rec, slot })
                });
            }
            s.live += out.len();
            self.serve_waiters(s, pid, now, fx);
            return out;
        }
        let drawn = out.len();
        out.reserve_exact(count as usize - drawn);
        p.reserve(count as usize, &mut stock.spare);
        if count > 1 {
            wheel.reserve_at(now.saturating_add(lifetime), count as usize);
        }
        for i in 0..count as usize {
            let slot = p.alloc_slot_from(&mut stock.spare);
            let mut random = out.get(i).map_or_else(|| rng.random(), |b| b.to_le_bytes());
            let id = loop {
                let id = p.new_token(random, slot);
                // 2^-90 per pair (the slot alone rules out every token
                // placed where it names); cheap to rule out.
                if !p.contains(id) && !p.is_expired(id) {
                    break id;
                }
                random = rng.random();
            };
            let rec = Record::new_free(now, lifetime);
            p.put(slot, id, rec);
            if let Some(r) = p.get_mut(slot) {
                arm_life(wheel, pid, slot, r, fx);
            }
            fx.event(EventKind::TokenGen, &p.name, id);
            fx.change(|| Change::Put { pool: name.clone(), token: id, record: rec, slot });
            match out.get_mut(i) {
                Some(o) => *o = id,
                None => out.push(id),
            }
        }
        s.live += out.len();
        self.serve_waiters(s, pid, now, fx);
        out
    }

    /// TOKEN.IMPORT: puts a token made elsewhere (the old service's) into
    /// `pool` with `life_ms` of lifetime left and, if `lease_ms` is given,
    /// assigned with that much lease left. `Ok(false)`: the pool has it
    /// already (live, or remembered as expired), and nothing changes, so
    /// that an import can be run again.
    pub fn import(&self, pool: &[u8], id: TokenId, life_ms: u64, lease_ms: Option<u64>) -> Result<bool, TokenError> {
        self.reserve_tokens(1)?;
        let added = self.with_shard(pool, |s, now, fx| self.op_import(s, now, fx, pool, id, life_ms, lease_ms));
        if !added {
            self.shared.live_tokens.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(added)
    }

    /// IMPORT on a locked shard; the token was reserved.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn op_import(
        &self,
        s: &mut Shard,
        now: u64,
        fx: &mut Effects,
        pool: &[u8],
        id: TokenId,
        life_ms: u64,
        lease_ms: Option<u64>,
    ) -> bool {
        if s.pool(pool).is_some_and(|p| p.contains(id) || p.is_expired(id)) {
            return false;
        }
        let pid = self.pool_id(s, pool);
        let cfg = &self.shared.config;
        let Shard { pools, wheel, .. } = s;
        let Some(p) = pools.get_mut(&pid) else { return false };
        // The durations KEEPALIVE restarts from are the server's defaults:
        // the old service's were settings, not stored with the token.
        let mut rec = Record::new_free(now, life_ms);
        rec.lifetime = cfg.default_lifetime_ms;
        if let Some(lease) = lease_ms {
            rec.lease = cfg.default_lease_ms;
            rec.lease_deadline = now.saturating_add(lease).max(1);
            // Cover rule: an assigned token never dies before its lease ends.
            rec.life_deadline = rec.life_deadline.max(rec.lease_deadline);
            rec.times_acquired = 1;
        }
        let slot = p.alloc_slot();
        p.put(slot, id, rec);
        if let Some(r) = p.get_mut(slot) {
            arm_life(wheel, pid, slot, r, fx);
            if r.is_assigned() {
                arm_lease(wheel, pid, slot, r, fx);
            }
        }
        fx.event(EventKind::TokenGen, &p.name, id);
        fx.change(|| Change::Put { pool: Bytes::copy_from_slice(&p.name), token: id, record: rec, slot });
        s.live += 1;
        if lease_ms.is_none() {
            self.serve_waiters(s, pid, now, fx);
        }
        true
    }

    /// TOKEN.ACQUIRE: a uniformly random free token, assigned with `lease_ms`
    /// (or the default). With `block` and none free, the caller is queued
    /// (the caller runs the timer).
    pub fn acquire(&self, pool: &[u8], lease_ms: Option<u64>, block: bool) -> Acquired {
        self.with_shard(pool, |s, now, fx| self.op_acquire(s, now, fx, pool, lease_ms, block))
    }

    pub(super) fn op_acquire(
        &self,
        s: &mut Shard,
        now: u64,
        fx: &mut Effects,
        pool: &[u8],
        lease_ms: Option<u64>,
        block: bool,
    ) -> Acquired {
        let lease = lease_ms.unwrap_or(self.shared.config.default_lease_ms);
        let pid = match s.pid(pool) {
            Some(pid) => pid,
            None if block => self.pool_id(s, pool),
            None => return Acquired::Empty,
        };
        let Some(p) = s.pools.get_mut(&pid) else { return Acquired::Empty };
        // Fairness: a newcomer never jumps the queue of blocked clients.
        let queue_empty = p.waiters().all(|w| w.tx.is_closed());
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
        let unit = Arc::new(AtomicU64::new(0));
        p.push_waiter(Waiter { id, lease, tx, unit: unit.clone() });
        Acquired::Wait(Waiting {
            store: self.clone(),
            pool: Bytes::copy_from_slice(&p.name),
            id,
            rx,
            settled: false,
            unit,
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
        let Some(p) = g.pool(pool) else { return };
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
        let pid = s.pid(pool).ok_or(TokenError::NoToken)?;
        let p = s.pools.get(&pid).ok_or(TokenError::NoToken)?;
        match p.find(id) {
            Some(slot) => Ok((pid, slot)),
            None if p.is_expired(id) => Err(TokenError::Expired),
            None => Err(TokenError::NoToken),
        }
    }

    /// TOKEN.KEEPALIVE: restarts the lifetime (and the lease if assigned)
    /// from now; returns the lifetime left in ms.
    pub fn keepalive(&self, pool: &[u8], id: TokenId) -> Result<u64, TokenError> {
        self.with_shard(pool, |s, now, fx| self.op_keepalive(s, now, fx, pool, id))
    }

    pub(super) fn op_keepalive(
        &self,
        s: &mut Shard,
        now: u64,
        fx: &mut Effects,
        pool: &[u8],
        id: TokenId,
    ) -> Result<u64, TokenError> {
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
    }

    /// TOKEN.UNBLOCK: assigned → free; the lifetime goes on.
    pub fn unblock(&self, pool: &[u8], id: TokenId) -> Result<(), TokenError> {
        self.with_shard(pool, |s, now, fx| self.op_unblock(s, now, fx, pool, id))
    }

    pub(super) fn op_unblock(
        &self,
        s: &mut Shard,
        now: u64,
        fx: &mut Effects,
        pool: &[u8],
        id: TokenId,
    ) -> Result<(), TokenError> {
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
    }

    /// TOKEN.DEL: deletes a live or remembered-expired token.
    pub fn del(&self, pool: &[u8], id: TokenId) -> bool {
        self.with_shard(pool, |s, _, fx| self.op_del(s, fx, pool, id))
    }

    pub(super) fn op_del(&self, s: &mut Shard, fx: &mut Effects, pool: &[u8], id: TokenId) -> bool {
        let Some(pid) = s.pid(pool) else { return false };
        let Some(p) = s.pools.get_mut(&pid) else { return false };
        let name = p.name.clone();
        let found = if let Some(slot) = p.find(id) {
            p.remove(slot);
            self.shared.live_tokens.fetch_sub(1, Ordering::Relaxed);
            s.live -= 1;
            fx.event(EventKind::TokenDel, &name, id);
            Some(Some(slot))
        } else if p.forget(id, None) {
            self.forgot(s, 1);
            Some(None)
        } else {
            None
        };
        if let Some(slot) = found {
            fx.change(|| Change::Del { pool: Bytes::copy_from_slice(&name), token: id, slot });
            Shard::drop_if_empty(s, pid, fx);
        }
        found.is_some()
    }

    /// TOKEN.DELEXPIRED: forgets every remembered expired token of the pool.
    pub fn del_expired(&self, pool: &[u8]) -> u64 {
        self.with_shard(pool, |s, _, fx| self.op_del_expired(s, fx, pool))
    }

    pub(super) fn op_del_expired(&self, s: &mut Shard, fx: &mut Effects, pool: &[u8]) -> u64 {
        let Some(pid) = s.pid(pool) else { return 0 };
        let Some(p) = s.pools.get_mut(&pid) else { return 0 };
        let n = p.forget_all();
        let name = p.name.clone();
        fx.change(|| Change::ForgetAll { pool: Bytes::copy_from_slice(&name) });
        self.forgot(s, n);
        Shard::drop_if_empty(s, pid, fx);
        n as u64
    }

    /// TOKEN.INFO.
    pub fn info(&self, pool: &[u8], id: TokenId) -> Result<TokenInfo, TokenError> {
        self.with_shard(pool, |s, now, _| Self::op_info(s, now, pool, id))
    }

    pub(super) fn op_info(s: &Shard, now: u64, pool: &[u8], id: TokenId) -> Result<TokenInfo, TokenError> {
        let (pid, slot) = Self::find(s, pool, id)?;
        let r = s.pools.get(&pid).and_then(|p| p.get(slot)).ok_or(TokenError::NoToken)?;
        Ok(TokenInfo {
            assigned: r.is_assigned(),
            lifetime_left_ms: r.life_deadline.saturating_sub(now),
            lease_left_ms: r.is_assigned().then(|| r.lease_deadline.saturating_sub(now)),
            times_acquired: r.times_acquired as u64,
        })
    }

    /// TOKEN.STATS.
    pub fn stats(&self, pool: &[u8]) -> PoolStats {
        self.with_shard(pool, |s, _, _| Self::op_stats(s, pool))
    }

    pub(super) fn op_stats(s: &Shard, pool: &[u8]) -> PoolStats {
        let Some(p) = s.pool(pool) else {
            return PoolStats::default();
        };
        pool_stats(p)
    }
}

/// A pool's counts.
pub(super) fn pool_stats(p: &Pool) -> PoolStats {
    let total = p.len() as u64;
    let free = p.free.len() as u64;
    PoolStats {
        total,
        free,
        assigned: total - free,
        expired_remembered: p.expired_len() as u64,
        blocked_waiters: p.live_waiters() as u64,
    }
}
