//! Deadlines firing: what happens when a lifetime or a lease ends, and
//! blocked clients being served when a token becomes free.

use super::pool::{Pool, SlotIdx};
use super::waiting::Handed;
use super::{Change, Effects, PoolId, Record, Shard, Store};
use crate::notify::EventKind;
use crate::token::TokenId;
use crate::wheel::Wheel;
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// The top bit of the slot number in a wheel entry: set for a lease entry,
/// clear for a lifetime entry. Slot numbers stay below it
/// ([`pool::MAX_SLOTS`]).
pub(crate) const LEASE_ENTRY: SlotIdx = 1 << 31;

/// The slot of a forget-queue entry whose token is not a tombstone (see
/// [`Pool::expire`]): it is looked up by id.
pub(crate) const NOT_TOMB: SlotIdx = SlotIdx::MAX;

/// Registers a token's lifetime deadline unless a lifetime entry at or
/// before it is live.
pub(super) fn arm_life(
    wheel: &mut Wheel<(PoolId, SlotIdx)>,
    pid: PoolId,
    slot: SlotIdx,
    rec: &mut Record,
    fx: &mut Effects,
) {
    let due = rec.life_deadline;
    if rec.armed == 0 || due < rec.armed {
        rec.armed = due;
        wheel.insert(due, (pid, slot));
        fx.earliest_armed = fx.earliest_armed.min(due);
    }
}

/// Registers an assigned token's lease deadline as its live lease entry
/// (any older lease entry becomes stale).
pub(super) fn arm_lease(
    wheel: &mut Wheel<(PoolId, SlotIdx)>,
    pid: PoolId,
    slot: SlotIdx,
    rec: &mut Record,
    fx: &mut Effects,
) {
    let due = rec.lease_deadline;
    rec.lease_armed = due as u32;
    wheel.insert(due, (pid, slot | LEASE_ENTRY));
    fx.earliest_armed = fx.earliest_armed.min(due);
}

/// Records how late a deadline (epoch ms) ended, firing at `fire_us`
/// (epoch µs; 0 when not firing from the wheel).
fn note_late(lateness: &mut crate::hist::Hist, worst: &mut u64, fire_us: u64, deadline_ms: u64) {
    if fire_us != 0 {
        let late = fire_us.saturating_sub(deadline_ms.saturating_mul(1000));
        lateness.record(late);
        *worst = (*worst).max(late);
    }
}

/// Wheel entries fired per lock hold by a command before it runs: what a
/// command pays for a backlog of expiries that is not its own pool's.
const COMMAND_BATCH_DIVISOR: usize = 16;

/// The longest a batch of expiries holds a shard's lock, whatever its
/// count: a batch is cut once this has passed.
const BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(1);

/// How many entries go between two looks at the clock in a batch.
const CLOCK_EVERY: usize = 64;

/// How far ahead of the entry being fired (or the token being forgotten)
/// its slot is asked for: a mass expiry reads millions of slots in
/// deadline order, which is no order in memory, and each is a cache miss.
const PREFETCH_AHEAD: usize = 8;

/// Starts loading the slot a wheel entry names (a hint).
fn prefetch_entry(s: &Shard, &(_, (pid, entry)): &(u64, (PoolId, SlotIdx))) {
    if let Some(p) = s.pools.get(&pid) {
        p.prefetch_slot(entry & !LEASE_ENTRY);
    }
}

/// Who fires due deadlines, and so how many in one lock hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Firing {
    /// The expiry driver, or a command helping it with its own pool's
    /// backlog: a whole batch ([`super::StoreConfig::expiry_batch`]).
    Batch,
    /// A command on another pool: a sixteenth of a batch.
    Command,
}

