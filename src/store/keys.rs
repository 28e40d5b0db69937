//! Pools as keys: listing them (SCAN, KEYS), looking at one (EXISTS, TYPE,
//! MEMORY USAGE), deleting whole pools (DEL, UNLINK, FLUSHDB).

use super::pool::Pool;
use super::waiting::Handed;
use super::{Change, Effects, PoolId, Shard, Store, lock};
use crate::glob;
use crate::notify::EventKind;
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// What MEMORY USAGE reports of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub bytes: u64,
}

/// A SCAN cursor: the shard, and the scan order number to go on from in it
/// (`seq << SHARD_BITS | shard`; 0 starts and ends, as in Redis).
const SHARD_BITS: u32 = 12;

/// Pools visited per hold of a shard's lock by [`Store::for_each_pool`].
const POOLS_PER_LOCK: usize = 1024;

/// Pools whose slots take more than this are freed on the free thread (a
/// 10M-token pool is 640 MB of slab: unmapping it would hold the request
/// path for tens of milliseconds).
const FREE_INLINE_MAX_SLOTS: usize = 64 * 1024;

/// Frees a detached pool: inline if small, else gradually on the free
/// thread (see [`super::reclaim`]).
pub(super) fn dispose(p: Pool) {
    if p.slot_count() > FREE_INLINE_MAX_SLOTS {
        super::reclaim::later(super::reclaim::Garbage::Pool(p));
    } else {
        drop(p);
    }
}

/// One shard's part of a SCAN: up to `budget` pools from scan number
/// `from`, the matching ones added to `out`; the scan number to go on from,
/// or None when the shard is done.
pub(super) fn scan_shard(
    s: &Shard,
    from: u64,
    budget: usize,
    pattern: Option<&[u8]>,
    out: &mut Vec<Bytes>,
) -> Option<u64> {
    for (seen, (pid, p)) in s.pools.range(from).enumerate() {
        if seen == budget {
            return Some(pid as u64);
        }
        if pattern.is_none_or(|pat| glob::matches(pat, &p.name)) {
            out.push(Bytes::copy_from_slice(&p.name));
        }
    }
    None
}

/// Every pool of a shard whose name matches `pattern`.
pub(super) fn keys_in_shard(s: &Shard, pattern: &[u8], out: &mut Vec<Bytes>) {
    out.extend(s.pools.values().filter(|p| glob::matches(pattern, &p.name)).map(|p| Bytes::copy_from_slice(&p.name)));
}

/// A pool's MEMORY USAGE.
pub(super) fn usage_in_shard(s: &Shard, pool: &[u8]) -> Option<PoolUsage> {
    let p = s.pool(pool)?;
    Some(PoolUsage { bytes: (p.memory_usage() + pool.len()) as u64 })
}

impl Store {
    /// Deletes a whole pool: its tokens (no `expired` events), its
    /// remembered expired tokens, its waiters (answered nil). Returns the
    /// detached pool for the caller to free (see [`dispose`]).
    pub(super) fn op_drop_pool(&self, s: &mut Shard, fx: &mut Effects, pool: &[u8]) -> Option<Pool> {
        let pid = s.pid(pool)?;
        let p = self.detach(s, pid, Handed::Gone)?;
        fx.event(EventKind::PoolDel, &p.name, 0);
        fx.change(|| Change::DropPool { pool: Bytes::copy_from_slice(&p.name) });
        Some(p)
    }

    /// Takes a pool out of its shard with its counts, and answers its
    /// blocked waiters `handed`; the caller frees it (see [`dispose`]).
    fn detach(&self, s: &mut Shard, pid: PoolId, handed: Handed) -> Option<Pool> {
        let mut p = s.unlink_pool(pid)?;
        let live = p.len();
        self.shared.live_tokens.fetch_sub(live as u64, Ordering::Relaxed);
        s.live -= live;
        self.forgot(s, p.expired_len());
        for w in p.waiters_mut().into_iter().flat_map(|q| q.drain(..)) {
            let _ = w.tx.send(handed);
        }
        Some(p)
    }

