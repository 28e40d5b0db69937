//! A hierarchical timing wheel for token deadlines.
//!
//! This is the hierarchical scheme of G. Varghese and T. Lauck, "Hashed and
//! Hierarchical Timing Wheels: Data Structures for the Efficient Implementation
//! of a Timer Facility" (SOSP 1987; IEEE/ACM Transactions on Networking, 1997),
//! laid out the way tokio's `runtime/time/wheel` does it: `LEVELS` (6) levels of
//! `SLOTS` (64) slots, level `L` slot width `64^L` ms, and a `u64` bitmap per level
//! so the next occupied slot is found with bit operations instead of a scan.
//! Insert is O(1); `poll` costs O(entries fired + entries cascaded), each entry
//! cascading at most `LEVELS - 1` times, and never walks empty milliseconds, so
//! a sparse wheel can jump a year in one call.
//!
//! # Placement
//!
//! A deadline is placed at the level of the highest bit in which it differs from
//! the wheel's clock (`elapsed`), in the slot given by its 6-bit digit at that
//! level. Invariant (checked by debug assertions): an entry at level `L` shares
//! with `elapsed` every bit above level `L`'s range, its placement time is
//! `>= elapsed`, and for `L >= 1` its level-`L` digit is strictly greater than
//! `elapsed`'s. Hence a slot's start time is never before `elapsed` (no slot is
//! "behind" the clock, so there is no wraparound case), and when a level-`L`
//! slot's time comes its entries re-insert at a level below `L`.
//!
//! Two clamps keep the invariant without special cases; both affect placement
//! only, the stored and returned `when` is always the caller's:
//! * a `when` before `elapsed` is placed at `elapsed` (fires on the next poll);
//! * a `when` past the end of the top level's current window
//!   (`elapsed | (MAX_RANGE - 1)`, at most ≈2.2 years ahead) is placed at that
//!   window end and fires EARLY there. The caller sees that the registered
//!   `when` is still in the future and re-arms it; by then the clock is in a new
//!   window and the entry gets ≈2.2 more years of range. (Re-armed while the
//!   clock is still exactly on the window's last ms, it lands on that ms again
//!   and fires on the next poll; it settles once the clock moves past.)
//!
//! # Lazy resets
//!
//! Entries cannot be removed or moved: a reset is lazy. The owner keeps, per
//! entity (token), the deadline it last armed here. A KEEPALIVE that moves a
//! deadline later only updates the entity and inserts nothing. When an entry
//! fires, the owner compares the registered `when` it carries with the
//! entity's armed deadline: if they differ the entry is stale and is dropped;
//! if they match but the entity's true deadline has moved later, the owner
//! re-arms at the true deadline (recording it as armed); otherwise the entity
//! has expired. A deadline moved *earlier* needs a fresh insert (and becomes the
//! armed deadline, making the old entry stale). This keeps KEEPALIVE O(1) with
//! no allocation, at the cost of at most one extra wake-up per moved deadline.

//!
//! # Big cascades
//!
//! A slot's cascade costs time in proportion to its entries, all at once,
//! under the owner's lock. A pool of millions of tokens made in a few
//! seconds puts millions of entries in one high slot, so [`Wheel::prepare`]
//! spreads a slot of at least [`PREPARE_MIN`] entries to its lower slots
//! ahead of its time, in small steps between polls, and the cascade then
//! only moves the spread `Vec`s into place (plus whatever arrived after).

use std::{array, fmt, mem};

/// Bits of a deadline consumed by one level: log2 of [`SLOTS`], so a level's
/// digit of a time is `(t >> (LEVEL_BITS * level)) & SLOT_MASK`.
const LEVEL_BITS: u32 = 6;

/// Slots per level: `2^LEVEL_BITS = 64`, chosen so one level's occupancy is
/// exactly one `u64` bitmap.
const SLOTS: usize = 1 << LEVEL_BITS;

/// `SLOTS - 1`: masks a level's digit out of a shifted time.
const SLOT_MASK: u64 = SLOTS as u64 - 1;

/// Number of levels: 6 levels of 6 bits cover `6 * 6 = 36` bits of
/// milliseconds (≈2.2 years), comfortably more than any token lifetime.
const LEVELS: usize = 6;

/// Milliseconds covered by the whole wheel: `SLOTS^LEVELS = 2^(LEVEL_BITS *
/// LEVELS) = 2^36` ms ≈ 795 days ≈ 2.2 years. The top level's window is the
/// aligned `MAX_RANGE` block holding `elapsed`.
const MAX_RANGE: u64 = 1 << (LEVEL_BITS as usize * LEVELS);

/// Slots with fewer entries than this cascade entry by entry; bigger ones
/// are counted first (see `Wheel::cascade`), which costs two passes over a
/// 64 × 6 table.
const CASCADE_BATCH: usize = 1024;

/// A slot of level 1 or above holding at least this many entries is spread
/// to where it will cascade ahead of its time, a chunk at a time (see
/// [`Wheel::prepare`]): cascading it whole when its time comes would stall
/// the shard (184 ms measured for the ~4M entries of one 4,096 ms slot of a
/// 10M-token pool filled at once). Smaller slots cascade whole, in about a
/// millisecond or less.
pub const PREPARE_MIN: usize = 64 * 1024;

/// How long before its time a big slot starts being spread: this, plus a
/// millisecond per [`PREPARE_PER_MS`] entries. Spreading copies the entries,
/// so it starts close to the cascade (the copies live until then), but with
/// room to spare: spreading runs at about 40k entries a millisecond here,
/// and the driver does it in chunks between other work.
pub const PREPARE_LEAD_MS: u64 = 1_000;

/// See [`PREPARE_LEAD_MS`].
pub const PREPARE_PER_MS: u64 = 10_000;

/// Milliseconds covered by one slot at `level` (`64^level`): the granularity
/// at which that level's entries cascade.
const fn slot_range(level: usize) -> u64 {
    1 << (LEVEL_BITS as usize * level)
}

/// Milliseconds covered by a whole `level` (`64^(level + 1)`): the aligned
/// block of time its 64 slots partition.
const fn level_range(level: usize) -> u64 {
    slot_range(level) << LEVEL_BITS
}

/// The level for a placement time `when` given the clock `elapsed`: the level
/// whose bit range holds the highest bit where the two differ. Or-ing in
/// `SLOT_MASK` maps "differs only in level 0's bits" (and "equal") to level 0.
/// `when` must lie in `elapsed`'s top-level window (see [`placement`]).
fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = (elapsed ^ when) | SLOT_MASK;
    debug_assert!(masked < MAX_RANGE, "placement {when} outside the window of {elapsed}");
    let significant = (u64::BITS - 1 - masked.leading_zeros()) as usize;
    significant / LEVEL_BITS as usize
}

/// The slot of `when` at `level`: its 6-bit digit for that level.
fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (LEVEL_BITS as usize * level)) & SLOT_MASK) as usize
}

/// The time an entry registered for `when` is placed at: clamped into
/// `[elapsed, end of elapsed's top-level window]`, which is what keeps every
/// placement in reach of [`level_for`] without a wraparound case.
fn placement(elapsed: u64, when: u64) -> u64 {
    when.clamp(elapsed, elapsed | (MAX_RANGE - 1))
}

