//! Two containers whose growth never stalls a shard for long.
//!
//! A burst of expiries (200k tokens due in one second) grows the remembered
//! set and the forget queue while the shard lock is held; a `HashMap` that
//! doubles rehashes everything at once, a `VecDeque` that doubles copies
//! everything at once — milliseconds during which no other token of the shard
//! can expire on time. These keep the same amortized O(1) with a bounded
//! worst case.

use crate::token::{TokenHash, TokenId};
use std::collections::{HashMap, VecDeque};

/// Entries per run that [`RunQueue::push_back`] starts: 1,024 × 32 bytes
/// = 32 KiB. Small enough that malloc serves it from its heap: a block of
/// 128 KiB or more is its own mmap, faulted in page by page and unmapped
/// when freed (that cost a quarter of the time of a mass expiry).
const CHUNK: usize = 1024;

/// A FIFO of whole runs: a `Vec` goes in as it is (from an index on), so
/// queueing a run of millions costs no copy and touches no fresh memory.
/// The expiry backlog is runs the timing wheel polled: queueing them entry
/// by entry (pushing, popping and the fresh pages of a chunked queue) was a
/// tenth of a mass expiry's CPU.
///
/// Entries pushed one by one go into runs of [`CHUNK`], so pushing never
/// moves an entry either, and the storage of the run emptied last is
/// reused for the next: a queue that fills and drains at the same rate
/// (the forget queue past its bound) allocates nothing. A run is a plain
/// `Vec` and an index, cheaper to push to and pop from than a ring.
#[derive(Debug)]
pub(crate) struct RunQueue<T> {
    /// Runs and where each one's unpopped part starts; none is empty.
    runs: VecDeque<(Vec<T>, usize)>,
    len: usize,
    /// The storage of the last run emptied, for the caller's next run (or
    /// the next `push_back`).
    spare: Option<Vec<T>>,
}

impl<T> Default for RunQueue<T> {
    fn default() -> Self {
        RunQueue { runs: VecDeque::new(), len: 0, spare: None }
    }
}

impl<T: Copy> RunQueue<T> {
    /// Queues `run[from..]` behind everything queued.
    pub fn push_run(&mut self, run: Vec<T>, from: usize) {
        if from < run.len() {
            self.len += run.len() - from;
            self.runs.push_back((run, from));
        }
    }

    /// Queues one entry behind everything queued.
    pub fn push_back(&mut self, v: T) {
        self.len += 1;
        if let Some((run, _)) = self.runs.back_mut()
            && run.len() < run.capacity()
        {
            run.push(v);
            return;
        }
        let mut run = self.spare.take().filter(|r| r.capacity() >= CHUNK).unwrap_or_else(|| Vec::with_capacity(CHUNK));
        run.push(v);
        self.runs.push_back((run, 0));
    }

    pub fn front(&self) -> Option<&T> {
        self.runs.front().map(|(run, at)| &run[*at])
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let (run, at) = self.runs.front_mut()?;
        let v = run[*at];
        *at += 1;
        self.len -= 1;
        if *at == run.len()
            && let Some((mut run, _)) = self.runs.pop_front()
        {
            run.clear();
            self.spare = Some(run);
        }
        Some(v)
    }

