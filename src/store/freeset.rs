//! The free tokens of a pool: a bitmap over slot numbers, with counts of set
//! bits per block so that a uniformly random member can be found exactly.
//!
//! Why a bitmap and not a `Vec` of slot numbers: at 10M tokens the bitmap is
//! 1.25 MB and stays in cache, whereas a 40 MB vector (plus a position field
//! in every record, to remove from the middle) costs a cache and TLB miss per
//! ACQUIRE, and a second one to fix the position of the entry that moved.
//!
//! - `insert`/`remove`: one bit and one counter per level, O(levels) with
//!   levels = log64(slots) − 1 (2 at 10M slots).
//! - `pick`: while at least [`PROBE_DENSITY`] of the slots are free, a few
//!   random probes of the bitmap (one probe on average when nearly all are
//!   free); otherwise, or if the probes miss, the k-th member for a uniform
//!   k, found by walking the counts (≤ 64 entries a level). Each way gives
//!   every free slot the same chance, so the mix of the two does too.
//! - `take_random`, for ACQUIRE: in large sets the next [`AHEAD`] picks are
//!   drawn together ahead of time ([`FreeSet::take_random`] explains how
//!   each still is exactly uniform) so that the caller can prefetch their
//!   slots at once. At 10M tokens each slot is a cache and TLB miss (a
//!   two-dimensional page walk in a VM) that stalls the CPU; sixteen of them
//!   issued together overlap instead of stalling one after another.

use rand::{Rng, RngExt};

/// Probing is tried while at least 1 slot in this many is free.
const PROBE_DENSITY: usize = 8;
/// Random probes before falling back to an exact select.
const PROBES: usize = 4;
/// Fan-out of the count levels (and bits per bitmap word).
const FAN: usize = 64;
/// Sets over at least this many slots draw ahead (smaller ones are in cache
/// anyway and would only pay for the bookkeeping).
const AHEAD_MIN_SLOTS: usize = 1 << 15;
/// Picks drawn ahead together.
pub(crate) const AHEAD: usize = 16;
/// Distinct slots changed since the draw that are remembered; past this the
/// draw is dropped (and made again at the next take).
const AHEAD_MAX_TOUCHED: usize = 64;

#[derive(Default)]
pub(crate) struct FreeSet {
    /// The bitmap; one word (64 slots) sits inline, so that a small pool's
    /// free set allocates nothing.
    words: smallvec::SmallVec<[u64; 1]>,
    len: usize,
    /// The counts and the picks drawn ahead: only a large set has them, so
    /// a small one (a pool per tenant) does not carry the room.
    la: Option<Box<Ahead>>,
}

#[derive(Default)]
struct Ahead {
    /// `counts[0][i]`: set bits in `words[64i..64i+64]`; `counts[l+1][j]`:
    /// the sum of `counts[l][64j..64j+64]`. The last level has ≤ 64 entries.
    /// Empty while the bitmap has at most 64 words.
    counts: Vec<Vec<u32>>,
    /// Picks drawn ahead, next one last (see `take_random`).
    ahead: Vec<u32>,
    /// `D`: the distinct slots inserted or removed since `ahead` was drawn.
    touched: Vec<u32>,
    /// |F' ∩ D|: how many of `touched` are members now.
    touched_members: usize,
}