/// One level of the wheel: 64 slots plus a bitmap of the non-empty ones, so
/// finding the next occupied slot is a mask and a `trailing_zeros`.
struct Level<T> {
    /// Bit `s` is set iff `slots[s]` is non-empty.
    occupied: u64,
    /// Entries as `(registered_when, item)`; order within a slot is insertion
    /// order, which is the order they are returned in.
    slots: [Vec<(u64, T)>; SLOTS],
}

impl<T> Level<T> {
    /// An empty level; empty `Vec`s do not allocate.
    fn new() -> Self {
        Level { occupied: 0, slots: array::from_fn(|_| Vec::new()) }
    }

    /// Appends an entry to `slot` and marks it occupied.
    fn push(&mut self, slot: usize, entry: (u64, T)) {
        self.occupied |= 1 << slot;
        self.slots[slot].push(entry);
    }

    /// Appends a run of entries to `slot`, in order, and marks it occupied
    /// if any; into an empty slot the run's `Vec` itself moves (no copy).
    fn append(&mut self, slot: usize, mut entries: Vec<(u64, T)>) {
        if entries.is_empty() {
            return;
        }
        self.occupied |= 1 << slot;
        if self.slots[slot].is_empty() {
            self.slots[slot] = entries;
        } else {
            self.slots[slot].append(&mut entries);
        }
    }

    /// Takes `slot` whole and marks it empty. Taking (rather than draining in
    /// place) means entries re-inserted while the slot is processed can never
    /// be seen again by the same pass.
    fn take(&mut self, slot: usize) -> Vec<(u64, T)> {
        self.occupied &= !(1 << slot);
        mem::take(&mut self.slots[slot])
    }

    /// The earliest occupied slot of this level (which is level `level`) as
    /// `(start time, slot)`, for the clock `elapsed`.
    ///
    /// By the module invariant every occupied slot is at or after `elapsed`'s
    /// own slot, so masking off the slots below it and taking `trailing_zeros`
    /// finds the earliest one; tokio's `rotate_right` wraparound is not needed
    /// because placement never wraps.
    fn next_occupied(&self, level: usize, elapsed: u64) -> Option<(u64, usize)> {
        let now_slot = slot_for(elapsed, level);
        let ahead = self.occupied & (u64::MAX << now_slot);
        debug_assert_eq!(ahead, self.occupied, "level {level} has a slot behind the clock {elapsed}");
        if ahead == 0 {
            return None;
        }
        let slot = ahead.trailing_zeros() as usize;
        let level_start = elapsed & !(level_range(level) - 1);
        Some((level_start + slot as u64 * slot_range(level), slot))
    }
}

/// A hierarchical timing wheel: 6 levels × 64 slots, 1 ms per level-0 slot.
pub struct Wheel<T> {
    /// The clock: the `now` of the last poll (or of `new`). Placement is
    /// relative to it.
    elapsed: u64,
    /// Entries held, so `len` is O(1).
    len: usize,
    /// Level `L` holds entries whose placement differs from `elapsed` first in
    /// bits `6L..6L+6`. Boxed: 384 `Vec`s are ~9 KiB, too big to move around.
    levels: Box<[Level<T>; LEVELS]>,
    /// Big cascades near their time, partly spread ahead of it: at most
    /// one per level (each level's next occupied slot).
    prepared: Vec<Prepared<T>>,
    /// [`PREPARE_MIN`] (tests lower it).
    prepare_min: usize,
    /// [`PREPARE_LEAD_MS`] (tests raise it).
    prepare_lead_ms: u64,
    /// The emptied storage of big slots whose prepared cascade was moved
    /// into place (see [`Wheel::take_garbage`]).
    garbage: Vec<Vec<(u64, T)>>,
    /// The most entries one cascade moved that were not spread ahead
    /// (tests: what a poll costs at worst).
    #[cfg(test)]
    cold_cascade_max: usize,
}

/// A big level-`level` slot, starting at `start`, being spread ahead of its
/// time: copies of its first `done` entries already sit in `targets`, where
/// cascading at `start` will put them. The slot itself is untouched (entries
/// are only ever appended to it), so dropping this loses nothing.
///
/// Why the targets can be worked out early: cascading places an entry
/// relative to the clock, and the clock is exactly `start` when this slot
/// cascades (no occupied slot is behind the clock, and every slot that
/// comes before this one lies in lower levels, due before `start`). For the
/// same reason the levels below `level` are empty at that moment, so the
/// targets simply become those levels' slots.
struct Prepared<T> {
    level: usize,
    slot: usize,
    start: u64,
    done: usize,
    /// `targets[l][s]`: entries for slot `s` of level `l` (`l < level`).
    targets: Vec<[Vec<(u64, T)>; SLOTS]>,
}

impl<T> Wheel<T> {
    /// A wheel whose clock starts at `now` (ms).
    pub fn new(now: u64) -> Self {
        Wheel {
            elapsed: now,
            len: 0,
            levels: Box::new(array::from_fn(|_| Level::new())),
            prepared: Vec::new(),
            prepare_min: PREPARE_MIN,
            prepare_lead_ms: PREPARE_LEAD_MS,
            garbage: Vec::new(),
            #[cfg(test)]
            cold_cascade_max: 0,
        }
    }

    /// The wheel's current time: the `now` of the last poll (or of `new`).
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Number of entries held (including stale ones the owner will drop).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entries are held, i.e. `next_expiration` is `None`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Registers `item` to fire at `when`. O(1). A `when` at or before `elapsed()` fires on the next poll.
    /// A `when` beyond the top level's current window (≈2^36 ms ≈ 2.2 years) is placed at the end of that
    /// window and fires EARLY there; the caller sees the registered `when` it passed and re-arms (lazy re-arm).
    pub fn insert(&mut self, when: u64, item: T) {
        self.place(when, item);
        self.len += 1;
    }

    /// Registers every entry of `run`, all registered for `when` (as
    /// [`Wheel::insert`] one by one, in order): into an empty slot the
    /// run's `Vec` itself moves, so a run made ahead costs no copy.
    pub fn insert_run(&mut self, when: u64, run: Vec<(u64, T)>) {
        debug_assert!(run.iter().all(|e| e.0 == when), "a run is registered for one time");
        let at = placement(self.elapsed, when);
        let level = level_for(self.elapsed, at);
        self.len += run.len();
        self.levels[level].append(slot_for(at, level), run);
    }

    /// Makes room for `n` more entries at `when` (a GEN arms thousands of
    /// tokens at one deadline: their slot grows once, not by doubling).
    pub fn reserve_at(&mut self, when: u64, n: usize) {
        let at = placement(self.elapsed, when);
        let level = level_for(self.elapsed, at);
        self.levels[level].slots[slot_for(at, level)].reserve(n);
    }

