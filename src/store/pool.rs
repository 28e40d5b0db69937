//! One pool: its tokens, its free set, its remembered expired tokens and its
//! blocked clients.
//!
//! Memory layout, chosen for ≤ 100 bytes per live token and few cache misses
//! in large pools:
//!
//! - `slots`: a slab of 64-byte [`Slot`]s (token id + [`Record`]); a deleted
//!   token's slot is reused (`vacant`).
//! - `index`: a `hashbrown::HashTable<u32>` of slot numbers, hashed by token
//!   id: 4 bytes a bucket instead of a map entry holding the whole record
//!   (which cost ~170 bytes per token at 1M tokens).
//! - `free`: slot numbers of the free tokens; each free record stores its
//!   position there, so a uniformly random free token is taken in O(1) by
//!   picking an index and `swap_remove`-ing it (fixing the position of the
//!   one that moved). No scan and no rejection sampling, whatever the size.

use crate::token::{TokenHasher, TokenId};
use bytes::Bytes;
use hashbrown::HashTable;
use std::collections::VecDeque;
use std::hash::Hasher;
use tokio::sync::oneshot;

/// `free_pos` of an assigned token.
pub(crate) const NOT_FREE: u32 = u32::MAX;

/// The id of a vacant slot (a UUID v4 is never 0: its version bits are set).
const VACANT: TokenId = 0;

/// A token's record. Deadlines are absolute epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// When the token dies unless kept alive.
    pub life_deadline: u64,
    /// When the lease ends; 0 while free.
    pub lease_deadline: u64,
    /// Lifetime duration (ms) GEN gave it; KEEPALIVE restarts from this.
    pub lifetime: u64,
    /// Lease duration (ms) of the last ACQUIRE; KEEPALIVE restarts from this.
    pub lease: u64,
    /// Deadline of the live timing-wheel entry for this token, 0 if none. An
    /// entry that fires with another deadline is stale and ignored (lazy reset).
    pub(crate) armed: u64,
    /// How many times the token was acquired (saturating).
    pub times_acquired: u32,
    /// Index in the pool's free `Vec`, or [`NOT_FREE`] while assigned.
    pub(crate) free_pos: u32,
}

impl Record {
    /// A record as loaded from storage (it is then placed by the store).
    pub fn stored(life_deadline: u64, lease_deadline: u64, lifetime: u64, lease: u64, times_acquired: u32) -> Record {
        Record { life_deadline, lease_deadline, lifetime, lease, times_acquired, armed: 0, free_pos: NOT_FREE }
    }

    /// A new free token (the pool sets `free_pos`).
    pub fn new_free(now: u64, lifetime: u64) -> Record {
        Record::stored(now.saturating_add(lifetime), 0, lifetime, 0, 0)
    }

    /// The next deadline of a record as stored (assigned iff it has a lease
    /// deadline), before `free_pos` is known.
    pub fn due_from_stored(&self) -> u64 {
        if self.lease_deadline != 0 { self.life_deadline.min(self.lease_deadline) } else { self.life_deadline }
    }

    /// True while assigned.
    pub fn is_assigned(&self) -> bool {
        self.free_pos == NOT_FREE
    }

    /// The next deadline at which something happens to this token.
    pub fn due(&self) -> u64 {
        if self.is_assigned() { self.life_deadline.min(self.lease_deadline) } else { self.life_deadline }
    }
}

/// A slab entry: 16 + 48 = 64 bytes, one cache line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub id: TokenId,
    pub rec: Record,
}

/// What a blocked `TOKEN.ACQUIRE … BLOCK` waits for.
pub(crate) struct Waiter {
    pub id: u64,
    pub lease: u64,
    pub tx: oneshot::Sender<TokenId>,
}

/// A slot number in a pool's slab.
pub(crate) type SlotIdx = u32;

fn hash(id: TokenId) -> u64 {
    let mut h = TokenHasher::default();
    h.write_u128(id);
    h.finish()
}

/// A pool.
pub(crate) struct Pool {
    pub name: Bytes,
    slots: Vec<Slot>,
    vacant: Vec<SlotIdx>,
    index: HashTable<SlotIdx>,
    /// Slot numbers of the free tokens.
    pub free: Vec<SlotIdx>,
    /// Expired tokens still remembered, with the time they are forgotten.
    pub expired: super::queue::ExpiredSet,
    /// Blocked clients, oldest first.
    pub waiters: VecDeque<Waiter>,
}

impl Pool {
    pub fn new(name: Bytes) -> Pool {
        Pool {
            name,
            slots: Vec::new(),
            vacant: Vec::new(),
            index: HashTable::new(),
            free: Vec::new(),
            expired: Default::default(),
            waiters: VecDeque::new(),
        }
    }