impl Ahead {
    /// Notes a change of `slot` (now a member iff `added`) in `D`.
    fn touch(&mut self, slot: u32, added: bool) {
        if self.touched.contains(&slot) {
            // Its membership flipped again.
            if added {
                self.touched_members += 1;
            } else {
                self.touched_members -= 1;
            }
        } else if self.touched.len() < AHEAD_MAX_TOUCHED {
            self.touched.push(slot);
            self.touched_members += added as usize;
        } else {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.ahead.clear();
        self.touched.clear();
        self.touched_members = 0;
    }
}

impl FreeSet {
    /// Bytes it holds on the heap (MEMORY USAGE).
    pub fn heap_bytes(&self) -> usize {
        (if self.words.spilled() { self.words.capacity() * 8 } else { 0 })
            + self.counts().iter().map(|c| c.capacity() * 4).sum::<usize>()
            + self.la.as_ref().map_or(0, |a| size_of::<Ahead>() + (a.ahead.capacity() + a.touched.capacity()) * 4)
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes room for slot numbers below `slots` (new slots are not members).
    pub fn grow(&mut self, slots: usize) {
        let words = slots.div_ceil(FAN);
        if words <= self.words.len() {
            return;
        }
        if !self.words.spilled() && words > self.words.inline_size() {
            // Exactly what the first growth past the inline word asks for.
            self.words.reserve_exact(words - self.words.len());
        }
        self.words.resize(words, 0);
        if words <= FAN && self.counts().is_empty() {
            return;
        }
        let counts = &mut self.la.get_or_insert_with(Box::default).counts;
        let mut below = words;
        let mut level = 0;
        while below > FAN || level < counts.len() {
            let n = below.div_ceil(FAN);
            if level == counts.len() {
                // A new top level: its counts are sums of the level below.
                let sums = match level {
                    0 => self.words.chunks(FAN).map(|c| c.iter().map(|w| w.count_ones()).sum()).collect(),
                    _ => counts[level - 1].chunks(FAN).map(|c| c.iter().sum()).collect(),
                };
                counts.push(sums);
            } else {
                counts[level].resize(n, 0);
            }
            below = n;
            level += 1;
        }
    }

    /// True if `slot` is a member.
    pub fn contains(&self, slot: u32) -> bool {
        let s = slot as usize;
        self.words.get(s / FAN).is_some_and(|w| w & (1 << (s % FAN)) != 0)
    }

    /// Starts loading the bitmap word of `slot` (a hint).
    pub fn prefetch(&self, slot: u32) {
        if let Some(w) = self.words.get(slot as usize / FAN) {
            prefetch(w);
        }
    }

    /// Adds `slot` (the caller grew the set to cover it); false if it was
    /// already a member.
    pub fn insert(&mut self, slot: u32) -> bool {
        self.update(slot, true)
    }

    /// Adds every slot in `range` (the caller grew the set to cover it) a
    /// word at a time; returns how many were not members. Picks drawn
    /// ahead are dropped, to be drawn again at the next take.
    pub fn insert_range(&mut self, range: std::ops::Range<u32>) -> usize {
        let end = (range.end as usize).min(self.words.len() * FAN);
        let mut s = range.start as usize;
        let mut la = self.la.as_deref_mut();
        if s < end
            && let Some(a) = la.as_mut()
        {
            a.clear();
        }
        let mut added = 0;
        while s < end {
            let w = s / FAN;
            let (lo, hi) = (s % FAN, (end - w * FAN).min(FAN));
            let mask = (u64::MAX >> (FAN - (hi - lo))) << lo;
            let new = (mask & !self.words[w]).count_ones();
            self.words[w] |= mask;
            if new > 0
                && let Some(a) = la.as_mut()
            {
                let mut i = w;
                for level in &mut a.counts {
                    i /= FAN;
                    level[i] += new;
                }
            }
            added += new as usize;
            s = w * FAN + hi;
        }
        self.len += added;
        added
    }

    /// Removes `slot`; false if it was not a member.
    pub fn remove(&mut self, slot: u32) -> bool {
        self.update(slot, false)
    }

    fn update(&mut self, slot: u32, add: bool) -> bool {
        let s = slot as usize;
        let Some(w) = self.words.get_mut(s / FAN) else { return false };
        let bit = 1u64 << (s % FAN);
        if (*w & bit != 0) == add {
            return false;
        }
        *w ^= bit;
        if let Some(a) = self.la.as_mut() {
            if !a.ahead.is_empty() {
                a.touch(slot, add);
            }
            let mut i = s / FAN;
            for level in &mut a.counts {
                i /= FAN;
                if add {
                    level[i] += 1;
                } else {
                    level[i] -= 1;
                }
            }
        }
        if add {
            self.len += 1;
        } else {
            self.len -= 1;
        }
        true
    }

    /// A uniformly random member, or None if empty.
    pub fn pick(&self, rng: &mut impl Rng) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let bits = self.words.len() * FAN;
        if self.len * PROBE_DENSITY >= bits {
            for _ in 0..PROBES {
                let s = rng.random_range(0..bits) as u32;
                if self.contains(s) {
                    return Some(s);
                }
            }
        }
        self.select(rng.random_range(0..self.len))
    }

    /// The count levels (none while the bitmap has at most 64 words).
    fn counts(&self) -> &[Vec<u32>] {
        self.la.as_ref().map_or(&[], |a| &a.counts)
    }

    fn drop_ahead(&mut self) {
        if let Some(a) = self.la.as_mut() {
            a.clear();
        }
    }