    /// The entry `k` places behind the front.
    pub fn get(&self, mut k: usize) -> Option<&T> {
        for (run, at) in &self.runs {
            let left = run.len() - at;
            if k < left {
                return run.get(at + k);
            }
            k -= left;
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Sorts all entries (start-up only: O(n log n) and it moves everything).
    pub fn sort_by_key<K: Ord>(&mut self, key: impl FnMut(&T) -> K) {
        let mut all: Vec<T> = Vec::with_capacity(self.len);
        for (run, at) in std::mem::take(&mut self.runs) {
            all.extend_from_slice(&run[at..]);
        }
        all.sort_by_key(key);
        self.len = 0;
        self.spare = None;
        for chunk in all.chunks(CHUNK) {
            self.len += chunk.len();
            self.runs.push_back((chunk.to_vec(), 0));
        }
    }

    /// An empty `Vec` for the next run: the storage of the last run
    /// emptied if there is one (so a backlog that fills and drains at the
    /// same rate allocates nothing), else a new one.
    pub fn take_spare(&mut self) -> Vec<T> {
        self.spare.take().unwrap_or_default()
    }
}

/// Parts of an [`ExpiredSet`].
const PARTS: usize = 16;

/// The remembered expired tokens of a pool (token → when it is forgotten),
/// split into 16 maps by token bits so that growing never rehashes it all.
///
/// The parts are of unequal sizes, part `i` holding a share proportional to
/// `2^(i/16)`: equal parts would fill up together and all double within a
/// few hundred inserts of each other (measured: two bursts of 16 rehashes,
/// 2–5 ms each, at 57k and 115k tokens of a 200k-token expiry second). With
/// shares spread over an octave, the parts double one at a time, evenly
/// spaced over each doubling of the set; the largest rehash moves 8.4% of
/// the entries.
///
/// The maps are made at the first insert and dropped when the set empties:
/// sixteen empty maps are 512 bytes, which a pool that never had an expired
/// token (most small pools) would otherwise carry.
#[derive(Default)]
pub(crate) struct ExpiredSet {
    parts: Option<Box<Parts>>,
    len: usize,
}

type Parts = [HashMap<Key, u64, TokenHash>; PARTS];

/// A token id as two words: a `u128` is aligned to 16 bytes, which makes an
/// entry `(u128, u64)` 32 bytes; `(Key, u64)` is 24. A mass expiry inserts
/// millions of them at random places, so the smaller table is fewer cache
/// lines and fresh pages touched. Hashed as the `u128` it stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u64; 2]);

impl Key {
    fn new(id: TokenId) -> Key {
        Key([id as u64, (id >> 64) as u64])
    }

    fn id(self) -> TokenId {
        u128::from(self.0[1]) << 64 | u128::from(self.0[0])
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.id());
    }
}

/// `PART_ENDS[i]`: the end of part `i`'s range of the 64-bit key below,
/// `2^64 · Σ_{j ≤ i} 2^(j/16) / Σ_j 2^(j/16)` (the last is `u64::MAX`).
static PART_ENDS: std::sync::LazyLock<[u64; PARTS]> = std::sync::LazyLock::new(|| {
    let w = |j: usize| (j as f64 / PARTS as f64).exp2();
    let total: f64 = (0..PARTS).map(w).sum();
    let mut acc = 0.0;
    std::array::from_fn(|i| {
        acc += w(i);
        if i + 1 == PARTS { u64::MAX } else { (acc / total * u64::MAX as f64) as u64 }
    })
});

fn part(id: TokenId) -> usize {
    // The top 48 bits of a UUID v4 are random (its version nibble is below).
    let key = ((id >> 80) as u64) << 16;
    PART_ENDS.partition_point(|&end| end < key).min(PARTS - 1)
}

impl ExpiredSet {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, id: &TokenId) -> Option<&u64> {
        self.parts.as_ref()?[part(*id)].get(&Key::new(*id))
    }

    pub fn contains_key(&self, id: &TokenId) -> bool {
        self.get(id).is_some()
    }

    pub fn insert(&mut self, id: TokenId, forget_at: u64) -> Option<u64> {
        let parts = self.parts.get_or_insert_with(Box::default);
        let old = parts[part(id)].insert(Key::new(id), forget_at);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, id: &TokenId) -> Option<u64> {
        let old = self.parts.as_mut()?[part(*id)].remove(&Key::new(*id));
        if old.is_some() {
            self.len -= 1;
            if self.len == 0 {
                self.parts = None;
            }
        }
        old
    }

