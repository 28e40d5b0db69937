//! Writing the whole state back to the journal: after the backing store
//! lost its data, and for pools an earlier version's layout kept elsewhere.

use super::{Change, Shard, Store, lock};
use bytes::Bytes;
use std::collections::HashSet;

/// Slots of a pool read per lock hold (commands on the shard wait no
/// longer than for a few thousand record copies).
const REWRITE_CHUNK: usize = 4096;

impl Store {
    /// Appends, as journal units, the state of every pool (or of the named
    /// ones): its whole slab as `Slots` (live tokens, and nothing in every
    /// other slot), each remembered expired token as an `Expired`. Each chunk is taken and appended under its shard's lock,
    /// so it is in order with the changes around it: whatever was queued
    /// before it is older, whatever comes after is newer. Nothing is
    /// appended without a journal.
    pub fn rewrite(&self, only: Option<&[Bytes]>) {
        let Some(journal) = self.shared.journal.get() else { return };
        let only: Option<HashSet<&[u8]>> = only.map(|p| p.iter().map(|b| &b[..]).collect());
        for cell in self.shared.shards.iter() {
            let pools: Vec<(u32, Bytes)> = {
                let g = lock(&cell.state);
                g.pools
                    .iter()
                    .filter(|(_, p)| only.as_ref().is_none_or(|o| o.contains(&p.name[..])))
                    .map(|(pid, p)| (pid, Bytes::copy_from_slice(&p.name)))
                    .collect()
            };
            for (pid, name) in pools {
                let mut at = 0;
                loop {
                    let g = &mut *lock(&cell.state);
                    let (changes, more) = chunk(g, pid, &name, at);
                    if !changes.is_empty() {
                        let seq = journal.append(changes);
                        let _ = seq;
                    }
                    if !more {
                        break;
                    }
                    at += REWRITE_CHUNK;
                }
            }
        }
    }
}

/// The changes that restate slots `at..at + REWRITE_CHUNK` of pool `pid`
/// (live tokens, and no token in the other slots) and its tombstones
/// (and, with the first chunk, its remembered expired tokens that are not
/// in slots), and whether slots are left after them. A pool that is gone
/// (or whose id was taken by another) yields nothing.
fn chunk(s: &Shard, pid: u32, name: &Bytes, at: usize) -> (Vec<Change>, bool) {
    let Some(p) = s.pools.get(&pid).filter(|p| p.name[..] == name[..]) else { return (Vec::new(), false) };
    let mut out = Vec::new();
    if at == 0 {
        out.extend(p.expired_elsewhere().map(|(token, forget_at)| Change::Expired {
            pool: name.clone(),
            token,
            forget_at,
            slot: None,
        }));
    }
    let end = (at + REWRITE_CHUNK).min(p.slot_count());
    let slots = at as u32..end as u32;
    let records = slots.clone().map(|slot| p.get(slot).map(|r| (p.id(slot), *r))).collect();
    out.push(Change::Slots { pool: name.clone(), first: at as u32, records });
    for slot in slots {
        if let Some(forget_at) = p.tomb(slot) {
            out.push(Change::Expired { pool: name.clone(), token: p.id(slot), forget_at, slot: None });
        }
    }
    (out, end < p.slot_count())
}