    /// The picks drawn ahead that are left (none in a small set).
    fn ahead_left(&self) -> usize {
        self.la.as_ref().map_or(0, |a| a.ahead.len())
    }

    /// Removes and returns a uniformly random member (None if empty). In a
    /// large set, when the picks drawn ahead run out, draws the next
    /// [`AHEAD`] and hands each to `prefetch`.
    ///
    /// Why every pick stays uniform. At time 0 the picks `c1, c2, …` were
    /// drawn without replacement from the set `F0`, so given `c1…c(j-1)`,
    /// `cj` is uniform over `G = F0 \ {c1…c(j-1)}`. They are used in order
    /// and only while each earlier one was taken (otherwise the rest are
    /// dropped), so `c1…c(j-1)` are out of the set and were changes. Let `D`
    /// be every slot changed since time 0 and `F'` the set now. A member of
    /// `U = F' \ D` was never changed, so it is in `G`; a slot of `G` that
    /// never changed is still a member: `U = G \ D`, and `F' = U ∪ (F' ∩ D)`.
    /// With probability |F' ∩ D| / |F'| the pick is a uniform member of
    /// `F' ∩ D`; otherwise it is `cj` if `cj ∉ D`, else a fresh uniform draw
    /// from `F'` rejecting `D`. For `x ∈ U`:
    /// P = 1/|G| + (|G ∩ D|/|G|)·(1/|U|) = 1/|U| (as |U| = |G| − |G ∩ D|):
    /// uniform over `U`, hence over `F'`. The picks not yet used are never
    /// shown to anyone, so what changes meanwhile does not depend on them.
    pub fn take_random(&mut self, rng: &mut impl Rng, prefetch: impl FnMut(u32)) -> Option<u32> {
        if self.len == 0 {
            self.drop_ahead();
            return None;
        }
        let picked = match self.la.as_ref().and_then(|a| Some((a, a.ahead.last().copied()?))) {
            None => self.pick(rng),
            Some((a, c)) => {
                let r = rng.random_range(0..self.len);
                if r < a.touched_members {
                    let t = a.touched.iter().copied().filter(|&t| self.contains(t)).nth(r);
                    self.drop_ahead();
                    t
                } else if !a.touched.contains(&c) && self.contains(c) {
                    if let Some(a) = self.la.as_mut() {
                        a.ahead.pop();
                    }
                    Some(c)
                } else {
                    let t = self.pick_outside_touched(rng);
                    self.drop_ahead();
                    t
                }
            }
        };
        if self.ahead_left() == 0 {
            self.drop_ahead();
        }
        let slot = picked?;
        self.remove(slot);
        if self.ahead_left() == 0 && self.words.len() * FAN >= AHEAD_MIN_SLOTS {
            self.draw_ahead(rng, prefetch);
        }
        Some(slot)
    }

    /// A uniform member not in `touched` (there is one: see the callers).
    fn pick_outside_touched(&self, rng: &mut impl Rng) -> Option<u32> {
        let touched: &[u32] = self.la.as_ref().map_or(&[], |a| &a.touched);
        if self.len <= 2 * touched.len() {
            // Nearly all of the set changed: rank the rest instead.
            let rest: Vec<u32> =
                (0..self.len).filter_map(|k| self.select(k)).filter(|s| !touched.contains(s)).collect();
            return rest.get(rng.random_range(0..rest.len().max(1))).copied();
        }
        loop {
            let s = self.pick(rng)?;
            if !touched.contains(&s) {
                return Some(s);
            }
        }
    }

    /// Draws up to [`AHEAD`] distinct members (fewer if the set is smaller).
    fn draw_ahead(&mut self, rng: &mut impl Rng, mut prefetch: impl FnMut(u32)) {
        let n = AHEAD.min(self.len);
        // Drawn into a vector of their own: the picks read the counts.
        let mut picks = self.la.as_mut().map(|a| std::mem::take(&mut a.ahead)).unwrap_or_default();
        while picks.len() < n {
            let Some(s) = self.pick(rng) else { break };
            if !picks.contains(&s) {
                picks.push(s);
                prefetch(s);
            }
        }
        self.la.get_or_insert_with(Box::default).ahead = picks;
    }

