//! A pool's slab of [`Slot`]s: a plain `Vec` while small, then fixed 2 MiB
//! chunks, each aligned to 2 MiB and backed by one huge page.
//!
//! Why not one `Vec` all along: a 10M-token slab is 640 MB, and random
//! accesses to it with 4 KiB pages miss the TLB nearly every time (two page
//! tables to walk under virtualisation). Huge pages need 2 MiB-aligned
//! memory that stays put, and a growing `Vec` is moved by `realloc`
//! (`mremap`), which splits huge pages back into small ones. Chunks never
//! move, and growing never copies more than the first chunk, once.
//!
//! Small pools stay in the `Vec` (at most [`CHUNK_SLOTS`] slots), so a pool
//! of ten tokens does not cost a 2 MiB page.

use super::huge;
use super::pool::Slot;
use std::alloc::{Layout, handle_alloc_error};
use std::ptr::NonNull;

/// Slots per chunk: 32,768 × 64 bytes = 2 MiB, one huge page.
pub(crate) const CHUNK_SLOTS: usize = huge::HUGE_PAGE / size_of::<Slot>();
const SHIFT: u32 = CHUNK_SLOTS.trailing_zeros();
const MASK: usize = CHUNK_SLOTS - 1;

/// One chunk: `CHUNK_SLOTS` slots in a 2 MiB-aligned region of its own.
struct Chunk {
    ptr: NonNull<Slot>,
}

// SAFETY: a chunk owns its memory exclusively, like a `Box<[Slot]>`.
unsafe impl Send for Chunk {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Chunk {}

const CHUNK_BYTES: usize = huge::HUGE_PAGE;

impl Chunk {
    /// A chunk of vacant slots: all-zero bytes are a vacant slot (token id
    /// 0, a zero record), and fresh anonymous memory is zero without being
    /// touched, so an unused chunk costs no memory. The region is advised
    /// to use a huge page before its first use.
    fn new() -> Chunk {
        let ptr = map_aligned().unwrap_or_else(|| handle_alloc_error(Self::layout()));
        huge::advise_range(ptr.as_ptr() as usize, CHUNK_BYTES);
        Chunk { ptr: ptr.cast() }
    }

    /// A chunk whose first `slots` slots' memory is already there: every
    /// page of theirs written once, so filling them faults nothing in
    /// (with a huge page, one write does it). The rest is left untouched:
    /// a chunk a GEN fills only partly costs no more than it did.
    fn faulted(slots: usize) -> Chunk {
        let c = Chunk::new();
        let base = c.ptr.as_ptr().cast::<u8>();
        let end = (slots * size_of::<Slot>()).min(CHUNK_BYTES);
        for off in (0..end).step_by(4096) {
            // SAFETY: `off` is inside the chunk's CHUNK_BYTES, which it owns;
            // writing a zero keeps it a vacant slot's bytes. Volatile, so the
            // write that faults the page in is not optimised away.
            unsafe { base.add(off).write_volatile(0) };
        }
        c
    }

    fn layout() -> Layout {
        Layout::from_size_align(CHUNK_BYTES, CHUNK_BYTES).unwrap_or_else(|_| Layout::new::<Slot>())
    }
}

impl std::ops::Deref for Chunk {
    type Target = [Slot];
    fn deref(&self) -> &[Slot] {
        // SAFETY: `ptr` is a live, exclusively owned region of CHUNK_BYTES
        // bytes holding CHUNK_SLOTS initialised slots (zero bytes are a
        // valid `Slot`: every field is an integer).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), CHUNK_SLOTS) }
    }
}

impl std::ops::DerefMut for Chunk {
    fn deref_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), CHUNK_SLOTS) }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        unmap(self.ptr.cast());
    }
}

/// A fresh zeroed region of CHUNK_BYTES aligned to CHUNK_BYTES: twice that
/// is mapped and the unaligned ends are unmapped.
#[cfg(unix)]
fn map_aligned() -> Option<NonNull<u8>> {
    let len = 2 * CHUNK_BYTES;
    // SAFETY: an anonymous private mapping of a fresh region (no existing
    // memory is involved); the unmapped ends lie inside it and are never
    // used.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        let start = p as usize;
        let aligned = start.next_multiple_of(CHUNK_BYTES);
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        let tail = aligned + CHUNK_BYTES;
        if start + len > tail {
            libc::munmap(tail as *mut libc::c_void, start + len - tail);
        }
        NonNull::new(aligned as *mut u8)
    }
}