    /// Every remembered token with when it is forgotten.
    pub fn iter(&self) -> impl Iterator<Item = (TokenId, u64)> + '_ {
        self.parts.iter().flat_map(|parts| parts.iter().flat_map(|p| p.iter().map(|(&k, &at)| (k.id(), at))))
    }

    pub fn clear(&mut self) {
        self.parts = None;
        self.len = 0;
    }

    /// Bytes it holds on the heap (MEMORY USAGE): the maps' tables, about
    /// 30 bytes an entry at their usual load.
    pub fn heap_bytes(&self) -> usize {
        self.parts.as_ref().map_or(0, |parts| {
            std::mem::size_of::<Parts>()
                + parts.iter().map(|p| p.capacity() * (std::mem::size_of::<(Key, u64)>() + 1)).sum::<usize>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_queue_pushed_one_by_one_is_fifo_across_chunks() {
        let mut q = RunQueue::default();
        for i in 0..(CHUNK * 3 + 5) {
            q.push_back(i);
        }
        for i in 0..(CHUNK * 3 + 5) {
            assert_eq!(q.front(), Some(&i));
            assert_eq!(q.pop_front(), Some(i));
        }
        assert_eq!(q.pop_front(), None);
        assert!(q.is_empty());
        for i in [5, 1, 4] {
            q.push_back(i);
        }
        assert!(q.runs.len() == 1 && q.runs[0].0.capacity() >= CHUNK, "the emptied run is reused");
        q.push_run(vec![3, 2], 0);
        q.push_back(0);
        assert_eq!(q.len(), 6);
        q.sort_by_key(|&v| v);
        assert_eq!(q.len(), 6);
        assert_eq!((0..6).map(|_| q.pop_front().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        assert!(q.is_empty() && q.front().is_none());
    }

    #[test]
    fn run_queue_is_fifo_across_runs_and_reuses_their_storage() {
        let mut q = RunQueue::default();
        assert!(q.is_empty() && q.pop_front().is_none() && q.get(0).is_none());
        q.push_run(vec![0, 1, 2, 3], 1);
        q.push_run(vec![9, 9], 2);
        q.push_run(Vec::with_capacity(100), 0);
        q.push_run(vec![4], 0);
        q.push_run((5..1000).collect(), 0);
        assert_eq!(q.len(), 999);
        assert_eq!(
            (q.get(0), q.get(2), q.get(3), q.get(998), q.get(999)),
            (Some(&1), Some(&3), Some(&4), Some(&999), None)
        );
        let mut popped = Vec::new();
        while let Some(v) = q.pop_front() {
            assert_eq!(q.len(), 999 - popped.len() - 1);
            if let Some(&next) = q.get(0) {
                assert_eq!(next, v + 1);
            }
            popped.push(v);
        }
        assert_eq!(popped, (1..1000).collect::<Vec<_>>());
        assert!(q.is_empty());
        let spare = q.take_spare();
        assert!(spare.is_empty() && spare.capacity() >= 995, "the last run's storage");
        assert_eq!(q.take_spare().capacity(), 0, "taken once");
    }

    #[test]
    fn expired_set_parts_grow_one_at_a_time() {
        // Over 300k random tokens: the entries moved by rehashes within any
        // 1,000 inserts. Equal parts double together (about the whole set
        // at once); staggered ones one at a time.
        let mut s = ExpiredSet::default();
        // Seeded: the shares differ by 4.4%, which random draws of 300k
        // tokens cross now and then (a run in CI did).
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(16);
        let mut moved: Vec<(usize, usize)> = Vec::new();
        for n in 0..300_000 {
            let id = crate::token::from_random(rand::RngExt::random(&mut rng));
            let p = part(id);
            let part_of = |s: &ExpiredSet| s.parts.as_ref().map_or((0, 0), |ps| (ps[p].capacity(), ps[p].len()));
            let (cap, len) = part_of(&s);
            s.insert(id, 1);
            if part_of(&s).0 != cap {
                moved.push((n, len));
            }
        }
        let worst = moved
            .iter()
            .map(|&(n, _)| moved.iter().filter(|&&(m, _)| m >= n && m < n + 1_000).map(|&(_, k)| k).sum::<usize>())
            .max()
            .unwrap_or(0);
        assert!(worst <= 300_000 / 8, "{worst} entries rehashed within 1,000 inserts");
        let sizes: Vec<usize> = s.parts.as_ref().unwrap().iter().map(HashMap::len).collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "shares grow with the part number: {sizes:?}");
    }

    #[test]
    fn expired_set_gives_back_the_ids_it_was_given() {
        let ids = [0u128, 1, u128::MAX, 1 << 64, (1 << 64) - 1, 0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8];
        let mut s = ExpiredSet::default();
        for (i, &id) in ids.iter().enumerate() {
            s.insert(id, i as u64);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(s.get(id), Some(&(i as u64)));
        }
        let mut back: Vec<(TokenId, u64)> = s.iter().collect();
        back.sort();
        let mut want: Vec<(TokenId, u64)> = ids.iter().enumerate().map(|(i, &id)| (id, i as u64)).collect();
        want.sort();
        assert_eq!(back, want);
    }

    #[test]
    fn expired_set_counts_and_finds() {
        let mut s = ExpiredSet::default();
        let ids: Vec<TokenId> = (0..100u128).map(|i| i << 120 | i).collect();
        for &id in &ids {
            assert_eq!(s.insert(id, 7), None);
        }
        assert_eq!(s.insert(ids[0], 8), Some(7));
        assert_eq!(s.len(), 100);
        assert_eq!(s.get(&ids[0]), Some(&8));
        assert!(s.contains_key(&ids[99]));
        assert_eq!(s.remove(&ids[99]), Some(7));
        assert_eq!(s.remove(&ids[99]), None);
        assert_eq!(s.len(), 99);
        s.clear();
        assert!(s.len() == 0 && !s.contains_key(&ids[0]));
        assert_eq!(s.heap_bytes(), 0, "an empty set holds no maps");
        s.insert(ids[1], 1);
        assert!(s.heap_bytes() >= 512);
        assert_eq!(s.remove(&ids[1]), Some(1));
        assert_eq!(s.heap_bytes(), 0, "the maps go with the last entry");
        assert_eq!(s.remove(&ids[1]), None);
    }
}