    /// Advances the clock to `now` (must be >= elapsed(); if smaller, treat as elapsed()) and appends to `out`
    /// every entry due at or before `now`, as (registered_when, item), in nondecreasing order of the slot they
    /// fired from. Cascades higher-level slots down as their time comes: a slot is taken whole (std::mem::take)
    /// before its entries are re-inserted lower, so re-insertion can never loop.
    ///
    /// Each iteration handles one non-empty slot, so the cost is O(fired + cascaded) however far `now` jumps.
    pub fn poll(&mut self, now: u64, out: &mut Vec<(u64, T)>) {
        let now = now.max(self.elapsed);
        while let Some((deadline, level, slot)) = self.next_slot() {
            if deadline > now {
                break;
            }
            let entries = self.levels[level].take(slot);
            // Moving the clock to the slot's start before re-inserting is what
            // makes its entries land below `level`: they now share every digit
            // down to and including level `level` with `elapsed`.
            self.elapsed = self.elapsed.max(deadline);
            if level == 0 {
                self.len -= entries.len();
                if out.is_empty() && out.capacity() < entries.capacity() {
                    // A burst: its memory becomes the output (no copy, and
                    // no fresh pages to fault in; see `cascade`).
                    *out = entries;
                } else {
                    out.extend(entries);
                }
            } else {
                let entries = self.take_prepared(level, slot, deadline, entries);
                #[cfg(test)]
                {
                    self.cold_cascade_max = self.cold_cascade_max.max(entries.len());
                }
                self.cascade(entries, level);
            }
        }
        self.elapsed = now;
    }

    /// When the slot being cascaded was prepared: moves what was spread into
    /// place and returns the entries still to cascade (those appended since).
    fn take_prepared(&mut self, level: usize, slot: usize, start: u64, mut entries: Vec<(u64, T)>) -> Vec<(u64, T)> {
        let Some(at) = self.prepared.iter().position(|p| (p.level, p.slot, p.start) == (level, slot, start)) else {
            return entries;
        };
        let p = self.prepared.swap_remove(at);
        // The levels below are empty now (see `Prepared`); were they not,
        // what is there was placed before, so appending keeps the order.
        for (l, row) in p.targets.into_iter().enumerate() {
            for (s, spread) in row.into_iter().enumerate() {
                self.levels[l].append(s, spread);
            }
        }
        // What arrived since it was spread goes on in a Vec of its own
        // size; the slot's own (millions of entries, hundreds of MB) is
        // the owner's to free, outside its lock.
        let rest = entries.split_off(p.done.min(entries.len()));
        self.garbage.push(entries);
        rest
    }

    /// Takes the storage of big slots emptied by the last polls, for the
    /// owner to drop where freeing hundreds of megabytes stalls nobody.
    pub fn take_garbage(&mut self) -> Vec<Vec<(u64, T)>> {
        std::mem::take(&mut self.garbage)
    }

    /// The big cascades near their time at `now`: of each level's next
    /// occupied slot, those holding at least [`PREPARE_MIN`] entries whose
    /// lead has come (see [`PREPARE_LEAD_MS`]), as `(start, level, slot)`,
    /// earliest first.
    ///
    /// Every level, not only the earliest big slot: when a big slot
    /// cascades, its lower slots are big too, and one of them is always the
    /// earliest until the last has cascaded. A big slot of the level above
    /// that starts right after them would wait for that, and get only the
    /// last lower slot's time (64 ms at level 1) to be spread in.
    fn near_bigs(&self, now: u64) -> Vec<(u64, usize, usize)> {
        let mut near: Vec<(u64, usize, usize)> = (1..LEVELS)
            .filter_map(|l| self.levels[l].next_occupied(l, self.elapsed).map(|(t, s)| (t, l, s)))
            .filter(|&(start, l, s)| {
                let len = self.levels[l].slots[s].len();
                let lead = self.prepare_lead_ms.saturating_add(len as u64 / PREPARE_PER_MS);
                len >= self.prepare_min && start.saturating_sub(now) <= lead
            })
            .collect();
        near.sort_unstable();
        near
    }

    /// The earliest time at which `poll` has work to do (a firing or a cascade), or None when empty.
    /// The owner sleeps until then. Never earlier than elapsed().
    ///
    /// A cascade time is the start of a higher-level slot, which can be earlier than any entry's `when`; a
    /// poll then fires nothing and the owner simply asks again (at most `LEVELS - 1` such wakes per entry).
    pub fn next_expiration(&self) -> Option<u64> {
        self.next_slot().map(|(deadline, _, _)| deadline)
    }

    /// Re-inserts the entries of a level-`level` slot below it.
    ///
    /// A big slot (a whole expiry second, a pool filled in one go) is mostly
    /// time spent faulting in fresh pages for the slots it spreads to, not
    /// moving entries (measured on `cargo bench --bench wheel`, "fire 200k
    /// due in one ms": page faults and zeroing were over a quarter of it).
    /// So the target that gets the most entries keeps them in the taken
    /// `Vec` itself, whose pages are already there, and every other target
    /// is reserved its exact share up front instead of regrowing.
    fn cascade(&mut self, mut entries: Vec<(u64, T)>, level: usize) {
        if entries.len() < CASCADE_BATCH {
            for (when, item) in entries {
                debug_assert!(level_for(self.elapsed, placement(self.elapsed, when)) < level);
                self.place(when, item);
            }
            return;
        }
        let elapsed = self.elapsed;
        let target = |when: u64| {
            let at = placement(elapsed, when);
            let l = level_for(elapsed, at);
            debug_assert!(l < level);
            (l, slot_for(at, l))
        };
        let mut counts = [[0u32; SLOTS]; LEVELS];
        for (when, _) in &entries {
            let (l, slot) = target(*when);
            counts[l][slot] += 1;
        }
        let mut biggest = (0, 0, 0u32);
        for (l, row) in counts.iter().enumerate().take(level) {
            for (slot, &n) in row.iter().enumerate() {
                if n > biggest.2 {
                    biggest = (l, slot, n);
                }
            }
        }
        let (big_level, big_slot, _) = biggest;
        for (l, row) in counts.iter().enumerate().take(level) {
            for (slot, &n) in row.iter().enumerate() {
                if n > 0 && (l, slot) != (big_level, big_slot) {
                    self.levels[l].slots[slot].reserve(n as usize);
                }
            }
        }
        // Order is kept both ways: the others are appended in order, and
        // the ones left behind keep theirs.
        for (when, item) in entries.extract_if(.., |(when, _)| target(*when) != (big_level, big_slot)) {
            let (l, slot) = target(when);
            self.levels[l].push(slot, (when, item));
        }
        self.levels[big_level].append(big_slot, entries);
    }

    /// Puts an entry in the slot its clamped placement time selects, relative
    /// to the current clock. Shared by `insert` and cascading.
    fn place(&mut self, when: u64, item: T) {
        let at = placement(self.elapsed, when);
        let level = level_for(self.elapsed, at);
        self.levels[level].push(slot_for(at, level), (when, item));
    }

    /// The earliest non-empty slot over all levels as `(start time, level,
    /// slot)`. Ties go to the higher level (levels are visited top-down and
    /// only a strictly earlier time replaces the best), so a slot cascades
    /// before a lower slot at the same time fires. Under the invariant ties
    /// cannot actually occur (every level-`L` slot starts after all of level
    /// `L - 1`'s window, so the lowest occupied level wins), but six bitmap
    /// probes are cheap and correctness does not lean on that.
    fn next_slot(&self) -> Option<(u64, usize, usize)> {
        let mut best: Option<(u64, usize, usize)> = None;
        for level in (0..LEVELS).rev() {
            let Some((deadline, slot)) = self.levels[level].next_occupied(level, self.elapsed) else {
                continue;
            };
            if best.is_none_or(|(earliest, _, _)| deadline < earliest) {
                best = Some((deadline, level, slot));
            }
        }
        best
    }
}

