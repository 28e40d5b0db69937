//! One pool: its tokens, its free set, its remembered expired tokens and its
//! blocked clients.
//!
//! The free set is a `Vec` of token ids plus, in each free token's record, its
//! index in that `Vec`: a uniformly random free token is taken in O(1) by
//! picking an index and `swap_remove`-ing it (fixing the index of the token
//! that moved). No scan, no rejection sampling, whatever the pool's size.

use crate::token::{TokenHash, TokenId};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use tokio::sync::oneshot;

/// `free_pos` of an assigned token.
pub(crate) const NOT_FREE: u32 = u32::MAX;

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
    /// How many times the token was acquired.
    pub times_acquired: u64,
    /// Deadline of the live timing-wheel entry for this token, 0 if none. An
    /// entry that fires with another deadline is stale and ignored (lazy reset).
    pub(crate) armed: u64,
    /// Index in the pool's free `Vec`, or [`NOT_FREE`] while assigned.
    pub(crate) free_pos: u32,
}

impl Record {
    /// A record as loaded from storage (it is then placed by the store).
    pub fn stored(life_deadline: u64, lease_deadline: u64, lifetime: u64, lease: u64, times_acquired: u64) -> Record {
        Record { life_deadline, lease_deadline, lifetime, lease, times_acquired, armed: 0, free_pos: NOT_FREE }
    }

    /// A new free token (the caller sets `free_pos`).
    pub fn new_free(now: u64, lifetime: u64) -> Record {
        Record {
            life_deadline: now.saturating_add(lifetime),
            lease_deadline: 0,
            lifetime,
            lease: 0,
            times_acquired: 0,
            armed: 0,
            free_pos: NOT_FREE,
        }
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

/// What a blocked `TOKEN.ACQUIRE … BLOCK` waits for.
pub(crate) struct Waiter {
    pub id: u64,
    pub lease: u64,
    pub tx: oneshot::Sender<TokenId>,
}

/// A pool.
pub(crate) struct Pool {
    pub name: Bytes,
    pub tokens: HashMap<TokenId, Record, TokenHash>,
    pub free: Vec<TokenId>,
    /// Expired tokens still remembered, with the time they are forgotten.
    pub expired: HashMap<TokenId, u64, TokenHash>,
    /// Blocked clients, oldest first.
    pub waiters: VecDeque<Waiter>,
}

impl Pool {
    pub fn new(name: Bytes) -> Pool {
        Pool {
            name,
            tokens: HashMap::default(),
            free: Vec::new(),
            expired: HashMap::default(),
            waiters: VecDeque::new(),
        }
    }

    /// True when nothing refers to this pool any more.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.expired.is_empty() && self.waiters.is_empty()
    }

    /// Adds a token to the free set.
    pub fn push_free(&mut self, id: TokenId) {
        let pos = self.free.len() as u32;
        if let Some(r) = self.tokens.get_mut(&id) {
            r.free_pos = pos;
            self.free.push(id);
        }
    }

    /// Removes the free token at `idx` from the free set (O(1)); returns it.
    pub fn take_free_at(&mut self, idx: usize) -> TokenId {
        let id = self.free.swap_remove(idx);
        if let Some(&moved) = self.free.get(idx)
            && let Some(r) = self.tokens.get_mut(&moved)
        {
            r.free_pos = idx as u32;
        }
        if let Some(r) = self.tokens.get_mut(&id) {
            r.free_pos = NOT_FREE;
        }
        id
    }

    /// Removes a token in any state; returns its record.
    pub fn remove(&mut self, id: TokenId) -> Option<Record> {
        let rec = *self.tokens.get(&id)?;
        if !rec.is_assigned() {
            self.take_free_at(rec.free_pos as usize);
        }
        self.tokens.remove(&id)
    }

    /// Live blocked clients (those whose connection still waits).
    pub fn live_waiters(&self) -> usize {
        self.waiters.iter().filter(|w| !w.tx.is_closed()).count()
    }

    /// Checks the pool's invariants; used by tests and debug assertions.
    pub fn check(&self) -> Result<(), String> {
        let mut free_seen = 0;
        for (id, r) in &self.tokens {
            if !r.is_assigned() {
                free_seen += 1;
                if self.free.get(r.free_pos as usize) != Some(id) {
                    return Err(format!("free token {id:x} has a wrong free_pos"));
                }
            } else if r.life_deadline < r.lease_deadline {
                return Err(format!("assigned token {id:x} would die before its lease ends"));
            }
            if self.expired.contains_key(id) {
                return Err(format!("token {id:x} is both live and expired"));
            }
        }
        if free_seen != self.free.len() {
            return Err(format!("free set has {} entries, {} free tokens", self.free.len(), free_seen));
        }
        Ok(())
    }
}