    /// Live tokens.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing refers to this pool any more.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty() && self.expired.is_empty() && self.waiters.is_empty()
    }

    /// Room for `n` more tokens without rehashing.
    pub fn reserve(&mut self, n: usize) {
        let slots = &self.slots;
        self.index.reserve(n, |&s| hash(slots[s as usize].id));
        self.slots.reserve(n.saturating_sub(self.vacant.len()));
    }

    /// The slot of a live token.
    pub fn find(&self, id: TokenId) -> Option<SlotIdx> {
        let slots = &self.slots;
        self.index.find(hash(id), |&s| slots[s as usize].id == id).copied()
    }

    /// True if the pool has this live token.
    pub fn contains(&self, id: TokenId) -> bool {
        self.find(id).is_some()
    }

    /// The token in a slot.
    pub fn id(&self, slot: SlotIdx) -> TokenId {
        self.slots[slot as usize].id
    }

    /// The record in a slot, if the slot holds a live token.
    pub fn get(&self, slot: SlotIdx) -> Option<&Record> {
        self.slots.get(slot as usize).filter(|s| s.id != VACANT).map(|s| &s.rec)
    }

    /// The record in a slot, mutably.
    pub fn get_mut(&mut self, slot: SlotIdx) -> Option<&mut Record> {
        self.slots.get_mut(slot as usize).filter(|s| s.id != VACANT).map(|s| &mut s.rec)
    }

    /// Adds a live token (the caller ensured it is new); returns its slot.
    /// Free tokens go into the free set.
    pub fn insert(&mut self, id: TokenId, rec: Record, free: bool) -> SlotIdx {
        let slot = match self.vacant.pop() {
            Some(s) => {
                self.slots[s as usize] = Slot { id, rec };
                s
            }
            None => {
                self.slots.push(Slot { id, rec });
                (self.slots.len() - 1) as SlotIdx
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hash(id), slot, |&s| hash(slots[s as usize].id));
        self.slots[slot as usize].rec.free_pos = NOT_FREE;
        if free {
            self.push_free(slot);
        }
        slot
    }

    /// Adds a token to the free set.
    pub fn push_free(&mut self, slot: SlotIdx) {
        let pos = self.free.len() as u32;
        if let Some(r) = self.get_mut(slot) {
            r.free_pos = pos;
            self.free.push(slot);
        }
    }

    /// Removes the free token at `idx` of the free set (O(1)); returns its slot.
    pub fn take_free_at(&mut self, idx: usize) -> SlotIdx {
        let slot = self.free.swap_remove(idx);
        if let Some(&moved) = self.free.get(idx)
            && let Some(r) = self.get_mut(moved)
        {
            r.free_pos = idx as u32;
        }
        if let Some(r) = self.get_mut(slot) {
            r.free_pos = NOT_FREE;
        }
        slot
    }

    /// Removes a live token in any state; returns its id and record.
    pub fn remove(&mut self, slot: SlotIdx) -> Option<(TokenId, Record)> {
        let Slot { id, rec } = *self.slots.get(slot as usize).filter(|s| s.id != VACANT)?;
        if !rec.is_assigned() {
            self.take_free_at(rec.free_pos as usize);
        }
        let slots = &self.slots;
        if let Ok(e) = self.index.find_entry(hash(id), |&s| slots[s as usize].id == id) {
            e.remove();
        }
        self.slots[slot as usize].id = VACANT;
        self.vacant.push(slot);
        Some((id, rec))
    }

    /// Live blocked clients (those whose connection still waits).
    pub fn live_waiters(&self) -> usize {
        self.waiters.iter().filter(|w| !w.tx.is_closed()).count()
    }

    /// Checks the pool's invariants; used by tests and debug assertions.
    pub fn check(&self) -> Result<(), String> {
        let mut free_seen = 0;
        let mut live = 0;
        for (slot, s) in self.slots.iter().enumerate() {
            if s.id == VACANT {
                continue;
            }
            live += 1;
            let (id, r) = (s.id, &s.rec);
            if self.find(id) != Some(slot as SlotIdx) {
                return Err(format!("token {id:x} is not indexed at its slot"));
            }
            if !r.is_assigned() {
                free_seen += 1;
                if self.free.get(r.free_pos as usize) != Some(&(slot as SlotIdx)) {
                    return Err(format!("free token {id:x} has a wrong free_pos"));
                }
            } else if r.life_deadline < r.lease_deadline {
                return Err(format!("assigned token {id:x} would die before its lease ends"));
            }
            if self.expired.contains_key(&id) {
                return Err(format!("token {id:x} is both live and expired"));
            }
        }
        if live != self.index.len() || live + self.vacant.len() != self.slots.len() {
            return Err(format!(
                "{live} live, {} indexed, {} vacant of {}",
                self.index.len(),
                self.vacant.len(),
                self.slots.len()
            ));
        }
        if free_seen != self.free.len() {
            return Err(format!("free set has {} entries, {} free tokens", self.free.len(), free_seen));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn insert_find_remove_reuse() {
        let mut p = Pool::new(Bytes::from_static(b"p"));
        let a = p.insert(11 << 64, Record::new_free(0, 10), true);
        let b = p.insert(22 << 64, Record::new_free(0, 10), false);
        assert_eq!(p.find(11 << 64), Some(a));
        assert_eq!(p.find(22 << 64), Some(b));
        assert_eq!(p.free, vec![a]);
        p.check().unwrap();
        assert_eq!(p.remove(a).map(|x| x.0), Some(11 << 64));
        assert_eq!(p.find(11 << 64), None);
        assert!(p.free.is_empty());
        let c = p.insert(33 << 64, Record::new_free(0, 10), true);
        assert_eq!(c, a, "the vacant slot is reused");
        assert_eq!(p.len(), 2);
        p.check().unwrap();
        assert_eq!(p.remove(a).map(|x| x.0), Some(33 << 64));
        assert!(p.remove(a).is_none(), "a vacant slot holds nothing");
    }
}