impl Store {
    /// Fires deadlines up to `now` in this shard, at most one batch of them
    /// (see [`Firing`]), and forgets expired tokens whose memory ran out.
    /// Returns whether everything due is done; what is left waits in the
    /// shard's backlog, in order, for the next call.
    ///
    /// The batch bounds how long a mass expiry holds the shard's lock, and
    /// so how long commands on other pools wait. Exactness is kept per
    /// pool: a command on a pool that still has entries in the backlog
    /// first fires the backlog up to that pool's last entry (see
    /// `Store::with_shard_at`), so no command ever sees one of its pool's
    /// tokens past its deadline, and the backlog goes in order, so the
    /// events do too.
    ///
    /// Entries are reset lazily: a KEEPALIVE that moves a deadline later
    /// inserts nothing, and UNBLOCK leaves the lease entry in the wheel. A
    /// fired entry is live if the token still has it armed (`armed` for a
    /// lifetime entry, `lease_armed` for a lease entry); a stale one is
    /// dropped. A lease entry of a token that is free is stale whatever its
    /// deadline, and that is told from the free set's bitmap alone: every
    /// ACQUIRE → UNBLOCK leaves one such entry behind, and at 10M tokens
    /// reading the token's slot when it fires would be a cache and TLB miss.
    pub(super) fn run_due(&self, s: &mut Shard, now: u64, fx: &mut Effects, firing: Firing) -> bool {
        let batch = self.shared.config.expiry_batch.max(1);
        let mut left = match firing {
            Firing::Batch => batch,
            Firing::Command => (batch / COMMAND_BATCH_DIVISOR).max(1),
        };
        // Read at the first entry fired: a command with nothing due pays
        // no clock read.
        let mut started = None;
        let mut fired = std::mem::take(&mut s.fired);
        s.wheel.poll(now, &mut fired);
        fx.garbage.extend(s.wheel.take_garbage());
        if !fired.is_empty() || !s.backlog.is_empty() {
            s.fire_us = self.shared.clock.now_us();
            s.worst_late_us = 0;
        }
        if !s.backlog.is_empty() && !fired.is_empty() {
            // Behind what is already waiting, in order.
            fired = s.queue_due(fired, 0);
        }
        let mut n = 0;
        let mut spent = |n: &mut usize| {
            let t0 = *started.get_or_insert_with(std::time::Instant::now);
            *n += 1;
            *n >= left || (*n).is_multiple_of(CLOCK_EVERY) && t0.elapsed() >= BATCH_TIME
        };
        let mut cut = false;
        while !cut && let Some(e) = s.pop_due() {
            if let Some(next) = s.due_ahead(PREFETCH_AHEAD) {
                prefetch_entry(s, next);
            }
            self.fire_entry(s, e, now, fx);
            cut = spent(&mut n);
        }
        let mut done_fired = 0;
        if !cut {
            for i in 0..fired.len() {
                if let Some(next) = fired.get(i + PREFETCH_AHEAD) {
                    prefetch_entry(s, next);
                }
                self.fire_entry(s, fired[i], now, fx);
                done_fired = i + 1;
                if spent(&mut n) {
                    break;
                }
            }
        }
        if done_fired < fired.len() {
            fired = s.queue_due(fired, done_fired);
        }
        fired.clear();
        s.fired = fired;
        if s.fire_us != 0 {
            s.fire_us = 0;
            self.shared.latency.record("expire-late", s.worst_late_us / 1000);
        }
        left = left.saturating_sub(n);
        let mut done = s.backlog.is_empty();
        while let Some(&(at, pid, slot, id)) = s.forget.front() {
            if at > now {
                break;
            }
            if left == 0 {
                done = false;
                break;
            }
            left -= 1;
            s.forget.pop_front();
            self.forget_one(s, pid, slot, id, at, fx);
        }
        if !done {
            // The driver goes on with the rest at once.
            fx.earliest_armed = now;
        }
        self.flush_tally(s);
        self.note_backlog(s);
        done
    }

    /// What a request about to run fires first ([`Store::ready`]): a
    /// command's share, the rest queued, if the backlog is empty; otherwise
    /// nothing, what is due queued behind the backlog (the request fires
    /// its share when it runs). Out of line: off every command's path.
    #[cold]
    #[inline(never)]
    pub(super) fn due_before_ready(&self, s: &mut Shard, now: u64, fx: &mut Effects) -> bool {
        if s.backlog.is_empty() {
            return self.run_due(s, now, fx, Firing::Command);
        }
        self.queue_due_now(s, now, fx);
        true
    }

    /// Moves what is due by `now` from the wheel to the back of the
    /// backlog, firing none of it: a pool with entries among it is then
    /// behind, and the driver is woken for them.
    fn queue_due_now(&self, s: &mut Shard, now: u64, fx: &mut Effects) {
        let mut fired = std::mem::take(&mut s.fired);
        s.wheel.poll(now, &mut fired);
        fx.garbage.extend(s.wheel.take_garbage());
        if !fired.is_empty() {
            fired = s.queue_due(fired, 0);
            fx.earliest_armed = now;
        }
        s.fired = fired;
        self.note_backlog(s);
    }

    /// Fires the backlog of shard `s` in order until pool `pid` (every
    /// pool with `None`) has nothing left in it, however long that takes.
    /// Only for a transaction, which holds its locks throughout: it helps
    /// first (see [`Store::catch_up`]), so what is left here is what fell
    /// due since.
    pub(super) fn clear_backlog(&self, s: &mut Shard, now: u64, fx: &mut Effects, pid: Option<PoolId>) {
        while pid.is_none_or(|pid| s.is_behind(pid))
            && let Some(e) = s.pop_due()
        {
            self.fire_entry(s, e, now, fx);
        }
        self.flush_tally(s);
        self.note_backlog(s);
    }