#[cfg(unix)]
fn unmap(p: NonNull<u8>) {
    // SAFETY: `p` came from `map_aligned` and is unmapped once, on drop.
    unsafe {
        libc::munmap(p.as_ptr() as *mut libc::c_void, CHUNK_BYTES);
    }
}

#[cfg(not(unix))]
fn map_aligned() -> Option<NonNull<u8>> {
    // SAFETY: the layout has a non-zero size.
    NonNull::new(unsafe { std::alloc::alloc_zeroed(Chunk::layout()) })
}

#[cfg(not(unix))]
fn unmap(p: NonNull<u8>) {
    // SAFETY: `p` came from `alloc_zeroed` with this layout.
    unsafe { std::alloc::dealloc(p.as_ptr(), Chunk::layout()) }
}

const _: () = assert!(CHUNK_SLOTS.is_power_of_two() && CHUNK_SLOTS * size_of::<Slot>() == CHUNK_BYTES);

/// Chunks faulted in ahead of use, outside a shard's lock, for a slab
/// about to grow by many slots (a big GEN): faulting in fresh memory under
/// the lock was most of a GEN COUNT 100000's hold. What is not used is
/// unmapped when dropped (after the lock is released).
#[derive(Default)]
pub(crate) struct Spare(Vec<Chunk>);

impl Spare {
    /// The chunks [`Slab::chunks_wanted`] asked for, faulted in (tests;
    /// a GEN's stock adds them one at a time).
    #[cfg(test)]
    pub fn faulted((chunks, last): (usize, usize)) -> Spare {
        let mut s = Spare::default();
        for k in 0..chunks {
            s.add_faulted(k, last);
        }
        s
    }

    /// Adds the `k`th (from 0) of the chunks [`Slab::chunks_wanted`] asked
    /// for, whose last is used up to `last` slots. Chunks are used last
    /// added first, so the first one added is that last one.
    pub fn add_faulted(&mut self, k: usize, last: usize) {
        self.0.push(Chunk::faulted(if k == 0 { last } else { CHUNK_SLOTS }));
    }

    fn take(&mut self) -> Chunk {
        self.0.pop().unwrap_or_else(Chunk::new)
    }
}

/// The new slots of a big GEN, made outside a shard's lock: the slab's
/// chunks from the one that holds slot `base` on, laid out as they will be
/// in the slab, with slots `base..base + len` filled (the rest vacant).
/// [`Slab::adopt`] moves them in under the lock, in a few pointer moves
/// and at most one chunk's copy, instead of a write per slot; chunks not
/// adopted are unmapped when dropped.
pub(crate) struct Staged {
    base: usize,
    len: usize,
    chunks: Vec<Chunk>,
}

impl Staged {
    /// Room for `len` slots after the first `base` of a slab.
    pub fn new(base: usize, len: usize) -> Staged {
        let first = base >> SHIFT;
        let last = (base + len.max(1) - 1) >> SHIFT;
        // The slots are faulted in as they are set; the first chunk's pages
        // that will take the slab's own slots are faulted now, so that
        // copying them in under the lock faults nothing.
        let chunks = (first..=last).map(|k| Chunk::faulted(if k == first { base & MASK } else { 0 })).collect();
        Staged { base, len, chunks }
    }

    /// The slab length these slots follow.
    pub fn base(&self) -> usize {
        self.base
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Sets the `i`th new slot (slot `base + i`).
    pub fn set(&mut self, i: usize, slot: Slot) {
        assert!(i < self.len, "staged slot {i} of {}", self.len);
        let at = self.base + i - ((self.base >> SHIFT) << SHIFT);
        self.chunks[at >> SHIFT][at & MASK] = slot;
    }
}

/// A pool's slots. 32 bytes while small (most pools, when every tenant has
/// one, hold a token or two): the chunks of a big one are boxed apart.
#[derive(Default)]
pub(crate) struct Slab {
    /// The slots while there are at most `CHUNK_SLOTS` of them.
    small: Vec<Slot>,
    /// Every slot once there are more (then `small` is empty).
    big: Option<Box<Chunks>>,
}

struct Chunks {
    chunks: Vec<Chunk>,
    len: usize,
}

impl Slab {
    /// Unmaps the chunks one by one, `pause` apart.
    pub fn free_gradually(self, pause: std::time::Duration) {
        let Some(mut big) = self.big else { return };
        while let Some(c) = big.chunks.pop() {
            drop(c);
            std::thread::sleep(pause);
        }
    }

