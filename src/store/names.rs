//! A shard's index from pool name to pool id. It holds ids only and
//! compares names in the pools themselves, so a name is stored once (a
//! second copy as a map key, and the shared header cloning a `Bytes`
//! allocates, were about 80 bytes a pool: a lot for a pool of one token).

use super::PoolId;
use super::pool::Pool;
use crate::token::TokenHash;
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

pub(super) type Pools = HashMap<PoolId, Box<Pool>, TokenHash>;

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