    /// Acts on one fired wheel entry: settles its token if the entry is
    /// the token's live one.
    fn fire_entry(&self, s: &mut Shard, (when, (pid, entry)): (u64, (PoolId, SlotIdx)), now: u64, fx: &mut Effects) {
        let (slot, lease) = (entry & !LEASE_ENTRY, entry & LEASE_ENTRY != 0);
        let Some(p) = s.pools.get_mut(&pid) else { return };
        if lease && p.free.contains(slot) {
            return;
        }
        let Some(rec) = p.get_mut(slot) else { return };
        if lease {
            if !rec.is_assigned() || rec.lease_armed != when as u32 {
                return;
            }
        } else if rec.armed != when {
            return;
        } else {
            rec.armed = 0;
        }
        self.settle(s, pid, slot, now, lease, fx);
    }

    /// Forgets a remembered expired token if the queue entry is current.
    pub(super) fn forget_one(&self, s: &mut Shard, pid: PoolId, slot: SlotIdx, id: TokenId, at: u64, fx: &mut Effects) {
        if let Some(pool) = s.pools.get_mut(&pid)
            && if slot == NOT_TOMB { pool.forget(id, Some(at)) } else { pool.forget_tomb(slot, id, at) }
        {
            // The name is read in place: a copy of it per token forgotten
            // was 2% of a mass expiry (9M of its 10M expiries forget one).
            fx.change(|| Change::Forget { pool: Bytes::copy_from_slice(&pool.name), token: id });
            s.remembered -= 1;
            s.tally.remembered -= 1;
            Shard::drop_if_empty(s, pid, fx);
        }
    }

    /// Applies whatever is due for one token, in deadline order, and re-arms
    /// its next deadline. A lease that ended strictly before the lifetime is
    /// processed first (after downtime both may be due: `leaseexpired` then
    /// `expired`); at the same millisecond the lifetime wins and only
    /// `expired` happens. `lease_entry`: the token's live lease entry fired
    /// (so a lease that goes on needs a new one).
    pub(super) fn settle(
        &self,
        s: &mut Shard,
        pid: PoolId,
        slot: SlotIdx,
        now: u64,
        lease_entry: bool,
        fx: &mut Effects,
    ) {
        let Some(pool) = s.pools.get_mut(&pid) else { return };
        let Some(rec) = pool.get(slot).copied() else { return };
        let mut freed = false;
        if rec.is_assigned() && rec.lease_deadline <= now && rec.lease_deadline < rec.life_deadline {
            if let Some(r) = pool.get_mut(slot) {
                r.lease_deadline = 0;
            }
            pool.push_free(slot);
            freed = true;
            note_late(&mut s.lateness, &mut s.worst_late_us, s.fire_us, rec.lease_deadline);
            s.tally.lease_expired += 1;
            let name = pool.name.clone();
            fx.event(EventKind::LeaseExpired, &name, pool.id(slot));
            self.put_change(pool, slot, fx);
        }
        if rec.life_deadline <= now {
            self.expire(s, pid, slot, now, fx);
            return;
        }
        if freed {
            self.serve_waiters(s, pid, now, fx);
        }
        let Shard { pools, wheel, .. } = s;
        if let Some(rec) = pools.get_mut(&pid).and_then(|p| p.get_mut(slot)) {
            arm_life(wheel, pid, slot, rec, fx);
            if lease_entry && rec.is_assigned() {
                arm_lease(wheel, pid, slot, rec, fx);
            }
        }
    }

    /// Deletes a token whose lifetime ended and remembers it as expired.
    pub(super) fn expire(&self, s: &mut Shard, pid: PoolId, slot: SlotIdx, now: u64, fx: &mut Effects) {
        let Some(pool) = s.pools.get_mut(&pid) else { return };
        let memory = self.shared.config.expired_memory_ms;
        let forget_at = now.saturating_add(memory);
        let Some((id, rec, tomb)) = (if memory > 0 {
            pool.expire(slot, forget_at)
        } else {
            pool.remove(slot).map(|(id, rec)| (id, rec, false))
        }) else {
            return;
        };
        note_late(&mut s.lateness, &mut s.worst_late_us, s.fire_us, rec.life_deadline);
        s.live -= 1;
        s.tally.expired += 1;
        fx.event(EventKind::Expired, &pool.name, id);
        if memory > 0 {
            fx.change(|| Change::Expired {
                pool: Bytes::copy_from_slice(&pool.name),
                token: id,
                forget_at,
                slot: Some(slot),
            });
            s.forget.push_back((forget_at, pid, if tomb { slot } else { NOT_TOMB }, id));
            s.remembered += 1;
            s.tally.remembered += 1;
            let max = self.shared.config.max_expired_remembered as isize;
            let total = |s: &Shard| self.shared.remembered_total.load(Ordering::Relaxed) as isize + s.tally.remembered;
            // Over the server-wide bound: this shard forgets its oldest. (The
            // bound can be overshot by at most what other shards hold until
            // they next expire something.)
            if total(s) > max {
                while total(s) > max {
                    let Some((at, p, slot, t)) = s.forget.pop_front() else { break };
                    // Each expiry past the bound forgets one: the next ones
                    // to go are the ones to load.
                    if let Some(&(_, np, ns, _)) = s.forget.get(PREFETCH_AHEAD)
                        && ns != NOT_TOMB
                        && let Some(pool) = s.pools.get(&np)
                    {
                        pool.prefetch_tomb(ns);
                    }
                    self.forget_one(s, p, slot, t, at, fx);
                }
            }
        } else {
            fx.change(|| Change::Del { pool: Bytes::copy_from_slice(&pool.name), token: id, slot: Some(slot) });
            Shard::drop_if_empty(s, pid, fx);
        }
    }