    /// Bytes it holds (MEMORY USAGE): chunks are whole 2 MiB blocks.
    pub fn heap_bytes(&self) -> usize {
        self.small.capacity() * std::mem::size_of::<Slot>()
            + self.big.as_ref().map_or(0, |b| b.chunks.len() * CHUNK_SLOTS * std::mem::size_of::<Slot>())
    }

    pub fn len(&self) -> usize {
        match &self.big {
            None => self.small.len(),
            Some(b) => b.len,
        }
    }

    pub fn get(&self, i: usize) -> Option<&Slot> {
        match &self.big {
            None => self.small.get(i),
            Some(b) if i < b.len => Some(&b.chunks[i >> SHIFT][i & MASK]),
            Some(_) => None,
        }
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        match &mut self.big {
            None => self.small.get_mut(i),
            Some(b) if i < b.len => Some(&mut b.chunks[i >> SHIFT][i & MASK]),
            Some(_) => None,
        }
    }

    /// Calls `f` on each slot of `range` (within the slab), in order, a
    /// chunk's run at a time.
    pub fn for_each_mut(&mut self, range: std::ops::Range<usize>, mut f: impl FnMut(&mut Slot)) {
        let end = range.end.min(self.len());
        let mut i = range.start;
        match &mut self.big {
            None => self.small.get_mut(i..end).into_iter().flatten().for_each(f),
            Some(b) => {
                while i < end {
                    let (chunk, off) = (i >> SHIFT, i & MASK);
                    let take = (end - i).min(CHUNK_SLOTS - off);
                    b.chunks[chunk][off..off + take].iter_mut().for_each(&mut f);
                    i += take;
                }
            }
        }
    }

