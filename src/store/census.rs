//! Counting over the whole store (INFO, DBSIZE) and checking its invariants.

use super::{Shard, Store, Totals, lock};
use std::sync::atomic::Ordering;

/// The counts of the given shards.
pub(super) fn totals_of<'a>(shards: impl Iterator<Item = &'a Shard>) -> Totals {
    let mut t = Totals::default();
    for s in shards {
        t.pools += s.pools.len() as u64;
        for p in s.pools.values() {
            t.live += p.len() as u64;
            t.assigned += (p.len() - p.free.len()) as u64;
            t.expired_remembered += p.expired_len() as u64;
            t.blocked += p.live_waiters() as u64;
        }
    }
    t
}

impl Store {
    /// Server-wide counts, one shard at a time.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for cell in self.shared.shards.iter() {
            let one = totals_of(std::iter::once(&*lock(&cell.state)));
            t.pools += one.pools;
            t.live += one.live;
            t.assigned += one.assigned;
            t.expired_remembered += one.expired_remembered;
            t.blocked += one.blocked;
        }
        t
    }

    /// The number of pools (DBSIZE).
    pub fn pool_count(&self) -> u64 {
        self.shared.shards.iter().map(|c| lock(&c.state).pools.len() as u64).sum()
    }

    /// Checks every invariant of every pool (tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut live = 0;
        for cell in self.shared.shards.iter() {
            let g = lock(&cell.state);
            let mut remembered = 0;
            for (pid, p) in g.pools.iter() {
                p.check()?;
                live += p.len() as u64;
                remembered += p.expired_len();
                if g.pid(&p.name) != Some(pid) {
                    return Err(format!("pool {:?} is not named by its id", p.name));
                }
            }
            if g.names.len() != g.pools.len() {
                return Err(format!("{} names for {} pools", g.names.len(), g.pools.len()));
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
}
