//! A shard's pools: a table indexed by pool id, and an index from pool
//! name to pool id. Both are small per pool, which matters when every
//! tenant has a pool of a token or two:
//!
//! - The table is a vector of boxed pools, 8 bytes a pool id; freed ids are
//!   reused. Walking it in id order is the scan order (a pool keeps its id
//!   for its whole life, so a scan meets a pool that exists throughout
//!   exactly once). A hash map of ids and an ordered map for the scan
//!   order were about 55 bytes a pool.
//! - The name index holds ids only and compares names in the pools, so a
//!   name is stored once (a second copy as a map key, and the shared
//!   header that cloning a `Bytes` allocates, were about 80 bytes a pool).

use super::PoolId;
use super::pool::Pool;
use hashbrown::HashTable;
use std::hash::{BuildHasher, RandomState};

/// The pools of a shard, by id.
pub(super) struct Pools {
    /// Index 0 is never used (ids start at 1).
    slots: Vec<Option<Box<Pool>>>,
    /// Ids free for reuse.
    free: Vec<PoolId>,
    len: usize,
}

impl Default for Pools {
    fn default() -> Pools {
        Pools { slots: vec![None], free: Vec::new(), len: 0 }
    }
}

impl Pools {
    /// An id no live pool has.
    pub fn new_id(&mut self) -> PoolId {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as PoolId
            }
        }
    }

    pub fn get(&self, id: &PoolId) -> Option<&Pool> {
        self.slots.get(*id as usize)?.as_deref()
    }

    pub fn get_mut(&mut self, id: &PoolId) -> Option<&mut Box<Pool>> {
        self.slots.get_mut(*id as usize)?.as_mut()
    }

    /// Puts a pool at an id from [`Pools::new_id`].
    pub fn insert(&mut self, id: PoolId, pool: Box<Pool>) {
        let i = id as usize;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        if self.slots[i].replace(pool).is_none() {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, id: &PoolId) -> Option<Box<Pool>> {
        let p = self.slots.get_mut(*id as usize)?.take()?;
        self.len -= 1;
        self.free.push(*id);
        if self.len == 0 {
            // Emptied: give the table back (a flush of millions of pools).
            *self = Pools::default();
        }
        Some(p)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The pools in id order, with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (PoolId, &Pool)> {
        self.range(0)
    }

    /// The pools with ids from `from` on, in id order.
    pub fn range(&self, from: u64) -> impl Iterator<Item = (PoolId, &Pool)> {
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(self.slots.len());
        self.slots[start..].iter().enumerate().filter_map(move |(i, p)| Some(((start + i) as PoolId, p.as_deref()?)))
    }

    pub fn values(&self) -> impl Iterator<Item = &Pool> {
        self.slots.iter().filter_map(|p| p.as_deref())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Box<Pool>> {
        self.slots.iter_mut().flatten()
    }
}

/// Pool names (keyed, like Redis's dict, with a per-process random seed).
#[derive(Default)]
pub(super) struct Names {
    table: HashTable<PoolId>,
    seed: RandomState,
}

impl Names {
    fn hash(seed: &RandomState, name: &[u8]) -> u64 {
        seed.hash_one(name)
    }

    /// The id of the pool named `name`.
    pub fn get(&self, pools: &Pools, name: &[u8]) -> Option<PoolId> {
        let h = Self::hash(&self.seed, name);
        self.table.find(h, |pid| pools.get(pid).is_some_and(|p| p.name[..] == *name)).copied()
    }

    /// Indexes pool `pid`, which `pools` holds already.
    pub fn insert(&mut self, pools: &Pools, pid: PoolId) {
        let Some(p) = pools.get(&pid) else { return };
        let seed = &self.seed;
        let rehash = |id: &PoolId| pools.get(id).map_or(0, |p| Self::hash(seed, &p.name));
        self.table.insert_unique(Self::hash(seed, &p.name), pid, rehash);
    }

    /// Forgets pool `pid`, which `pools` still holds.
    pub fn remove(&mut self, pools: &Pools, pid: PoolId) {
        let Some(p) = pools.get(&pid) else { return };
        if let Ok(e) = self.table.find_entry(Self::hash(&self.seed, &p.name), |&id| id == pid) {
            e.remove();
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }
}