    /// Asks the CPU to start loading slot `i` (a hint: no effect on
    /// correctness).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        if let Some(s) = self.get(i) {
            super::freeset::prefetch(s);
        }
    }

    /// How many chunks `n` more slots would add (a small slab moving into
    /// chunks counts the one it moves into), and how many slots of the
    /// last of them they would use.
    pub fn chunks_wanted(&self, n: usize) -> (usize, usize) {
        let len = self.len().saturating_add(n);
        let chunks = match &self.big {
            None if len <= CHUNK_SLOTS => 0,
            None => len.div_ceil(CHUNK_SLOTS),
            Some(b) => len.div_ceil(CHUNK_SLOTS).saturating_sub(b.chunks.len()),
        };
        (chunks, if chunks == 0 { 0 } else { (len - 1) % CHUNK_SLOTS + 1 })
    }

    /// Room for `n` more slots (only the small `Vec` reserves ahead; chunks
    /// are made as they fill). A small slab that `n` more would outgrow
    /// moves into chunks now, instead of growing its `Vec` first.
    pub fn reserve(&mut self, n: usize, spare: &mut Spare) {
        if self.big.is_none() && self.small.len().saturating_add(n) > CHUNK_SLOTS {
            self.outgrow(spare);
        }
        if self.big.is_none() {
            let want = (self.small.len() + n).min(CHUNK_SLOTS);
            let more = want.saturating_sub(self.small.len());
            if self.small.capacity() == 0 {
                // Exactly what the first GEN asks for: `reserve` would round
                // a one-token pool up to four slots (192 bytes unused).
                self.small.reserve_exact(more);
            } else {
                self.small.reserve(more);
            }
        }
    }

    /// Appends the slots of `staged`, which was made for a slab of this
    /// length that chunks will hold (a small one it makes big); false, and
    /// nothing changes, if it was not. The chunk this slab had for its
    /// first slots goes to `old`, to be unmapped after the lock.
    pub fn adopt(&mut self, staged: &mut Staged, old: &mut Spare) -> bool {
        let (base, end) = (staged.base, staged.base + staged.len);
        let fits = match &self.big {
            // Chunks are added as slots need them, and a slab never shrinks.
            Some(b) => b.chunks.len() == base.div_ceil(CHUNK_SLOTS),
            None => end > CHUNK_SLOTS,
        };
        if self.len() != base || staged.len == 0 || !fits {
            return false;
        }
        let kept = base & MASK;
        let mut incoming = std::mem::take(&mut staged.chunks).into_iter();
        let Some(mut first) = incoming.next() else { return false };
        match &mut self.big {
            Some(b) if kept > 0 => {
                // The slab's last chunk is partly used: its slots so far
                // move to the staged chunk, which takes its place.
                let Some(last) = b.chunks.last_mut() else { return false };
                first[..kept].copy_from_slice(&last[..kept]);
                old.0.push(std::mem::replace(last, first));
            }
            Some(b) => b.chunks.push(first),
            None if base < CHUNK_SLOTS => {
                first[..kept].copy_from_slice(&self.small);
                self.small = Vec::new();
                self.big = Some(Box::new(Chunks { chunks: vec![first], len: base }));
            }
            // A full small slab: its own chunk first; the staged ones start
            // at the next.
            None => self.outgrow(old).chunks.push(first),
        }
        let Some(chunks) = self.big.as_mut() else { return false };
        chunks.chunks.extend(incoming);
        chunks.len = end;
        true
    }

    /// Appends a slot.
    pub fn push(&mut self, slot: Slot) {
        self.push_from(slot, &mut Spare::default());
    }

    /// Appends a slot; a new chunk comes from `spare` while it has one.
    pub fn push_from(&mut self, slot: Slot, spare: &mut Spare) {
        if self.big.is_none() && self.small.len() < CHUNK_SLOTS {
            if self.small.capacity() == 0 {
                // See `reserve`: a first slot is one slot, not four.
                self.small.reserve_exact(1);
            }
            self.small.push(slot);
            return;
        }
        let b = self.outgrow(spare);
        if b.len & MASK == 0 && b.len >> SHIFT == b.chunks.len() {
            b.chunks.push(spare.take());
        }
        b.chunks[b.len >> SHIFT][b.len & MASK] = slot;
        b.len += 1;
    }

    /// The chunks, the small slots moved into the first one if there were
    /// none yet (once: a slab never goes back to small).
    fn outgrow(&mut self, spare: &mut Spare) -> &mut Chunks {
        self.big.get_or_insert_with(|| {
            let mut first = spare.take();
            first[..self.small.len()].copy_from_slice(&self.small);
            let len = self.small.len();
            self.small = Vec::new();
            Box::new(Chunks { chunks: vec![first], len })
        })
    }

    /// Grows to `n` slots with copies of `fill`.
    pub fn resize(&mut self, n: usize, fill: Slot) {
        while self.len() < n {
            self.push(fill);
        }
    }

    /// Every slot, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        let chunks = self.big.iter().flat_map(|b| b.chunks.iter().flat_map(|c| c.iter()));
        self.small.iter().chain(chunks).take(self.len())
    }
}

impl std::ops::Index<usize> for Slab {
    type Output = Slot;
    fn index(&self, i: usize) -> &Slot {
        self.get(i).expect("slot index out of range")
    }
}