/// Where a sweep of [`Wheel::retain_step`] stands: the next entry to look
/// at. `Sweep::default()` is the start. A sweep goes from the top level
/// down: cascading only ever moves entries to lower levels, so an entry held
/// when a sweep starts cannot slip past it into a level already swept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Levels done so far (the level swept is `LEVELS - 1 - done`).
    done: usize,
    slot: usize,
    index: usize,
}

impl Sweep {
    /// True at the start (nothing swept yet).
    pub fn is_start(&self) -> bool {
        *self == Sweep::default()
    }
}

impl<T> Wheel<T> {
    /// Drops the entries `keep` rejects (stale ones the owner would drop when
    /// they fire), looking at about `budget` entries from where `sweep`
    /// stopped. Returns true when the sweep has been over the whole wheel
    /// (`sweep` is then back at the start).
    ///
    /// Why: entries are never removed when a deadline moves (lazy resets),
    /// so a long lease that is given back early stays until it would have
    /// fired; at a high rate of acquisitions with long leases those would
    /// outnumber the live tokens without bound. The owner sweeps when that
    /// could be so, a budget at a time under its lock, which keeps the wheel
    /// within a constant factor of its live entries.
    ///
    /// A level-0 slot (one millisecond) is filtered whole with `retain`, so
    /// its order is kept; a higher slot is filtered a budget at a time with
    /// `swap_remove`, which leaves it consistent between steps but changes
    /// the order of its entries. That order only decides the order among
    /// entries that end up due in the same millisecond, which nothing
    /// relies on; a spread-ahead cascade ([`Wheel::prepare`]) relies on its
    /// slot's order, so it is dropped (and redone) if its slot loses entries.
    pub fn retain_step(&mut self, sweep: &mut Sweep, budget: usize, mut keep: impl FnMut(u64, &T) -> bool) -> bool {
        let mut seen = 0;
        while sweep.done < LEVELS && seen < budget {
            let (level, slot) = (LEVELS - 1 - sweep.done, sweep.slot);
            let entries = &mut self.levels[level].slots[slot];
            let before = entries.len();
            if level == 0 {
                entries.retain(|(when, item)| keep(*when, item));
                seen += before.max(1);
                sweep.index = usize::MAX;
            } else {
                let mut i = sweep.index;
                while i < entries.len() && seen < budget {
                    seen += 1;
                    let (when, item) = &entries[i];
                    if keep(*when, item) {
                        i += 1;
                    } else {
                        entries.swap_remove(i);
                    }
                }
                sweep.index = if i < entries.len() { i } else { usize::MAX };
                seen += usize::from(before == 0);
            }
            let removed = before - entries.len();
            if removed > 0 {
                self.len -= removed;
                if entries.is_empty() {
                    self.levels[level].occupied &= !(1 << slot);
                }
                self.prepared.retain(|p| (p.level, p.slot) != (level, slot));
            }
            if sweep.index == usize::MAX {
                sweep.index = 0;
                sweep.slot += 1;
                if sweep.slot == SLOTS {
                    sweep.slot = 0;
                    sweep.done += 1;
                }
            }
        }
        if sweep.done == LEVELS {
            *sweep = Sweep::default();
            return true;
        }
        false
    }
}

impl<T: Copy> Wheel<T> {
    /// Spreads up to `budget` more entries of the big cascades (slots of at
    /// least [`PREPARE_MIN`] entries) whose time is near (see
    /// [`PREPARE_LEAD_MS`]; `now` is the time now, which may be ahead of
    /// [`Wheel::elapsed`]) to where they will put them, the earliest first.
    /// Returns how many of their entries are left to spread now (0 when
    /// there is no big cascade, or none is near yet). The owner calls it
    /// between polls with a small budget, so that a big slot costs many
    /// short steps instead of one long stall when its time comes. Changes
    /// nothing a poll returns.
    pub fn prepare(&mut self, now: u64, mut budget: usize) -> usize {
        let near = self.near_bigs(now);
        // Spread work on a slot that is no longer near (an earlier big slot
        // appeared in its level) is dropped: the copies would live too long.
        self.prepared.retain(|p| near.iter().any(|&(t, l, s)| (t, l, s) == (p.start, p.level, p.slot)));
        let mut left = 0;
        for (start, level, slot) in near {
            let at = match self.prepared.iter().position(|p| (p.level, p.slot, p.start) == (level, slot, start)) {
                Some(at) => at,
                None => {
                    self.prepared.push(Prepared {
                        level,
                        slot,
                        start,
                        done: 0,
                        targets: (0..level).map(|_| array::from_fn(|_| Vec::new())).collect(),
                    });
                    self.prepared.len() - 1
                }
            };
            let p = &mut self.prepared[at];
            let entries = &self.levels[level].slots[slot];
            // Never true (a slot only grows until it is taken, and taking it
            // ends its preparation); if it were, the copies made are not the
            // slot's first entries: start over.
            if p.done > entries.len() {
                p.done = 0;
                p.targets.iter_mut().flatten().for_each(Vec::clear);
            }
            let end = entries.len().min(p.done.saturating_add(budget));
            for &(when, item) in &entries[p.done..end] {
                let at = placement(start, when);
                let l = level_for(start, at);
                debug_assert!(l < level);
                p.targets[l][slot_for(at, l)].push((when, item));
            }
            budget -= end - p.done;
            p.done = end;
            left += entries.len() - end;
        }
        left
    }

    /// The most entries one cascade moved that were not spread ahead
    /// (tests).
    #[cfg(test)]
    pub(crate) fn cold_cascade_max(&self) -> usize {
        self.cold_cascade_max
    }

    /// Entries of the big cascades spread so far (tests).
    #[cfg(test)]
    pub(crate) fn prepared_entries(&self) -> usize {
        self.prepared.iter().map(|p| p.done).sum()
    }
}