    /// Forgets every pool `leaving` picks, as if this store never held it:
    /// no event, no change for the backing store (which keeps the pool for
    /// its next owner), blocked waiters answered [`Handed::Moved`]. Cluster
    /// mode: the pools of hash slots this node no longer serves. Returns how
    /// many pools went.
    ///
    /// A WATCH of a pool that leaves (held here or not) fails its EXEC:
    /// another node may change the pool before its slot comes back.
    pub fn evict(&self, leaving: impl Fn(&[u8]) -> bool) -> usize {
        let mut gone = Vec::new();
        for cell in self.shared.shards.iter() {
            let mut g = lock(&cell.state);
            let s = &mut *g;
            for (name, w) in s.watched.iter_mut() {
                if leaving(name) {
                    w.1 = self.shared.next_version.fetch_add(1, Ordering::Relaxed) + 1;
                }
            }
            let pids: Vec<_> = s.pools.iter().filter(|(_, p)| leaving(&p.name)).map(|(pid, _)| pid).collect();
            for pid in pids {
                gone.extend(self.detach(s, pid, Handed::Moved));
            }
        }
        let n = gone.len();
        gone.into_iter().for_each(dispose);
        n
    }

    /// DEL / UNLINK of one pool: true if it existed.
    pub fn drop_pool(&self, pool: &[u8]) -> bool {
        let p = self.with_shard(pool, |s, _, fx| self.op_drop_pool(s, fx, pool));
        p.map(dispose).is_some()
    }

    /// EXISTS of one pool.
    pub fn exists(&self, pool: &[u8]) -> bool {
        self.with_shard(pool, |s, _, _| s.pid(pool).is_some())
    }

    /// MEMORY USAGE of one pool (None: no such pool).
    pub fn memory_usage(&self, pool: &[u8]) -> Option<PoolUsage> {
        self.with_shard(pool, |s, _, _| usage_in_shard(s, pool))
    }

    /// SCAN: about `count` pools from `cursor`, those matching `pattern`;
    /// the next cursor (0 when done). A pool that exists from the first call
    /// to the last is returned exactly once; each call locks one shard at a
    /// time and does O(count) work.
    pub fn scan(&self, cursor: u64, count: usize, pattern: Option<&[u8]>) -> (u64, Vec<Bytes>) {
        let n = self.shared.shards.len() as u64;
        let (mut shard, mut from) = (cursor & ((1 << SHARD_BITS) - 1), cursor >> SHARD_BITS);
        let mut out = Vec::new();
        let budget = count.max(1);
        while shard < n {
            let next = {
                let g = lock(&self.shared.shards[shard as usize].state);
                scan_shard(&g, from, budget, pattern, &mut out)
            };
            match next {
                Some(seq) => return ((seq << SHARD_BITS) | shard, out),
                None => {
                    shard += 1;
                    from = 0;
                    if out.len() >= budget {
                        break;
                    }
                }
            }
        }
        (if shard >= n { 0 } else { shard }, out)
    }

    /// Every pool's name and counts (for `/metrics`), a shard at a time and
    /// at most [`POOLS_PER_LOCK`] pools per hold of a shard's lock, so that
    /// a million pools never hold a shard for long. A pool that exists
    /// throughout is visited exactly once.
    pub fn for_each_pool(&self, mut f: impl FnMut(&Bytes, super::PoolStats)) {
        for cell in self.shared.shards.iter() {
            let mut from = 0;
            loop {
                let next = {
                    let g = lock(&cell.state);
                    let mut next = None;
                    for (seen, (pid, p)) in g.pools.range(from).enumerate() {
                        if seen == POOLS_PER_LOCK {
                            next = Some(pid as u64);
                            break;
                        }
                        f(&Bytes::copy_from_slice(&p.name), super::ops::pool_stats(p));
                    }
                    next
                };
                match next {
                    Some(seq) => from = seq,
                    None => break,
                }
            }
        }
    }

    /// KEYS: every pool matching `pattern` (O(pools), shard by shard).
    pub fn keys(&self, pattern: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        for cell in self.shared.shards.iter() {
            keys_in_shard(&lock(&cell.state), pattern, &mut out);
        }
        out
    }

    /// FLUSHDB: deletes every pool, atomically (all shards locked); how many.
    pub fn flush(&self) -> u64 {
        self.txn(std::iter::empty(), true).flush()
    }
}

impl super::Txn<'_> {
    /// Deletes every pool of every locked shard; how many.
    pub fn flush(&mut self) -> u64 {
        let mut gone = Vec::new();
        for i in 0..self.shard_count() {
            self.on_shard(i, |st, s, _, fx| {
                let names: Vec<Bytes> = s.pools.values().map(|p| Bytes::copy_from_slice(&p.name)).collect();
                for name in names {
                    if let Some(p) = st.op_drop_pool(s, fx, &name) {
                        gone.push(p);
                    }
                }
            });
        }
        let n = gone.len() as u64;
        gone.into_iter().for_each(dispose);
        n
    }
}