    /// The member of rank `k` (0-based, in slot order); `k < len`.
    /// (None only if the counts were out of step with the bitmap: a bug,
    /// which `check` reports; ACQUIRE then finds nothing free rather than
    /// panicking.)
    fn select(&self, mut k: usize) -> Option<u32> {
        // From the top level (≤ 64 entries, all scanned) down, each level is
        // scanned over the 64 entries under the one chosen above it.
        let mut chosen = 0;
        for level in self.counts().iter().rev() {
            chosen = descend(level, chosen * FAN, &mut k, |&c| c as usize)?;
        }
        let w = descend(&self.words, chosen * FAN, &mut k, |w| w.count_ones() as usize)?;
        let mut word = self.words[w];
        for _ in 0..k {
            word &= word - 1;
        }
        Some((w * FAN) as u32 + word.trailing_zeros())
    }

    /// Members, in slot order (tests).
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let b = w.trailing_zeros();
                    w &= w - 1;
                    (i * FAN) as u32 + b
                })
            })
        })
    }

    /// Checks that every count matches the bitmap.
    pub fn check(&self) -> Result<(), String> {
        let mut below: Vec<u32> = self.words.chunks(FAN).map(|c| c.iter().map(|w| w.count_ones()).sum()).collect();
        for (l, level) in self.counts().iter().enumerate() {
            if level[..] != below[..] {
                return Err(format!("free-set counts of level {l} are out of step"));
            }
            below = level.chunks(FAN).map(|c| c.iter().sum()).collect();
        }
        let total: usize = self.words.iter().map(|w| w.count_ones() as usize).sum();
        if total != self.len {
            return Err(format!("free set holds {total} bits but counts {}", self.len));
        }
        let counts = self.counts();
        if counts.last().is_some_and(|l| l.len() > FAN) || (counts.is_empty() && self.words.len() > FAN) {
            return Err("free-set top level is too wide".into());
        }
        Ok(())
    }
}

