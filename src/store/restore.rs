//! Loading what the backing store kept (start-up, before any client is
//! served and before the expiry drivers run).

use super::fire::{arm_lease, arm_life};
use super::pool::{self, SlotIdx};
use super::{Effects, PoolId, Record, Restored, Shard, Store, lock};
use crate::token::{self, TokenId};
use crate::wheel::Wheel;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

/// How many tokens ahead recovery prefetches the slot a token names.
const RESTORE_PREFETCH: usize = 16;

/// Slots a recovered token may name beyond twice the number of recovered
/// items (see [`Store::restore`]): 64 bytes each at most, 4 MiB.
const RESTORE_SLOT_SLACK: usize = 65_536;

impl Store {
    /// Loads state recovered from the backing store (start-up, before any
    /// client is served and before the expiry drivers run). Nothing fires
    /// here: deadlines that passed while the server was down fire on the
    /// drivers' first run, in deadline order — past-due entries fire in the
    /// order they were armed, so those (only those) are sorted first.
    ///
    /// A token the backing store keeps in a slot gets that slot. Returns
    /// the pools whose tokens could not all be put where the backing store
    /// keeps them (kept by an earlier layout, or in a slot taken twice): the
    /// backing store must be told where they are now (see
    /// [`Store::rewrite`]).
    pub fn restore(&self, items: Vec<Restored>) -> Vec<Bytes> {
        let now = self.shared.clock.now_ms();
        let due_of = |r: &Restored| match r {
            Restored::Live { record, .. } => record.due(),
            Restored::Expired { forget_at, .. } => *forget_at,
        };
        // In place: at 10M tokens a copy of the items is over 1 GB, and
        // faulting its pages in was a quarter of tokend's recovery CPU.
        let mut items = items;
        let mut past: Vec<Restored> = items.extract_if(.., |r| due_of(r) <= now).collect();
        past.sort_by_key(due_of);
        let items = if past.is_empty() {
            items
        } else {
            past.append(&mut items);
            past
        };
        // Slots named beyond this are not honoured (an old token names a
        // random one of 2^32; a slab that was mostly emptied keeps its
        // length in the backing store): such tokens go to any vacant slot
        // instead.
        let bound = items.len().saturating_mul(2).saturating_add(RESTORE_SLOT_SLACK).min(pool::MAX_SLOTS);
        // Where a token goes first: the slot the backing store keeps it in,
        // or else the one it names.
        let wanted = |token: &TokenId, at: &Option<u32>| match at {
            Some(at) => *at as usize,
            None => token::slot_of(*token, self.slot_key()) as usize,
        };
        // Tokens kept in slots get them first (in a pass of their own, so
        // that no other token takes one of them); then tokens that name a
        // vacant slot get it; the others (misplaced) fill the gaps
        // afterwards. A token due in the future is
        // armed as it is placed (its slot is in cache then); past-due ones
        // are armed last, in the order above, so that they fire in deadline
        // order whichever pass placed them.
        // The slab of each pool is sized once for the slots its tokens name,
        // and each token's slot is prefetched a few tokens ahead: the slots
        // come in random order, and each would be a cache and TLB miss.
        let mut spans: HashMap<&Bytes, usize> = HashMap::new();
        for item in &items {
            if let Restored::Live { pool, token, at, .. } = item {
                let named = wanted(token, at);
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
            let Shard { pools, wheel, live, .. } = s;
            let p = pools.get_mut(&pid)?;
            let slot = match slot {
                Some(slot) => slot,
                None => p.claim(id, bound)?,
            };
            p.put(slot, id, Record { armed: 0, lease_armed: 0, ..*record });
            self.shared.live_tokens.fetch_add(1, Ordering::Relaxed);
            *live += 1;
            let r = p.get_mut(slot)?;
            if record.due() > now {
                self.arm_restored(wheel, pid, slot, r);
                return Some(false);
            }
            Some(true)
        };
        let mut repack: HashSet<Bytes> = HashSet::new();
        // Pass 1: tokens kept in slots.
        self.restore_runs(&items, |s, pid, i, item| {
            let Restored::Live { pool, token: id, record, at: Some(at) } = item else { return };
            if let (Some(p), Some(Restored::Live { pool: next_pool, at: Some(next), .. })) =
                (s.pools.get(&pid), items.get(i + RESTORE_PREFETCH))
                && next_pool == pool
            {
                p.prefetch_slot(*next);
            }
            let Some(p) = s.pools.get_mut(&pid) else { return };
            if p.contains(*id) {
                // Kept twice: once is enough, but that slot must be
                // cleared in the backing store.
                repack.insert(pool.clone());
                return;
            }
            if (*at as usize) >= bound || !p.claim_at(*at) {
                // Left to the last pass, and put elsewhere.
                repack.insert(pool.clone());
                unplaced.push(i);
                return;
            }
            match place(s, pid, Some(*at), *id, record) {
                None => unplaced.push(i),
                Some(true) => past_due.push(i),
                Some(false) => {}
            }
        });
        // Pass 2: the rest.
        self.restore_runs(&items, |s, pid, i, item| match item {
            Restored::Live { at: Some(_), .. } => {}
            Restored::Live { pool, token: id, record, at: None } => {
                if let (Some(p), Some(Restored::Live { pool: next_pool, token: next, at: None, .. })) =
                    (s.pools.get(&pid), items.get(i + RESTORE_PREFETCH))
                    && next_pool == pool
                {
                    p.prefetch_named(*next);
                }
                // Not in a slot in the backing store (or there as well, if
                // a move was cut short): the pool is restated, and the
                // tokens hash goes.
                repack.insert(pool.clone());
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
                    && p.remember(*id, *forget_at)
                {
                    forget.push_back((*forget_at, pid, super::fire::NOT_TOMB, *id));
                    *remembered += 1;
                    self.shared.remembered_total.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut cursors: HashMap<PoolId, usize> = HashMap::new();
        for i in unplaced {
            let Restored::Live { pool, token: id, record, .. } = &items[i] else { continue };
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
            let Some(pid) = g.pid(pool) else { continue };
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
        repack.into_iter().collect()
    }
}

impl Store {
    /// Restores pools while the server runs (cluster mode: the pools of a
    /// hash slot this node just claimed), fires a batch of what fell due,
    /// and wakes every expiry driver so that it sees the new deadlines (and
    /// fires the rest).
    /// Returns what [`Store::restore`] does.
    pub fn restore_live(&self, items: Vec<Restored>) -> Vec<Bytes> {
        let repack = self.restore(items);
        for idx in 0..self.shared.shards.len() {
            self.with_shard_at(idx, super::Due::Batch, |_, _, _| ());
            self.wake_driver(idx, 0);
        }
        repack
    }

    /// Locks the shard `pool` lives in, as it is (recovery: nothing is
    /// fired, nothing published).
    pub(super) fn lock_shard_of(&self, pool: &[u8]) -> MutexGuard<'_, Shard> {
        lock(&self.shared.shards[self.shard_index(pool)].state)
    }

    /// Arms a recovered token's deadlines: the lease first, which ends no
    /// later than the lifetime. Nothing is published during recovery (no
    /// journal yet), so the effects are a throwaway.
    fn arm_restored(&self, wheel: &mut Wheel<(PoolId, SlotIdx)>, pid: PoolId, slot: SlotIdx, r: &mut Record) {
        let mut fx = Effects::new(&self.shared.notifier, false);
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