/// Summarises the clock, size and per-level occupancy bitmaps (the entries
/// themselves need not be `Debug`).
impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let occupied: Vec<String> = self.levels.iter().map(|level| format!("{:#018x}", level.occupied)).collect();
        f.debug_struct("Wheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len)
            .field("occupied", &occupied)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};

    /// A realistic, deliberately non-aligned epoch-ms start.
    const START: u64 = 1_700_000_000_123;

    /// The last millisecond of `t`'s top-level window.
    fn window_end(t: u64) -> u64 {
        t | (MAX_RANGE - 1)
    }

    /// Polls into a fresh vector.
    fn poll_vec<T>(wheel: &mut Wheel<T>, now: u64) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        wheel.poll(now, &mut out);
        out
    }

    /// xorshift64: a tiny deterministic PRNG so failures reproduce.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// Uniform-ish in `0..n` (`n > 0`).
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Boundary-heavy deadlines after `START`: around every level's next
    /// aligned boundary, plus plain offsets and the window's last ms.
    fn interesting_whens() -> Vec<u64> {
        let mut whens = vec![START, START + 1, START + 2, START + 63, START + 64, START + 65, START + 1_000];
        for level in 1..=LEVELS {
            // next multiple of 64^level after START, and neighbours
            let boundary = (START | (slot_range(level) - 1)) + 1;
            for w in [boundary - 1, boundary, boundary + 1, boundary + slot_range(level - 1) + 7] {
                whens.push(w);
            }
        }
        whens.push(START + 5_000_000);
        whens.push(START + (1 << 33) + 99);
        whens.push(window_end(START) - 1);
        whens.push(window_end(START));
        whens.retain(|&w| w <= window_end(START));
        whens.sort_unstable();
        whens.dedup();
        whens
    }

    /// A run goes in as its entries would one by one: into an empty slot
    /// and after entries already there, at every level; both wheels fire
    /// the same entries in the same order.
    #[test]
    fn a_run_fires_as_its_entries_inserted_one_by_one() {
        let (mut one, mut run) = (Wheel::new(START), Wheel::new(START));
        for (k, when) in [START + 3, START + 3, START + 700, START + 5_000_000, START + 700].into_iter().enumerate() {
            let items: Vec<(u64, u32)> = (0..50).map(|i| (when, (k * 100 + i) as u32)).collect();
            for &(w, item) in &items {
                one.insert(w, item);
            }
            run.insert_run(when, items);
            one.insert(when + 1, 9_999);
            run.insert(when + 1, 9_999);
        }
        assert_eq!(one.len(), run.len());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for now in [START + 2, START + 3, START + 701, START + 4_999_999, START + 6_000_000] {
            one.poll(now, &mut a);
            run.poll(now, &mut b);
            assert_eq!(a, b, "at {now}");
        }
        assert_eq!(a.len(), 255);
        assert!(run.is_empty());
    }

    #[test]
    fn level_and_slot_arithmetic() {
        assert_eq!(MAX_RANGE, 1 << 36);
        assert_eq!(level_range(LEVELS - 1), MAX_RANGE);
        assert_eq!(level_for(START, START), 0);
        assert_eq!(level_for(0, 63), 0);
        assert_eq!(level_for(0, 64), 1);
        assert_eq!(level_for(63, 64), 1);
        assert_eq!(level_for(64, 127), 0);
        assert_eq!(level_for(0, 4095), 1);
        assert_eq!(level_for(0, 4096), 2);
        assert_eq!(level_for(0, MAX_RANGE - 1), LEVELS - 1);
        assert_eq!(slot_for(0b101_000011, 0), 0b000011);
        assert_eq!(slot_for(0b101_000011, 1), 0b101);
        assert_eq!(slot_for(u64::MAX, LEVELS - 1), 63);
        assert_eq!(placement(100, 5), 100);
        assert_eq!(placement(100, 500), 500);
        assert_eq!(placement(100, u64::MAX), MAX_RANGE - 1);
        assert_eq!(placement(u64::MAX, 7), u64::MAX);
    }

    /// The placement invariant the whole design relies on, over random clocks
    /// and deadlines: same bits above the chosen level, and a strictly greater
    /// digit at that level for levels >= 1 (so slot 0 of levels >= 1 is
    /// structurally never used).
    #[test]
    fn placement_invariant_holds() {
        let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
        for _ in 0..100_000 {
            let elapsed = rng.next() >> rng.below(64);
            let when = match rng.below(3) {
                0 => rng.next(),
                1 => elapsed.saturating_add(rng.next() >> (28 + rng.below(36))),
                _ => elapsed.saturating_sub(rng.below(1_000)),
            };
            let at = placement(elapsed, when);
            let level = level_for(elapsed, at);
            assert!(level < LEVELS);
            assert!(at >= elapsed);
            let above = LEVEL_BITS as usize * (level + 1);
            assert_eq!(at >> above, elapsed >> above, "elapsed={elapsed} when={when}");
            if level > 0 {
                assert!(slot_for(at, level) > slot_for(elapsed, level), "elapsed={elapsed} when={when}");
            }
        }
    }

    #[test]
    fn every_level_and_slot_fires_exactly_on_time() {
        let mut covered = BTreeSet::new();
        for level in 0..LEVELS {
            let shift = LEVEL_BITS as usize * level;
            for slot in 0..SLOTS {
                // START itself, and START with this level's digit cleared so
                // the low slots of the level are reachable too.
                for start in [START, START & !(SLOT_MASK << shift)] {
                    let start_slot = slot_for(start, level);
                    let reachable = if level == 0 { slot >= start_slot } else { slot > start_slot };
                    if !reachable {
                        continue;
                    }
                    let above = start & !(level_range(level) - 1);
                    let below = (start ^ 0x2_5A5A_5A5A) & (slot_range(level) - 1);
                    let when = above | (slot as u64) << shift | if level == 0 { 0 } else { below };
                    let mut wheel = Wheel::new(start);
                    wheel.insert(when, (level, slot));
                    for (l, lvl) in wheel.levels.iter().enumerate() {
                        let expect = if l == level { 1u64 << slot } else { 0 };
                        assert_eq!(lvl.occupied, expect, "level {level} slot {slot} start {start}");
                    }
                    let slot_start = when & !(slot_range(level) - 1);
                    assert_eq!(wheel.next_expiration(), Some(slot_start), "level {level} slot {slot}");
                    if when > start {
                        assert!(poll_vec(&mut wheel, when - 1).is_empty(), "level {level} slot {slot} early");
                        assert_eq!(wheel.elapsed(), when - 1);
                        assert_eq!(wheel.next_expiration(), Some(when), "level {level} slot {slot}");
                        assert_eq!(wheel.len(), 1);
                    }
                    assert_eq!(poll_vec(&mut wheel, when), vec![(when, (level, slot))], "level {level} slot {slot}");
                    assert!(wheel.is_empty());
                    assert_eq!(wheel.next_expiration(), None);
                    covered.insert((level, slot));
                }
            }
        }
        // Everything except slot 0 of levels >= 1, which placement never uses.
        assert_eq!(covered.len(), SLOTS + (LEVELS - 1) * (SLOTS - 1));
    }

    #[test]
    fn cascades_fire_exactly_on_time_polled_ms_by_ms() {
        let whens = interesting_whens();
        let mut wheel = Wheel::new(START);
        for (id, &w) in whens.iter().enumerate() {
            wheel.insert(w, id);
        }
        let mut fired = vec![false; whens.len()];
        let mut prev = START;
        let mut check = |wheel: &mut Wheel<usize>, now: u64, prev: &mut u64| {
            for (when, id) in poll_vec(wheel, now) {
                assert_eq!(when, whens[id]);
                assert!(*prev < when && when <= now || when == START && now == START, "{when} fired at {now}");
                assert!(!fired[id], "{when} fired twice");
                fired[id] = true;
            }
            *prev = now;
        };
        check(&mut wheel, START, &mut prev);
        for &w in &whens {
            // jump close to the deadline, then walk a millisecond at a time
            if w > prev + 70 {
                check(&mut wheel, w - 70, &mut prev);
            }
            while prev < w + 2 {
                let now = prev + 1;
                check(&mut wheel, now, &mut prev);
            }
        }
        assert!(fired.iter().all(|&f| f));
        assert!(wheel.is_empty());
    }

    #[test]
    fn cascades_fire_in_order_under_big_jumps() {
        let whens = interesting_whens();
        let last = *whens.last().unwrap();
        // one giant jump past everything, and a few big uneven jumps
        let plans: [&[u64]; 3] = [
            &[last + 1_000],
            &[START + 100, START + 5_000, START + 300_000, START + (1 << 31), last, last + 1],
            &[START + (1 << 25) + 3, window_end(START) + 12_345, u64::MAX],
        ];
        for plan in plans {
            let mut wheel = Wheel::new(START);
            for (id, &w) in whens.iter().enumerate() {
                wheel.insert(w, id);
            }
            let mut prev = START;
            let mut all = Vec::new();
            for &now in plan {
                let out = poll_vec(&mut wheel, now);
                assert!(out.windows(2).all(|p| p[0].0 <= p[1].0), "out of order: {out:?}");
                for &(when, id) in &out {
                    assert_eq!(when, whens[id]);
                    assert!(when <= now && (when > prev || when == START), "{when} fired at {now}");
                }
                all.extend(out);
                prev = now;
                assert_eq!(wheel.elapsed(), now);
            }
            let got: Vec<u64> = all.iter().map(|&(w, _)| w).collect();
            assert_eq!(got, whens, "plan {plan:?}");
            assert!(wheel.is_empty());
        }
    }

    #[test]
    fn past_deadlines_fire_on_next_poll() {
        let mut wheel = Wheel::new(START);
        assert!(poll_vec(&mut wheel, START + 100).is_empty());
        wheel.insert(START + 50, "past");
        wheel.insert(START + 100, "now");
        wheel.insert(0, "epoch");
        assert_eq!(wheel.next_expiration(), Some(START + 100));
        // a `now` behind the clock is treated as the clock
        let mut out = vec![(1, "kept")];
        wheel.poll(START, &mut out);
        assert_eq!(wheel.elapsed(), START + 100);
        assert_eq!(out, vec![(1, "kept"), (START + 50, "past"), (START + 100, "now"), (0, "epoch")]);
        assert!(wheel.is_empty());
        // and on a poll that does advance
        wheel.insert(START + 1, "late");
        assert_eq!(poll_vec(&mut wheel, START + 101), vec![(START + 1, "late")]);
    }

    #[test]
    fn far_future_fires_early_at_window_end_with_registered_when() {
        let end = window_end(START);
        let far = [end + 1, START + MAX_RANGE, START + (1 << 40), u64::MAX];
        let mut wheel = Wheel::new(START);
        for (id, &w) in far.iter().enumerate() {
            wheel.insert(w, id);
        }
        wheel.insert(end, 99);
        let next = wheel.next_expiration().unwrap();
        assert!(START < next && next <= end);
        assert!(poll_vec(&mut wheel, end - 1).is_empty());
        assert_eq!(wheel.next_expiration(), Some(end));
        let out = poll_vec(&mut wheel, end);
        assert_eq!(out.len(), far.len() + 1);
        let mut got: Vec<_> = out.iter().map(|&(w, id)| (id, w)).collect();
        got.sort_unstable();
        let mut want: Vec<_> = far.iter().copied().enumerate().collect();
        want.push((99, end));
        assert_eq!(got, want);

        // Lazy re-arm from the next window: now the nearer ones fit.
        let mut wheel = Wheel::new(end + 1);
        wheel.insert(START + MAX_RANGE, "rearmed");
        assert!(poll_vec(&mut wheel, START + MAX_RANGE - 1).is_empty());
        assert_eq!(poll_vec(&mut wheel, START + MAX_RANGE), vec![(START + MAX_RANGE, "rearmed")]);
    }

    #[test]
    fn extreme_clock_values() {
        for start in [0, 1 << 60, (1 << 60) + 12_345, u64::MAX - 100, u64::MAX] {
            let mut wheel = Wheel::new(start);
            let whens: Vec<u64> =
                [0, 1, 63, 64, 4_097, 1 << 20, 1 << 35].iter().map(|&d| start.saturating_add(d)).collect();
            for (id, &w) in whens.iter().enumerate() {
                wheel.insert(w, id);
            }
            wheel.insert(start.saturating_sub(10), usize::MAX);
            let mut fired = 0;
            let mut guard = 0;
            while let Some(t) = wheel.next_expiration() {
                assert!(t >= wheel.elapsed());
                for (when, id) in poll_vec(&mut wheel, t) {
                    assert!(when <= t, "start {start}: {when} fired at {t}");
                    // placement clamps to the window end; otherwise exact
                    if id != usize::MAX && when <= window_end(start) {
                        assert_eq!(when, t, "start {start}");
                    }
                    fired += 1;
                }
                guard += 1;
                assert!(guard < 100, "start {start}: too many wakes");
            }
            assert_eq!(fired, whens.len() + 1, "start {start}");
        }
    }

    #[test]
    fn len_tracks_inserts_and_fires() {
        let mut wheel = Wheel::new(START);
        assert!(wheel.is_empty());
        assert_eq!(wheel.len(), 0);
        for i in 0..10u64 {
            wheel.insert(START + i * 1_000, i);
            assert_eq!(wheel.len(), i as usize + 1);
        }
        wheel.insert(START + 4_500, 100); // same region, cascades with the others
        assert_eq!(wheel.len(), 11);
        // cascades do not change len; firing does
        assert_eq!(poll_vec(&mut wheel, START + 4_095).len(), 5);
        assert_eq!(wheel.len(), 6);
        assert_eq!(poll_vec(&mut wheel, START + 4_500).len(), 1);
        assert_eq!(wheel.len(), 5);
        assert!(!wheel.is_empty());
        assert_eq!(poll_vec(&mut wheel, u64::MAX).len(), 5);
        assert_eq!(wheel.len(), 0);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_expiration(), None);
    }

    /// Owner-style loop (sleep until `next_expiration`, poll) over a sparse
    /// wheel spanning ~2 years: the number of wakes is bounded by cascades,
    /// not by milliseconds, and a single poll can jump a year.
    #[test]
    fn sparse_wheel_jumps_years_without_walking_milliseconds() {
        let start = START & !(MAX_RANGE - 1); // window start, so 2 years fit
        let whens: Vec<u64> = (1..=10).map(|i| start + i * (MAX_RANGE / 11) + i).collect();
        let mut wheel = Wheel::new(start);
        for &w in &whens {
            wheel.insert(w, w);
        }
        let mut wakes = 0;
        let mut fired = Vec::new();
        while let Some(t) = wheel.next_expiration() {
            for (when, item) in poll_vec(&mut wheel, t) {
                assert_eq!((when, item), (t, t));
                fired.push(when);
            }
            wakes += 1;
        }
        assert_eq!(fired, whens);
        assert!(wakes <= whens.len() * LEVELS, "{wakes} wakes");

        let mut wheel = Wheel::new(start);
        wheel.insert(start + 7, 0);
        wheel.insert(start + 365 * 86_400_000 + 5, 1);
        let began = Instant::now();
        assert_eq!(poll_vec(&mut wheel, start + 365 * 86_400_000), vec![(start + 7, 0)]);
        assert!(began.elapsed() < Duration::from_secs(1));
        assert_eq!(wheel.next_expiration(), Some(start + 365 * 86_400_000 + 5));
    }

    /// Sweeps interleaved with inserts, polls and spread-ahead cascades:
    /// every entry the predicate keeps fires exactly once, at its time; a
    /// rejected entry never fires twice, never early, and after a whole sweep
    /// that started after it was inserted it is gone; `len` is always the
    /// number of entries held.
    #[test]
    fn retain_sweeps_drop_exactly_the_rejected_entries() {
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        for round in 0..24 {
            let mut wheel = Wheel::new(START);
            if round % 2 == 1 {
                wheel.prepare_min = 2;
                wheel.prepare_lead_ms = u64::MAX;
            }
            let dead = |id: &u64| id % 5 == 2;
            let mut when_of: BTreeMap<u64, u64> = BTreeMap::new();
            let mut fired: BTreeSet<u64> = BTreeSet::new();
            // Rejected ids inserted before the current sweep started.
            let (mut older, mut newer): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
            let mut sweep = Sweep::default();
            let mut out = Vec::new();
            // Kept entries not fired yet, by (when, id).
            let mut kept_pending: BTreeSet<(u64, u64)> = BTreeSet::new();
            let check = |out: &[(u64, u64)],
                         now: u64,
                         fired: &mut BTreeSet<u64>,
                         kept_pending: &mut BTreeSet<(u64, u64)>,
                         when_of: &BTreeMap<u64, u64>| {
                for &(w, id) in out {
                    assert!(w <= now, "{id} fired early");
                    assert_eq!(when_of.get(&id), Some(&w));
                    assert!(fired.insert(id), "{id} fired twice");
                    kept_pending.remove(&(w, id));
                }
            };
            for id in 0..3_000u64 {
                let elapsed = wheel.elapsed();
                let bits = 6 * (1 + rng.below(4)) as u32;
                let when = elapsed + rng.below(1 << bits);
                wheel.insert(when, id);
                when_of.insert(id, when);
                if dead(&id) {
                    newer.push(id);
                } else {
                    kept_pending.insert((when, id));
                }
                match rng.below(10) {
                    0..=2 => {
                        if sweep.is_start() {
                            older.append(&mut newer);
                        }
                        if wheel.retain_step(&mut sweep, 1 + rng.below(40) as usize, |_, id| !dead(id)) {
                            // Every rejected entry held when the sweep began is gone.
                            let held = held_ids(&wheel);
                            for id in older.drain(..) {
                                assert!(!held.contains(&id), "{id} survived a whole sweep");
                            }
                        }
                    }
                    3 => {
                        wheel.prepare(elapsed, 1 + rng.below(8) as usize);
                    }
                    4 | 5 => {
                        let now = elapsed + rng.below(1 << 14);
                        out.clear();
                        wheel.poll(now, &mut out);
                        check(&out, now, &mut fired, &mut kept_pending, &when_of);
                        let missed = kept_pending.range(..(now.saturating_add(1), 0)).next();
                        assert!(missed.is_none(), "a due entry did not fire: {missed:?}");
                    }
                    _ => {}
                }
                let held = when_of.len() - fired.len();
                assert!(wheel.len() <= held, "len {} but only {held} could be held", wheel.len());
            }
            out.clear();
            wheel.poll(u64::MAX / 2, &mut out);
            check(&out, u64::MAX / 2, &mut fired, &mut kept_pending, &when_of);
            assert!(wheel.is_empty());
            let kept: BTreeSet<u64> = when_of.keys().copied().filter(|id| !dead(id)).collect();
            assert!(kept.is_subset(&fired), "round {round}: a kept entry never fired");
        }
    }

    /// Every id the wheel holds (tests: a full scan).
    fn held_ids(wheel: &Wheel<u64>) -> BTreeSet<u64> {
        wheel.levels.iter().flat_map(|l| l.slots.iter().flatten()).map(|&(_, id)| id).collect()
    }

    /// Random inserts and polls against a sorted reference model: every entry
    /// fires exactly once, in the first poll whose `now` reaches its `when`
    /// (never before), in nondecreasing placement order, with `len` and
    /// `next_expiration` consistent. Far-future deadlines are not generated.
    #[test]
    fn randomized_against_reference_model() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..48 {
            let start = match round % 4 {
                0 => START,
                1 => rng.below(1 << 60),
                // just before a window boundary, so the clock crosses windows
                2 => (rng.below(1 << 20) << 36) | (MAX_RANGE - 1 - rng.below(300_000)),
                _ => rng.below(1 << 42),
            };
            let mut wheel = Wheel::new(start);
            // Half the rounds spread every slot of 2+ entries ahead of time,
            // in random steps between the inserts and polls.
            let preparing = round % 2 == 1;
            if preparing {
                wheel.prepare_min = 2;
                wheel.prepare_lead_ms = u64::MAX;
            }
            // (placement, id) -> registered when
            let mut model: BTreeMap<(u64, u64), u64> = BTreeMap::new();
            let mut next_id = 0u64;
            let mut out = Vec::new();
            for _ in 0..1_500 {
                let elapsed = wheel.elapsed();
                if preparing && rng.below(3) == 0 {
                    wheel.prepare(elapsed, 1 + rng.below(8) as usize);
                }
                if rng.below(10) < 6 {
                    let when = match rng.below(9) {
                        0 => elapsed.saturating_sub(rng.below(10_000)),
                        k => elapsed.saturating_add(rng.below(1 << (6 * (k - 1) as u32).clamp(1, 36))),
                    }
                    .min(window_end(elapsed));
                    wheel.insert(when, next_id);
                    model.insert((when.max(elapsed), next_id), when);
                    next_id += 1;
                } else {
                    let now = match rng.below(8) {
                        0 => elapsed,
                        1 => elapsed + 1,
                        2 => elapsed + rng.below(64),
                        3 => elapsed + rng.below(5_000),
                        4 => elapsed + rng.below(1 << 20),
                        5 => elapsed + rng.below(1 << 32),
                        6 => wheel.next_expiration().unwrap_or(elapsed),
                        _ => wheel.next_expiration().map_or(elapsed, |t| t.saturating_sub(1)),
                    };
                    out.clear();
                    // `now` may be behind the clock (the `- 1` case): poll treats it as the clock
                    wheel.poll(now, &mut out);
                    let now = now.max(elapsed);
                    assert_eq!(wheel.elapsed(), now);
                    let due: Vec<(u64, u64)> = model.range(..(now.saturating_add(1), 0)).map(|(&k, _)| k).collect();
                    let mut placements = Vec::with_capacity(out.len());
                    let mut got = BTreeSet::new();
                    for &(when, id) in &out {
                        let key = due.iter().find(|k| k.1 == id).copied();
                        let key = key.unwrap_or_else(|| panic!("id {id} when {when} fired early at {now}"));
                        assert_eq!(model[&key], when);
                        assert!(got.insert(id), "id {id} fired twice");
                        placements.push(key.0);
                    }
                    assert_eq!(got.len(), due.len(), "poll({now}) from {elapsed} missed entries");
                    assert!(placements.windows(2).all(|p| p[0] <= p[1]), "out of slot order");
                    for key in due {
                        model.remove(&key);
                    }
                }
                assert_eq!(wheel.len(), model.len());
                let next = wheel.next_expiration();
                match model.keys().next() {
                    None => assert_eq!(next, None),
                    Some(&(earliest, _)) => {
                        let next = next.expect("entries held but no expiration");
                        assert!(next >= wheel.elapsed() && next <= earliest, "next {next} earliest {earliest}");
                    }
                }
            }
        }
    }

    /// A slot big enough to cascade in one batch (see `Wheel::cascade`):
    /// every entry fires at its `when`, and entries due at the same time
    /// fire in the order they were inserted, whether they stayed in the taken
    /// `Vec` (the biggest target) or moved out of it.
    #[test]
    fn a_big_cascade_keeps_insertion_order() {
        let base = START.next_multiple_of(1 << 12) + (1 << 12);
        let mut wheel = Wheel::new(START);
        let mut expect: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        // Interleaved: 2,770 due at `base`, 600 at base + 1, 300 at base + 70
        // (another level-1 slot) and 250 at base + 5,000 (another level-2
        // slot).
        for i in 0..3_920u32 {
            let when = match i % 13 {
                0..=9 if i < 3_000 + 600 => base,
                10 | 11 => base + 1,
                12 => base + 70,
                _ => base + 5_000,
            };
            let when = if i >= 3_900 { base + 5_000 } else { when };
            wheel.insert(when, i);
            expect.entry(when).or_default().push(i);
        }
        let mut out = Vec::new();
        let mut fired = 0;
        for now in START..=base + 5_000 {
            out.clear();
            wheel.poll(now, &mut out);
            if out.is_empty() {
                continue;
            }
            assert!(out.iter().all(|&(when, _)| when == now), "fired at {now}: {:?}", &out[..1]);
            let ids: Vec<u32> = out.iter().map(|&(_, id)| id).collect();
            assert_eq!(ids, expect[&now], "order at {now}");
            fired += ids.len();
        }
        assert_eq!(fired, 3_920);
        assert!(wheel.is_empty());
    }

    /// A big slot spread ahead of its time in steps, with entries still
    /// arriving in it between the steps, fires exactly what the same wheel
    /// unprepared fires, poll for poll, in the same order.
    #[test]
    fn a_prepared_cascade_fires_exactly_what_an_unprepared_one_does() {
        let mut rng = XorShift(0x0005_EED0_FCA5_CADE);
        // The next level-2 slot: [base, base + 4096).
        let base = START.next_multiple_of(1 << 12) + (1 << 12);
        let mut plain = Wheel::new(START);
        let mut prepared = Wheel::new(START);
        prepared.prepare_min = 1_000;
        let mut id = 0u32;
        let mut add = |n: usize, plain: &mut Wheel<u32>, prepared: &mut Wheel<u32>, rng: &mut XorShift| {
            for _ in 0..n {
                // Many share a millisecond (order matters); some land in the
                // slot's first 64 ms, which cascade straight to level 0.
                let when = match rng.below(4) {
                    0 => base + rng.below(64),
                    _ => base + rng.below(4_096),
                };
                plain.insert(when, id);
                prepared.insert(when, id);
                id += 1;
            }
        };
        add(5_000, &mut plain, &mut prepared, &mut rng);
        // Not near enough yet: the copies would live too long.
        let near = base - PREPARE_LEAD_MS;
        assert_eq!(prepared.prepare(near - 1, 2_000), 0);
        assert_eq!(prepared.prepared_entries(), 0);
        assert_eq!(prepared.prepare(near, 2_000), 3_000);
        add(1_500, &mut plain, &mut prepared, &mut rng);
        assert_eq!(prepared.prepare(near, 2_000), 2_500);
        // A poll before the slot's time changes nothing prepared.
        assert!(poll_vec(&mut plain, base - 10).is_empty());
        assert!(poll_vec(&mut prepared, base - 10).is_empty());
        assert_eq!(prepared.prepare(base - 10, 1_000), 1_500);
        assert_eq!(prepared.prepared_entries(), 5_000);
        add(700, &mut plain, &mut prepared, &mut rng);
        assert_eq!(prepared.prepared.len(), 1);
        let mut fired = 0;
        for now in base - 9..=base + 4_096 {
            let (a, b) = (poll_vec(&mut plain, now), poll_vec(&mut prepared, now));
            assert_eq!(a, b, "poll({now})");
            assert!(a.iter().all(|&(when, _)| when == now));
            fired += a.len();
            if now == base {
                assert!(prepared.prepared.is_empty(), "the slot's cascade took what was spread");
            }
        }
        assert_eq!(fired, 7_200);
        assert!(plain.is_empty() && prepared.is_empty());
        // Nothing big ahead: nothing to do.
        assert_eq!(prepared.prepare(base + 4_096, 1_000), 0);
    }

    /// A pool made at once, due within a 2 s window that straddles two
    /// level-2 slots, with an owner that spreads only so much per
    /// millisecond: the second level-2 slot is spread while the first one's
    /// level-1 slots (big as well) come and go, so no cascade moves a big
    /// slot's entries unspread, and everything fires on time.
    #[test]
    fn every_big_cascade_is_spread_before_its_time() {
        const N: u64 = 400_000;
        // What the owner spreads per millisecond of the clock.
        const BUDGET: usize = 1_000;
        let mut wheel = Wheel::new(START);
        wheel.prepare_min = 4_096;
        let boundary = (START + 30_000).next_multiple_of(1 << 12);
        let window = boundary - 1_000;
        for i in 0..N {
            wheel.insert(window + i * 2_000 / N, i as u32);
        }
        let (big_a, big_b) = (slot_for(boundary - 1, 2), slot_for(boundary, 2));
        assert_eq!(wheel.levels[2].slots[big_a].len() as u64, N / 2);
        assert_eq!(wheel.levels[2].slots[big_b].len() as u64, N / 2);
        let mut out = Vec::new();
        let mut fired = 0;
        for now in START..window + 2_000 {
            wheel.prepare(now, BUDGET);
            out.clear();
            wheel.poll(now, &mut out);
            assert!(out.iter().all(|&(when, _)| when == now), "fired at {now}");
            fired += out.len() as u64;
        }
        assert_eq!(fired, N);
        assert!(wheel.is_empty());
        assert!(
            wheel.cold_cascade_max < wheel.prepare_min,
            "a cascade moved {} entries that were not spread ahead",
            wheel.cold_cascade_max
        );
    }

    /// One million entries over 60 s, polled every millisecond: all fire, each
    /// in exactly the poll at its `when`.
    #[test]
    fn million_entries_over_sixty_seconds_fire_on_time() {
        const N: usize = 1_000_000;
        const SPAN: u64 = 60_000;
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        let mut wheel = Wheel::new(START);
        for _ in 0..N {
            let when = START + 1 + rng.below(SPAN);
            wheel.insert(when, when as u32);
        }
        assert_eq!(wheel.len(), N);
        let mut out = Vec::new();
        let mut fired = 0;
        for now in START + 1..=START + SPAN {
            out.clear();
            wheel.poll(now, &mut out);
            for &(when, item) in &out {
                assert!(when == now && item == when as u32, "{when} fired at {now}");
            }
            fired += out.len();
        }
        assert_eq!(fired, N);
        assert!(wheel.is_empty());
    }
}
