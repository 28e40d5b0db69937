//! One pool: its tokens, its free set, its remembered expired tokens and its
//! blocked clients.
//!
//! Memory layout, chosen for ≤ 100 bytes per live token and as few cache
//! misses as possible in large pools (the 10M-token ACQUIRE target):
//!
//! - `slots`: a slab of 64-byte [`Slot`]s (token id + [`Record`]) in 2 MiB
//!   chunks on huge pages ([`Slab`]); a deleted token's slot is reused
//!   (`vacant`).
//! - A token names its own slot: GEN picks the slot first and writes its
//!   number, masked, into the token's low 32 bits ([`token::with_slot`]).
//!   KEEPALIVE, UNBLOCK, INFO and DEL go straight to that slot and check that
//!   it holds this very token: one memory access, no index to probe, and no
//!   index to keep (about 10 bytes a token less).
//! - `misplaced`: the exception, tokens that are not at the slot they name
//!   (only after a recovery: tokens made with another key, or whose slot was
//!   taken). A `hashbrown::HashTable<u32>` of slot numbers by token id,
//!   normally empty, so a lookup that misses costs one `is_empty` check.
//! - `free`: a bitmap of the free slots with counts per block
//!   ([`FreeSet`]): a uniformly random free token in O(1) expected, and
//!   1.25 MB at 10M tokens, which stays in cache. In large pools the next
//!   ACQUIREs' tokens are drawn ahead, sixteen at a time, and their slots
//!   prefetched together.
//! - A remembered expired token keeps its slot, as a tombstone (a zero
//!   `life_deadline`; `lifetime` holds when it is forgotten), until it is
//!   forgotten: a mass expiry then writes to the slot it just read instead
//!   of inserting millions of ids into a hash table at random places, and
//!   asking about an expired token is the same one access as about a live
//!   one. Tokens that cannot be a tombstone at their own slot (misplaced
//!   ones, and those recovery brings back as expired) go to `expired`, an
//!   [`ExpiredSet`](super::queue::ExpiredSet).

use super::freeset::FreeSet;
use super::slab::{Slab, Spare, Staged};
use super::waiting::Waiter;
use crate::token::{self, TokenHasher, TokenId};
use hashbrown::HashTable;
use std::collections::VecDeque;
use std::hash::Hasher;

/// A pool's name: up to 16 bytes inline (a pool per tenant is usually
/// named that shortly), longer on the heap; 24 bytes either way.
pub(crate) type PoolName = smallvec::SmallVec<[u8; 16]>;

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
    /// Deadline of the live lifetime entry in the timing wheel, 0 if none.
    /// A lifetime entry that fires with another deadline is stale and ignored
    /// (lazy reset).
    pub(crate) armed: u64,
    /// How many times the token was acquired (saturating).
    pub times_acquired: u32,
    /// The low 32 bits of the deadline of the live lease entry in the timing
    /// wheel (it fits in what would be padding: the slot stays one cache
    /// line). A lease entry whose deadline differs in them is stale. Equal
    /// low bits with another deadline (2^32 ms, 49.7 days, apart) would only
    /// make the store settle the token early, which applies nothing that is
    /// not due (see `Store::run_due`).
    pub(crate) lease_armed: u32,
}

impl Record {
    /// A record as loaded from storage (it is then placed by the store).
    pub const fn stored(
        life_deadline: u64,
        lease_deadline: u64,
        lifetime: u64,
        lease: u64,
        times_acquired: u32,
    ) -> Record {
        Record { life_deadline, lease_deadline, lifetime, lease, times_acquired, armed: 0, lease_armed: 0 }
    }

    /// A new free token.
    pub fn new_free(now: u64, lifetime: u64) -> Record {
        Record::stored(now.saturating_add(lifetime), 0, lifetime, 0, 0)
    }