    /// Adds what firing deadlines in shard `s` changed to the server-wide
    /// counters (see [`super::Tally`]).
    pub(super) fn flush_tally(&self, s: &mut Shard) {
        let t = std::mem::take(&mut s.tally);
        if t.expired > 0 {
            self.shared.live_tokens.fetch_sub(t.expired, Ordering::Relaxed);
            self.shared.expired_total.fetch_add(t.expired, Ordering::Relaxed);
        }
        if t.lease_expired > 0 {
            self.shared.lease_expired_total.fetch_add(t.lease_expired, Ordering::Relaxed);
        }
        match t.remembered {
            0 => {}
            n if n > 0 => {
                self.shared.remembered_total.fetch_add(n as usize, Ordering::Relaxed);
            }
            n => {
                self.shared.remembered_total.fetch_sub(n.unsigned_abs(), Ordering::Relaxed);
            }
        }
    }

    /// Counts `n` remembered expired tokens of shard `s` as forgotten.
    pub(super) fn forgot(&self, s: &mut Shard, n: usize) {
        s.remembered -= n;
        self.shared.remembered_total.fetch_sub(n, Ordering::Relaxed);
    }

    pub(super) fn put_change(&self, pool: &Pool, slot: SlotIdx, fx: &mut Effects) {
        if let Some(record) = pool.get(slot).copied() {
            let (name, token) = (pool.name.clone(), pool.id(slot));
            fx.change(|| Change::Put { pool: Bytes::copy_from_slice(&name), token, record, slot });
        }
    }

    /// Makes the token in `slot`, just taken out of the free set, assigned
    /// with `lease`.
    pub(super) fn assign(
        s: &mut Shard,
        pid: PoolId,
        slot: SlotIdx,
        lease: u64,
        now: u64,
        fx: &mut Effects,
    ) -> Option<TokenId> {
        let Shard { pools, wheel, .. } = s;
        let pool = pools.get_mut(&pid)?;
        let id = pool.id(slot);
        let rec = pool.get_mut(slot)?;
        rec.lease = lease;
        // Never 0, which would read as free.
        rec.lease_deadline = now.saturating_add(lease).max(1);
        // Cover rule: an assigned token never dies before its lease ends.
        rec.life_deadline = rec.life_deadline.max(rec.lease_deadline);
        rec.times_acquired = rec.times_acquired.saturating_add(1);
        // The lifetime only moved later: its entry re-arms when it fires.
        arm_lease(wheel, pid, slot, rec, fx);
        let record = *rec;
        let name = pool.name.clone();
        fx.event(EventKind::TokenAcquire, &name, id);
        fx.change(|| Change::Put { pool: Bytes::copy_from_slice(&name), token: id, record, slot });
        Some(id)
    }

    /// Hands free tokens to blocked clients, oldest first.
    pub(super) fn serve_waiters(&self, s: &mut Shard, pid: PoolId, now: u64, fx: &mut Effects) {
        loop {
            let Shard { pools, rng, .. } = &mut *s;
            let Some(pool) = pools.get_mut(&pid) else { return };
            if pool.free.is_empty() {
                return;
            }
            let Some(w) = pool.waiters_mut().and_then(|q| q.pop_front()) else { return };
            if w.tx.is_closed() {
                continue;
            }
            let Some(slot) = pool.take_random_free(rng) else { return };
            let id = pool.id(slot);
            // Hand over first: if the client vanished this instant, the token
            // simply stays free.
            if w.tx.send(Handed::Token(id)).is_ok() {
                Self::assign(s, pid, slot, w.lease, now, fx);
                fx.handed.push(w.unit);
            } else {
                pool.push_free(slot);
            }
        }
    }
}