impl std::ops::IndexMut<usize> for Slab {
    fn index_mut(&mut self, i: usize) -> &mut Slot {
        self.get_mut(i).expect("slot index out of range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pool::Record;

    fn slot(n: usize) -> Slot {
        Slot { id: n as u128 + 1, rec: Record::stored(n as u64, 0, 0, 0, 0) }
    }

    #[test]
    fn a_small_slab_holds_what_was_asked_for() {
        let one = |prepare: fn(&mut Slab)| {
            let mut s = Slab::default();
            prepare(&mut s);
            s.push(slot(0));
            s.heap_bytes()
        };
        assert_eq!(one(|_| {}), size_of::<Slot>(), "a first push makes room for one slot");
        assert_eq!(one(|s| s.reserve(1, &mut Spare::default())), size_of::<Slot>(), "GEN of one token");
        let mut s = Slab::default();
        s.reserve(3, &mut Spare::default());
        for i in 0..100 {
            s.push(slot(i));
        }
        assert!(s.heap_bytes() <= 2 * 100 * size_of::<Slot>(), "later growth is amortized");
    }

    /// A GEN that outgrows a small slab moves it into chunks at once and
    /// takes its new chunks from the spare ones, which were faulted in.
    #[test]
    fn a_big_reserve_moves_into_spare_chunks_and_keeps_every_slot() {
        let mut s = Slab::default();
        for i in 0..10 {
            s.push(slot(i));
        }
        let n = CHUNK_SLOTS + 10;
        assert_eq!(s.chunks_wanted(CHUNK_SLOTS - 10), (0, 0));
        assert_eq!(s.chunks_wanted(n), (2, 20));
        let mut spare = Spare::faulted((3, 20));
        let spare_ptrs: Vec<usize> = spare.0.iter().map(|c| c.ptr.as_ptr() as usize).collect();
        s.reserve(n, &mut spare);
        assert_eq!(s.big.as_ref().map(|b| b.chunks.len()), Some(1), "moved into a chunk before growing");
        assert_eq!(s.small.capacity(), 0);
        for i in 10..10 + n {
            s.push_from(slot(i), &mut spare);
        }
        assert_eq!(s.len(), n + 10);
        assert!(s.iter().enumerate().all(|(i, x)| x.id == i as u128 + 1));
        let chunks = &s.big.as_ref().expect("chunks").chunks;
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(|c| spare_ptrs.contains(&(c.ptr.as_ptr() as usize))), "the spare chunks were used");
        assert_eq!(spare.0.len(), 1, "one left over");
        // Spare chunks are vacant slots, like fresh ones.
        assert!(spare.0[0].iter().all(|x| x.id == 0));
    }

    #[test]
    fn grows_across_chunks_and_keeps_every_slot() {
        let mut s = Slab::default();
        let n = CHUNK_SLOTS * 2 + 5;
        for i in 0..n {
            s.push(slot(i));
            if i == CHUNK_SLOTS - 1 || i == CHUNK_SLOTS {
                assert_eq!(s[i].id, i as u128 + 1);
            }
        }
        assert_eq!(s.len(), n);
        let chunks = &s.big.as_ref().expect("outgrown").chunks;
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| (c.ptr.as_ptr() as usize).is_multiple_of(huge::HUGE_PAGE)));
        assert!(s.iter().enumerate().all(|(i, x)| x.id == i as u128 + 1));
        assert!(s.get(n).is_none());
        s[7].id = 99;
        assert_eq!(s.get(7).map(|x| x.id), Some(99));
        s.prefetch(n - 1);
        s.prefetch(n + 100);
        s.resize(n + 3, slot(0));
        assert_eq!(s.iter().count(), n + 3);
    }

    #[test]
    fn zeroed_chunk_slots_are_vacant() {
        let c = Chunk::new();
        assert!(c.iter().all(|s| s.id == 0 && s.rec == Record::stored(0, 0, 0, 0, 0)));
    }

    /// Staged slots go in after whatever the slab held, small or in
    /// chunks, at a chunk boundary or not; a slab of another length, or
    /// one that would stay small, refuses them and is unchanged.
    #[test]
    fn staged_slots_are_adopted_after_the_slab_s_own() {
        const CS: usize = CHUNK_SLOTS;
        for (before, n) in [(0, CS + 1), (10, CS), (CS, 3), (CS + 7, 2 * CS), (2 * CS, 5), (CS - 1, 2)] {
            let mut s = Slab::default();
            for i in 0..before {
                s.push(slot(i));
            }
            let mut st = Staged::new(before, n);
            for i in 0..n {
                st.set(i, slot(before + i));
            }
            let mut old = Spare::default();
            assert!(s.adopt(&mut st, &mut old), "{before} + {n}");
            assert_eq!(s.len(), before + n);
            assert!(s.iter().enumerate().all(|(i, x)| x.id == i as u128 + 1), "{before} + {n}");
            assert_eq!(old.0.len(), usize::from(before > CS && before % CS != 0), "the chunk replaced");
            assert!(s.get(before + n).is_none());
            // Growing on by one still works.
            s.push(slot(before + n));
            assert_eq!(s[before + n].id, (before + n) as u128 + 1);
        }
        let mut s = Slab::default();
        for i in 0..5 {
            s.push(slot(i));
        }
        let mut stale = Staged::new(4, CS);
        let mut small = Staged::new(5, 10);
        let mut old = Spare::default();
        assert!(!s.adopt(&mut stale, &mut old), "made for another length");
        assert!(!s.adopt(&mut small, &mut old), "the slab would stay small");
        assert_eq!(s.len(), 5);
        assert!(s.big.is_none() && s.iter().enumerate().all(|(i, x)| x.id == i as u128 + 1));
    }
}