    /// True while assigned: an assigned token always has a lease deadline
    /// (never 0: it is at least now + 1 ms), a free one never has.
    pub fn is_assigned(&self) -> bool {
        self.lease_deadline != 0
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

/// A slot that holds no token.
const VACANT_SLOT: Slot = Slot { id: VACANT, rec: Record::stored(0, 0, 0, 0, 0) };

impl Slot {
    /// Holds a live token (a live token's `life_deadline` is never 0:
    /// [`Pool::put`] sees to it).
    fn is_live(&self) -> bool {
        self.id != VACANT && self.rec.life_deadline != 0
    }

    /// When the remembered expired token in this slot is forgotten, if
    /// the slot is a tombstone.
    fn tomb(&self) -> Option<u64> {
        (self.id != VACANT && self.rec.life_deadline == 0).then_some(self.rec.lifetime)
    }
}

/// A slot number in a pool's slab.
pub(crate) type SlotIdx = u32;

/// Slots a pool may have: slot numbers stay below `2^31`, so that the store
/// can tag a wheel entry's slot number with its top bit. A pool's slots never
/// outnumber the most tokens it held at once, which `--max-tokens` bounds
/// below this (2^31 slots would be 128 GiB of slab).
pub(crate) const MAX_SLOTS: usize = 1 << 31;

fn hash(id: TokenId) -> u64 {
    let mut h = TokenHasher::default();
    h.write_u128(id);
    h.finish()
}

/// A pool.
pub(crate) struct Pool {
    pub name: PoolName,
    /// The key that masks slot numbers in this pool's tokens.
    key: u64,
    slots: Slab,
    /// Live tokens. Counts are `u32` (slots stay below 2^31): two of them
    /// in one word keep a pool of one token in its allocation size class.
    live: u32,
    /// Tombstones: remembered expired tokens in their own slots.
    tombs: u32,
    /// The free tokens' slots.
    pub free: FreeSet,
    /// The other remembered expired tokens, with the time they are
    /// forgotten (see the module docs).
    expired: super::queue::ExpiredSet,
    /// What a pool needs only once tokens leave it, a client blocks on it
    /// or recovery meets a misplaced token: made on first use, so that a
    /// pool of a token or two (a pool per tenant) does not carry it.
    cold: Option<Box<Cold>>,
}

#[derive(Default)]
struct Cold {
    vacant: Vec<SlotIdx>,
    /// Live tokens not at the slot they name (see the module docs).
    misplaced: HashTable<SlotIdx>,
    /// Blocked clients, oldest first.
    waiters: VecDeque<Waiter>,
}

impl Pool {
    pub fn new(name: &[u8], key: u64) -> Pool {
        Pool {
            name: PoolName::from_slice(name),
            key,
            slots: Slab::default(),
            live: 0,
            tombs: 0,
            free: FreeSet::default(),
            expired: Default::default(),
            cold: None,
        }
    }

    fn cold_mut(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    fn vacant(&self) -> &[SlotIdx] {
        self.cold.as_ref().map_or(&[], |c| &c.vacant)
    }

    /// Blocked clients, oldest first.
    pub fn waiters(&self) -> impl Iterator<Item = &Waiter> {
        self.cold.iter().flat_map(|c| c.waiters.iter())
    }

    /// The blocked clients' queue, if this pool ever had one.
    pub fn waiters_mut(&mut self) -> Option<&mut VecDeque<Waiter>> {
        self.cold.as_mut().map(|c| &mut c.waiters)
    }

    /// Queues a blocked client.
    pub fn push_waiter(&mut self, w: Waiter) {
        self.cold_mut().waiters.push_back(w);
    }

    /// Live tokens.
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// Frees the pool's memory a 2 MiB chunk at a time with `pause` in
    /// between (see [`super::keys::dispose`]).
    pub fn free_gradually(self, pause: std::time::Duration) {
        let Pool { slots, .. } = self;
        slots.free_gradually(pause);
    }

    /// True when nothing refers to this pool any more.
    pub fn is_empty(&self) -> bool {
        self.live == 0 && self.expired_len() == 0 && self.cold.as_ref().is_none_or(|c| c.waiters.is_empty())
    }

    /// How many slab chunks `n` more tokens would add.
    pub fn chunks_wanted(&self, n: usize) -> (usize, usize) {
        self.slots.chunks_wanted(n.saturating_sub(self.vacant().len()))
    }

    /// Room for `n` more tokens (new chunks from `spare`).
    pub fn reserve(&mut self, n: usize, spare: &mut Spare) {
        self.slots.reserve(n.saturating_sub(self.vacant().len()), spare);
    }

    /// After `slots` grew: the free set covers it.
    fn grown(&mut self) {
        self.free.grow(self.slots.len());
    }

    /// A slot for a new token (a vacant one, or a new one at the end); it
    /// stays vacant until [`Pool::put`] fills it.
    pub fn alloc_slot(&mut self) -> SlotIdx {
        self.alloc_slot_from(&mut Spare::default())
    }

    /// [`Pool::alloc_slot`], a new chunk coming from `spare` if one is needed.
    pub fn alloc_slot_from(&mut self, spare: &mut Spare) -> SlotIdx {
        self.cold.as_mut().and_then(|c| c.vacant.pop()).unwrap_or_else(|| {
            self.slots.push_from(VACANT_SLOT, spare);
            self.grown();
            (self.slots.len() - 1) as SlotIdx
        })
    }

    /// Where the new slots of a GEN of `n` tokens could be made outside the
    /// lock ([`Staged`]): after the slab's `len` slots, named with `key`;
    /// `None` when [`Pool::adopt`] would refuse them as things are, or the
    /// slab would stay small.
    pub fn stage_at(&self, n: usize) -> Option<(usize, u64)> {
        let len = self.slots.len();
        (self.takes_staged() && len.saturating_add(n) > super::slab::CHUNK_SLOTS).then_some((len, self.key))
    }

    /// No vacant slot to fill first, and no token but in the slot it names
    /// (a new token could only ever equal one of those): what a GEN's slots
    /// made outside the lock need of the pool.
    fn takes_staged(&self) -> bool {
        self.cold.as_ref().is_none_or(|c| c.vacant.is_empty() && c.misplaced.is_empty()) && self.expired.len() == 0
    }

    /// Takes the new slots of a GEN made outside the lock, if they were
    /// made for this pool as it is: its length, the same key, and
    /// [`Pool::takes_staged`]. Returns the first new
    /// slot: the caller gives them their records ([`Pool::set_new_run`])
    /// before the lock is released. A chunk the slab let go of goes to `old`.
    pub fn adopt(&mut self, staged: &mut Staged, key: u64, old: &mut Spare) -> Option<SlotIdx> {
        if key != self.key || !self.takes_staged() || staged.base() + staged.len() > MAX_SLOTS {
            return None;
        }
        let first = staged.base() as SlotIdx;
        if !self.slots.adopt(staged, old) {
            return None;
        }
        self.grown();
        Some(first)
    }

    /// Gives the `n` slots from `first` that [`Pool::adopt`] took their
    /// free tokens' record, `rec` for all.
    pub fn set_new_run(&mut self, first: SlotIdx, n: usize, mut rec: Record) {
        rec.life_deadline = rec.life_deadline.max(1);
        let (from, to) = (first as usize, first as usize + n);
        self.slots.for_each_mut(from..to, |s| s.rec = rec);
        let added = self.free.insert_range(first..to as SlotIdx);
        debug_assert_eq!(added, n, "adopted slots are new");
        self.live += n as u32;
    }

    /// A new token that names `slot` (from [`Pool::alloc_slot`]).
    pub fn new_token(&self, random: [u8; 16], slot: SlotIdx) -> TokenId {
        token::with_slot(random, slot, self.key)
    }

    /// The slot of a live token.
    pub fn find(&self, id: TokenId) -> Option<SlotIdx> {
        let named = token::slot_of(id, self.key);
        if self.slots.get(named as usize).is_some_and(|s| s.id == id && s.is_live()) {
            return Some(named);
        }
        let cold = self.cold.as_ref().filter(|c| !c.misplaced.is_empty())?;
        let slots = &self.slots;
        cold.misplaced.find(hash(id), |&s| slots[s as usize].id == id).copied()
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
        self.slots.get(slot as usize).filter(|s| s.is_live()).map(|s| &s.rec)
    }

    /// The record in a slot, mutably (a live token's `life_deadline` must
    /// stay above 0).
    pub fn get_mut(&mut self, slot: SlotIdx) -> Option<&mut Record> {
        self.slots.get_mut(slot as usize).filter(|s| s.is_live()).map(|s| &mut s.rec)
    }

    /// When the remembered expired token in `slot` is forgotten, if the
    /// slot is a tombstone.
    pub fn tomb(&self, slot: SlotIdx) -> Option<u64> {
        self.slots.get(slot as usize)?.tomb()
    }

    /// Remembered expired tokens.
    pub fn expired_len(&self) -> usize {
        self.tombs as usize + self.expired.len()
    }

    /// When a remembered expired token is forgotten; `None` if it is not
    /// remembered.
    pub fn expired_get(&self, id: TokenId) -> Option<u64> {
        let named = token::slot_of(id, self.key);
        match self.slots.get(named as usize) {
            Some(s) if s.id == id && s.tomb().is_some() => s.tomb(),
            _ => self.expired.get(&id).copied(),
        }
    }

    /// True if the token is remembered as expired.
    pub fn is_expired(&self, id: TokenId) -> bool {
        self.expired_get(id).is_some()
    }

    /// The remembered expired tokens that are not tombstones (tombstones
    /// are found slot by slot, with [`Pool::tomb`]).
    pub fn expired_elsewhere(&self) -> impl Iterator<Item = (TokenId, u64)> + '_ {
        self.expired.iter()
    }

    /// Deletes the live token in `slot` and remembers it as expired until
    /// `forget_at`; returns its id, its record and whether it stays in
    /// `slot` as a tombstone (else it is in the set of the others).
    pub fn expire(&mut self, slot: SlotIdx, forget_at: u64) -> Option<(TokenId, Record, bool)> {
        let s = self.slots.get(slot as usize).filter(|s| s.is_live())?;
        let id = s.id;
        if token::slot_of(id, self.key) != slot {
            let (id, rec) = self.remove(slot)?;
            self.expired.insert(id, forget_at);
            return Some((id, rec, false));
        }
        let rec = s.rec;
        self.free.remove(slot);
        self.slots[slot as usize].rec = Record::stored(0, 0, forget_at, 0, 0);
        self.live -= 1;
        self.tombs += 1;
        Some((id, rec, true))
    }

    /// Recovery: remembers an expired token until `forget_at`; false (and
    /// nothing changes) if it is remembered already.
    pub fn remember(&mut self, id: TokenId, forget_at: u64) -> bool {
        if self.is_expired(id) {
            return false;
        }
        self.expired.insert(id, forget_at);
        true
    }

    /// Forgets a remembered expired token, if it is remembered (and, with
    /// `at`, only if it is to be forgotten then); true if it was.
    pub fn forget(&mut self, id: TokenId, at: Option<u64>) -> bool {
        let named = token::slot_of(id, self.key);
        if let Some(s) = self.slots.get(named as usize)
            && s.id == id
            && let Some(when) = s.tomb()
        {
            if at.is_some_and(|at| at != when) {
                return false;
            }
            self.vacate_tomb(named);
            return true;
        }
        if at.is_some_and(|at| self.expired.get(&id) != Some(&at)) {
            return false;
        }
        self.expired.remove(&id).is_some()
    }

    /// [`Pool::forget`] of the tombstone in `slot`, which the caller knows
    /// from [`Pool::expire`]: no hash of the token to find its slot. False
    /// (and nothing changes) unless `slot` holds `id`'s tombstone to be
    /// forgotten at `at`.
    pub fn forget_tomb(&mut self, slot: SlotIdx, id: TokenId, at: u64) -> bool {
        match self.slots.get(slot as usize) {
            Some(s) if s.id == id && s.tomb() == Some(at) => {
                self.vacate_tomb(slot);
                true
            }
            _ => false,
        }
    }

    /// Empties `slot`, which the caller saw holding a tombstone, for reuse.
    fn vacate_tomb(&mut self, slot: SlotIdx) {
        self.slots[slot as usize] = VACANT_SLOT;
        self.tombs -= 1;
        self.cold_mut().vacant.push(slot);
    }

    /// Forgets every remembered expired token; returns how many. Looks at
    /// every slot if there are tombstones.
    pub fn forget_all(&mut self) -> usize {
        let n = self.expired_len();
        self.expired.clear();
        if self.tombs > 0 {
            let mut vacated = Vec::with_capacity(self.tombs as usize);
            for i in 0..self.slots.len() {
                if self.slots[i].tomb().is_some() {
                    self.slots[i] = VACANT_SLOT;
                    vacated.push(i as SlotIdx);
                }
            }
            self.tombs = 0;
            self.cold_mut().vacant.extend(vacated);
        }
        n
    }

    /// Fills a vacant slot from [`Pool::alloc_slot`] (or [`Pool::claim`])
    /// with a new live token (the caller ensured it is new). A free token
    /// goes into the free set; a token that names another slot is indexed.
    pub fn put(&mut self, slot: SlotIdx, id: TokenId, mut rec: Record) {
        let Some(s) = self.slots.get_mut(slot as usize).filter(|s| s.id == VACANT) else { return };
        // 0 would read as a tombstone; 1 ms after the epoch is as past.
        rec.life_deadline = rec.life_deadline.max(1);
        *s = Slot { id, rec };
        self.live += 1;
        if !rec.is_assigned() {
            self.free.insert(slot);
        }
        if token::slot_of(id, self.key) != slot {
            let slots = &self.slots;
            let cold = self.cold.get_or_insert_with(Box::default);
            cold.misplaced.insert_unique(hash(id), slot, |&s| hash(slots[s as usize].id));
        }
    }

    /// Recovery: the slot `id` names if it is vacant and below `bound`,
    /// taken out of the vacant slots (slots up to it are added as vacant but
    /// not listed: call [`Pool::relist_vacant`] when recovery is done).
    pub fn claim(&mut self, id: TokenId, bound: usize) -> Option<SlotIdx> {
        let named = token::slot_of(id, self.key) as usize;
        if named >= bound {
            return None;
        }
        self.presize(named + 1);
        (self.slots[named].id == VACANT).then_some(named as SlotIdx)
    }

    /// Recovery: takes `slot` (growing the slab to it) if it is vacant.
    pub fn claim_at(&mut self, slot: SlotIdx) -> bool {
        self.presize(slot as usize + 1);
        self.slots[slot as usize].id == VACANT
    }

    /// Recovery: makes the slab span `slots` slots (all vacant) at once,
    /// so that recovered tokens find the slots they name already there.
    pub fn presize(&mut self, slots: usize) {
        if slots > self.slots.len() {
            self.slots.resize(slots, VACANT_SLOT);
            self.grown();
        }
    }

    /// Starts loading the slot `id` names and its word of the free set's
    /// bitmap (a hint: no effect on correctness).
    pub fn prefetch_named(&self, id: TokenId) {
        self.prefetch_slot(token::slot_of(id, self.key));
    }

    /// Starts loading the tombstone in `slot`, and not its free-set word:
    /// for forgetting a remembered expired token, whose tombstone is in no
    /// free set (a hint).
    pub fn prefetch_tomb(&self, slot: SlotIdx) {
        self.slots.prefetch(slot as usize);
    }

    /// Starts loading `slot` and its word of the free set's bitmap (a
    /// hint).
    pub fn prefetch_slot(&self, slot: SlotIdx) {
        self.slots.prefetch(slot as usize);
        self.free.prefetch(slot);
    }

    /// Slots, live or vacant.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Recovery: the next vacant slot at or after `*cursor`, or a new one.
    pub fn claim_any(&mut self, cursor: &mut usize) -> SlotIdx {
        while *cursor < self.slots.len() {
            let s = *cursor;
            *cursor += 1;
            if self.slots[s].id == VACANT {
                return s as SlotIdx;
            }
        }
        self.slots.push(VACANT_SLOT);
        self.grown();
        *cursor = self.slots.len();
        (self.slots.len() - 1) as SlotIdx
    }

    /// Recovery done: lists every vacant slot for reuse.
    pub fn relist_vacant(&mut self) {
        let vacant: Vec<SlotIdx> =
            (0..self.slots.len() as SlotIdx).rev().filter(|&s| self.slots[s as usize].id == VACANT).collect();
        if !vacant.is_empty() || self.cold.is_some() {
            self.cold_mut().vacant = vacant;
        }
    }

    /// Assigned → free.
    pub fn push_free(&mut self, slot: SlotIdx) {
        if self.get(slot).is_some() {
            self.free.insert(slot);
        }
    }

    /// Takes a uniformly random free token out of the free set (the caller
    /// makes it assigned), and starts loading the slots of the ones the
    /// free set draws ahead for the next ACQUIREs.
    pub fn take_random_free(&mut self, rng: &mut impl rand::Rng) -> Option<SlotIdx> {
        let slots = &self.slots;
        self.free.take_random(rng, |next| slots.prefetch(next as usize))
    }

    /// Removes a live token in any state; returns its id and record.
    pub fn remove(&mut self, slot: SlotIdx) -> Option<(TokenId, Record)> {
        let Slot { id, rec } = *self.slots.get(slot as usize).filter(|s| s.is_live())?;
        self.free.remove(slot);
        if token::slot_of(id, self.key) != slot {
            let slots = &self.slots;
            if let Some(c) = self.cold.as_mut()
                && let Ok(e) = c.misplaced.find_entry(hash(id), |&s| slots[s as usize].id == id)
            {
                e.remove();
            }
        }
        self.slots[slot as usize].id = VACANT;
        self.cold_mut().vacant.push(slot);
        self.live -= 1;
        Some((id, rec))
    }

    /// An estimate of the bytes the pool holds (MEMORY USAGE): its slots,
    /// its free set, its indexes, its remembered expired tokens and its
    /// waiters.
    pub fn memory_usage(&self) -> usize {
        std::mem::size_of::<Pool>()
            + self.name.len()
            + self.slots.heap_bytes()
            + self.free.heap_bytes()
            + self.cold.as_ref().map_or(0, |c| {
                std::mem::size_of::<Cold>()
                    + c.vacant.capacity() * 4
                    + c.misplaced.capacity() * 5
                    + c.waiters.len() * std::mem::size_of::<Waiter>()
            })
            + self.expired.heap_bytes()
    }

    /// Live blocked clients (those whose connection still waits).
    pub fn live_waiters(&self) -> usize {
        self.waiters().filter(|w| !w.tx.is_closed()).count()
    }

    /// Checks the pool's invariants; used by tests and debug assertions.
    pub fn check(&self) -> Result<(), String> {
        self.free.check()?;
        let mut free_seen = 0;
        let mut live = 0;
        let mut misplaced = 0;
        let mut tombs = 0;
        for (slot, s) in self.slots.iter().enumerate() {
            if s.id == VACANT || s.tomb().is_some() {
                if self.free.contains(slot as SlotIdx) {
                    return Err(format!("vacant or tombstone slot {slot} is in the free set"));
                }
                if s.tomb().is_some() {
                    tombs += 1;
                    if token::slot_of(s.id, self.key) != slot as SlotIdx {
                        return Err(format!("tombstone of {:x} is not at its own slot", s.id));
                    }
                    if self.expired.contains_key(&s.id) {
                        return Err(format!("token {:x} is remembered twice", s.id));
                    }
                }
                continue;
            }
            live += 1;
            let (id, r) = (s.id, &s.rec);
            if self.find(id) != Some(slot as SlotIdx) {
                return Err(format!("token {id:x} is not found at its slot"));
            }
            if token::slot_of(id, self.key) != slot as SlotIdx {
                misplaced += 1;
            }
            if !r.is_assigned() {
                free_seen += 1;
                if !self.free.contains(slot as SlotIdx) {
                    return Err(format!("free token {id:x} is not in the free set"));
                }
            } else if self.free.contains(slot as SlotIdx) {
                return Err(format!("assigned token {id:x} is in the free set"));
            } else if r.life_deadline < r.lease_deadline {
                return Err(format!("assigned token {id:x} would die before its lease ends"));
            }
            if self.expired.contains_key(&id) {
                return Err(format!("token {id:x} is both live and expired"));
            }
        }
        let vacant = self.slots.len() - live - tombs;
        let indexed = self.cold.as_ref().map_or(0, |c| c.misplaced.len());
        let listed = self.vacant().len();
        if live != self.live as usize || misplaced != indexed || vacant != listed || tombs != self.tombs as usize {
            return Err(format!(
                "{live} live (counted {}), {misplaced} misplaced (indexed {indexed}), {vacant} vacant (listed {listed}), \
                 {tombs} tombstones (counted {})",
                self.live, self.tombs
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
    fn a_pool_stays_as_small_as_it_was() {
        // 100k pools of one token: each byte here is 100 kB. The tombstone
        // count shares a word with the live count.
        eprintln!("Pool: {} bytes", std::mem::size_of::<Pool>());
        assert!(std::mem::size_of::<Pool>() <= POOL_BYTES, "{}", std::mem::size_of::<Pool>());
    }

    /// The size of a pool before tombstones (136 bytes + malloc's 8 is a
    /// 144-byte chunk; 8 more would be a 160-byte one).
    const POOL_BYTES: usize = 136;

    fn add(p: &mut Pool, n: u8, free: bool) -> (TokenId, SlotIdx) {
        let slot = p.alloc_slot();
        let id = p.new_token([n; 16], slot);
        let mut rec = Record::new_free(0, 10);
        if !free {
            rec.lease_deadline = 5;
        }
        p.put(slot, id, rec);
        (id, slot)
    }

    #[test]
    fn insert_find_remove_reuse() {
        let mut p = Pool::new(b"p", 42);
        let (ida, a) = add(&mut p, 1, true);
        let (idb, b) = add(&mut p, 2, false);
        assert_eq!(p.find(ida), Some(a));
        assert_eq!(p.find(idb), Some(b));
        assert_eq!(p.free.iter().collect::<Vec<_>>(), vec![a]);
        p.check().unwrap();
        assert_eq!(p.remove(a).map(|x| x.0), Some(ida));
        assert_eq!(p.find(ida), None);
        assert!(p.free.is_empty());
        let (idc, c) = add(&mut p, 3, true);
        assert_eq!(c, a, "the vacant slot is reused");
        assert_eq!(p.find(ida), None, "the old token no longer matches the reused slot");
        assert_eq!(p.len(), 2);
        p.check().unwrap();
        assert_eq!(p.remove(a).map(|x| x.0), Some(idc));
        assert!(p.remove(a).is_none(), "a vacant slot holds nothing");
        p.check().unwrap();
    }

    #[test]
    fn an_expired_token_keeps_its_slot_until_forgotten() {
        let mut p = Pool::new(b"p", 7);
        let (a, sa) = add(&mut p, 1, true);
        let (b, sb) = add(&mut p, 2, false);
        assert_eq!(p.expire(sa, 500).map(|x| x.0), Some(a));
        assert_eq!(p.expire(sa, 600), None, "a tombstone is not live");
        assert!(!p.contains(a) && p.get(sa).is_none() && p.is_expired(a));
        assert_eq!((p.expired_get(a), p.tomb(sa), p.len(), p.expired_len()), (Some(500), Some(500), 1, 1));
        assert!(p.free.is_empty(), "out of the free set");
        p.check().unwrap();
        let (c, sc) = add(&mut p, 3, true);
        assert_ne!(sc, sa, "a tombstone's slot is not reused");
        assert!(!p.forget(a, Some(499)), "only at the time it is to be forgotten");
        assert!(!p.forget_tomb(sa, a, 499) && !p.forget_tomb(sa, b, 500) && !p.forget_tomb(sb, a, 500));
        assert!(p.is_expired(a));
        assert!(p.forget(a, Some(500)) && !p.is_expired(a) && !p.forget(a, None));
        assert_eq!(p.expired_len(), 0);
        p.check().unwrap();
        let (_, sd) = add(&mut p, 4, true);
        assert_eq!(sd, sa, "a forgotten tombstone's slot is reused");
        assert!(!p.forget_tomb(sa, a, 500), "the slot holds another token now");
        assert_eq!(p.expire(sb, 300).map(|x| (x.0, x.2)), Some((b, true)), "a tombstone");
        assert!(p.forget_tomb(sb, b, 300) && !p.is_expired(b) && !p.forget_tomb(sb, b, 300));
        assert_eq!(p.expired_len(), 0);
        p.check().unwrap();
        let (b, sb) = add(&mut p, 2, false);
        // Every kind at once, then all forgotten.
        p.expire(sb, 900);
        p.expire(sc, 900);
        assert!(p.remember(0x1234 << 64, 700));
        assert!(!p.remember(0x1234 << 64, 800) && !p.remember(b, 800), "remembered already");
        assert_eq!(p.expired_get(0x1234 << 64), Some(700));
        assert_eq!(p.expired_elsewhere().collect::<Vec<_>>(), vec![(0x1234 << 64, 700)]);
        p.check().unwrap();
        assert_eq!(p.forget_all(), 3);
        assert!(!p.is_expired(b) && !p.is_expired(c) && p.expired_len() == 0);
        assert_eq!(p.len(), 1);
        p.check().unwrap();
        assert!(!p.is_empty());
    }

    #[test]
    fn a_misplaced_token_is_remembered_outside_the_slots() {
        let mut p = Pool::new(b"p", 2);
        // Names slot 3, put at slot 4 (as recovery may).
        let id = p.new_token([5; 16], 3);
        p.presize(5);
        p.put(4, id, Record::new_free(0, 10));
        p.relist_vacant();
        assert_eq!(p.find(id), Some(4));
        assert_eq!(p.expire(4, 50).map(|x| (x.0, x.2)), Some((id, false)), "not a tombstone");
        assert_eq!((p.tomb(4), p.tomb(3), p.expired_get(id)), (None, None, Some(50)), "no tombstone, remembered");
        p.check().unwrap();
        assert!(!p.forget_tomb(4, id, 50) && !p.forget_tomb(3, id, 50), "only a tombstone");
        assert!(p.forget(id, Some(50)) && p.is_empty());
        p.check().unwrap();
    }

    #[test]
    fn misplaced_tokens_are_indexed() {
        // Tokens made under another key (an old server's) land wherever
        // recovery puts them and are still found, through the index.
        let old = Pool::new(b"p", 1);
        let mut p = Pool::new(b"p", 2);
        let mut cursor = 0;
        let mut ids = Vec::new();
        for n in 0..50u8 {
            let id = old.new_token([n; 16], n as SlotIdx);
            let slot = p.claim(id, 100).unwrap_or_else(|| p.claim_any(&mut cursor));
            p.put(slot, id, Record::new_free(0, 10));
            ids.push((id, slot));
        }
        p.relist_vacant();
        p.check().unwrap();
        assert!(p.cold.as_ref().is_some_and(|c| !c.misplaced.is_empty()));
        for &(id, slot) in &ids {
            assert_eq!(p.find(id), Some(slot));
        }
        for &(_, slot) in &ids {
            p.remove(slot);
        }
        assert!(p.cold.as_ref().is_none_or(|c| c.misplaced.is_empty()));
        p.check().unwrap();
        // A bogus token naming an occupied slot is not found.
        let (id, slot) = add(&mut p, 9, true);
        assert_eq!(p.find(id ^ (1 << 100)), None);
        assert_eq!(p.find(id), Some(slot));
    }
}