/// Starts loading `x` into the cache (a hint; nothing off x86-64).
#[inline]
pub(crate) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults; `x` is valid anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(x as *const T as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// The index of the entry in `v[start..start + 64]` that holds rank `k`,
/// taking the ranks of the entries before it off `k`.
fn descend<T>(v: &[T], start: usize, k: &mut usize, weight: impl Fn(&T) -> usize) -> Option<usize> {
    let end = (start + FAN).min(v.len());
    for (i, e) in v.get(start..end)?.iter().enumerate() {
        let c = weight(e);
        if *k < c {
            return Some(start + i);
        }
        *k -= c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn model_check_against_a_btreeset() {
        let mut rng = StdRng::seed_from_u64(7);
        for &size in &[1usize, 63, 64, 65, 4096, 4097, 300_000] {
            let mut f = FreeSet::default();
            let mut model = std::collections::BTreeSet::new();
            let mut slots = 0;
            for step in 0..20_000 {
                if slots < size && rng.random_range(0..4) == 0 {
                    slots = (slots + rng.random_range(1..=size.div_ceil(8))).min(size);
                    f.grow(slots);
                }
                if slots == 0 {
                    continue;
                }
                let s = rng.random_range(0..slots) as u32;
                if rng.random_range(0..3) == 0 {
                    assert_eq!(f.remove(s), model.remove(&s));
                } else {
                    assert_eq!(f.insert(s), model.insert(s));
                }
                if step % 97 == 0 {
                    f.check().unwrap();
                    assert_eq!(f.len(), model.len());
                    assert!(f.iter().eq(model.iter().copied()));
                    for (k, &m) in model.iter().enumerate().step_by(model.len() / 50 + 1) {
                        assert_eq!(f.select(k), Some(m), "size {size} rank {k}");
                    }
                    if let Some(p) = f.pick(&mut rng) {
                        assert!(model.contains(&p));
                    }
                }
            }
            f.check().unwrap();
        }
    }

    #[test]
    fn pick_is_uniform_dense_and_sparse() {
        let mut rng = StdRng::seed_from_u64(11);
        // Dense (probing) and sparse (select) sets of 10 members.
        for spread in [1u32, 1000] {
            let mut f = FreeSet::default();
            f.grow(10 * spread as usize);
            for i in 0..10 {
                f.insert(i * spread);
            }
            let mut hits = [0u32; 10];
            for _ in 0..100_000 {
                let p = f.pick(&mut rng).unwrap();
                hits[(p / spread) as usize] += 1;
            }
            assert!(hits.iter().all(|&h| (9_000..11_000).contains(&h)), "spread {spread}: {hits:?}");
        }
    }

    #[test]
    fn take_random_with_the_draw_ahead_stays_uniform() {
        // A large set (so the next pick is drawn ahead) of 8 members. Each
        // round takes one and gives it back, and in half of the rounds also
        // removes and re-adds another member, so that the drawn-ahead one
        // is often among the changed ones: every member must still come up
        // 1/8 of the time.
        let mut rng = StdRng::seed_from_u64(3);
        let mut f = FreeSet::default();
        f.grow(AHEAD_MIN_SLOTS * 2);
        let members: Vec<u32> = (0..8).map(|i| i * 8191 + 5).collect();
        for &m in &members {
            f.insert(m);
        }
        let mut hits = [0u32; 8];
        let mut drew_ahead = 0;
        let (mut last, mut repeats, mut changed_taken) = (u32::MAX, 0, 0);
        for round in 0..80_000 {
            let mut changed = None;
            if round % 2 == 0 {
                let x = members[rng.random_range(0..8)];
                assert!(f.remove(x));
                assert!(f.insert(x));
                changed = Some(x);
            }
            let taken = f.take_random(&mut rng, |_| drew_ahead += 1).unwrap();
            assert!(!f.contains(taken));
            hits[members.iter().position(|&m| m == taken).unwrap()] += 1;
            // Uniform means the one just given back comes up again 1/8 of
            // the time too (the drawn-ahead one never is that one).
            repeats += (taken == last) as u32;
            // And one that was just changed, though perhaps drawn ahead.
            changed_taken += (Some(taken) == changed) as u32;
            last = taken;
            f.insert(taken);
        }
        f.check().unwrap();
        assert!(drew_ahead > 10_000, "the large set draws ahead ({drew_ahead})");
        assert!(hits.iter().all(|&h| (9_300..10_700).contains(&h)), "{hits:?}");
        assert!((9_300..10_700).contains(&repeats), "{repeats} repeats");
        assert!((4_650..5_350).contains(&changed_taken), "{changed_taken} changed ones taken");
        // Emptied through take_random, then refilled.
        for _ in 0..8 {
            assert!(f.take_random(&mut rng, |_| ()).is_some());
        }
        assert_eq!(f.take_random(&mut rng, |_| ()), None);
        f.insert(77);
        assert_eq!(f.take_random(&mut rng, |_| ()), Some(77));
        f.check().unwrap();
    }

    #[test]
    fn empty_and_out_of_range() {
        let mut f = FreeSet::default();
        assert_eq!(f.pick(&mut StdRng::seed_from_u64(1)), None);
        assert!(!f.insert(5), "not grown yet");
        assert!(!f.remove(5));
        assert!(!f.contains(u32::MAX));
        f.grow(6);
        assert!(f.insert(5) && !f.insert(5));
        assert_eq!(f.pick(&mut StdRng::seed_from_u64(1)), Some(5));
        f.check().unwrap();
    }
    #[test]
    fn a_range_goes_in_as_its_slots_would_one_by_one() {
        let mut rng = rand::rng();
        for slots in [5usize, 64, 130, 5_000, 300_000] {
            let (mut a, mut b) = (FreeSet::default(), FreeSet::default());
            a.grow(slots);
            b.grow(slots);
            for _ in 0..slots / 10 {
                let x = rng.random_range(0..slots as u32);
                a.insert(x);
                b.insert(x);
            }
            // A draw ahead (in a big set) for the range to drop.
            if let Some(x) = a.take_random(&mut rng, |_| {}) {
                a.insert(x);
            }
            for _ in 0..20 {
                let lo = rng.random_range(0..slots as u32);
                let hi = rng.random_range(lo..=slots as u32);
                let one_by_one = (lo..hi).filter(|&x| b.insert(x)).count();
                assert_eq!(a.insert_range(lo..hi), one_by_one, "{slots}: {lo}..{hi}");
                a.check().unwrap();
                assert_eq!(a.words, b.words);
                assert_eq!(a.len(), b.len());
            }
            let before = a.len();
            assert_eq!(a.insert_range(0..slots as u32), slots - before);
            assert_eq!(a.len(), slots);
            let mut taken = std::collections::HashSet::new();
            for _ in 0..100.min(slots) {
                let x = a.take_random(&mut rng, |_| {}).expect("members");
                assert!((x as usize) < slots && taken.insert(x), "a member, taken once");
            }
            a.check().unwrap();
        }
    }
}
