//! Latency histograms: log-linear buckets of integer values — nanoseconds
//! for command latency, microseconds for expiry lateness — (16 per power of
//! two, so a bucket is at most 1/16 = 6.25% wide), the layout HdrHistogram
//! uses with one significant digit and a half, in a flat array.
//!
//! Two forms: [`Hist`], plain counters for a single owner (a shard's expiry
//! lateness, under its lock), and [`LocalHist`], whose counters are atomics
//! written by one thread only (a load and a store, no read-modify-write) and
//! read by any (INFO, `/metrics`): per-command latency is recorded on every
//! command, so it must cost a few nanoseconds and never contend.
//!
//! Why not a crate: `hdrhistogram` is not `Sync` and a shared one needs a
//! lock per record; the Prometheus clients' histograms have fixed buckets,
//! too coarse for INFO latencystats' p99.9. The bucket arithmetic is twenty
//! lines; the percentiles are read the way HdrHistogram reads them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;

/// Buckets: values below 16 exactly, then 16 per power of two up to 2^40
/// (18 minutes of ns, 12.7 days of µs; larger values land in the last bucket).
pub const BUCKETS: usize = (SUB as usize) * (40 - SUB_BITS as usize + 1);

/// The bucket of a value.
pub fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // ≥ SUB_BITS
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (((e - SUB_BITS + 1) as u64 * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The largest value  bucket `b` holds.
pub fn upper(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let e = b / SUB - 1 + SUB_BITS as u64;
    let sub = b % SUB;
    ((SUB + sub + 1) << (e - SUB_BITS as u64)) - 1
}

/// A histogram for one owner.
#[derive(Clone)]
pub struct Hist {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    sum: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist { counts: Box::new([0; BUCKETS]), count: 0, sum: 0, max: 0 }
    }
}

impl std::fmt::Debug for Hist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hist").field("count", &self.count).field("max", &self.max).finish()
    }
}

impl Hist {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// Subtracts an earlier snapshot of the same counters (what happened since).
    pub fn since(&self, earlier: &Hist) -> Hist {
        let mut h = self.clone();
        for (a, b) in h.counts.iter_mut().zip(earlier.counts.iter()) {
            *a = a.saturating_sub(*b);
        }
        h.count = h.count.saturating_sub(earlier.count);
        h.sum = h.sum.saturating_sub(earlier.sum);
        // The largest value since lies in the highest bucket that grew: an
        // all-time maximum from before the snapshot must not show.
        h.max = match h.counts.iter().rposition(|&n| n > 0) {
            Some(b) => upper(b).min(self.max),
            None => 0,
        };
        h
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the values recorded.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The largest value recorded.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at percentile `p` (0–100): the upper end of the bucket
    /// holding it, never above the largest value recorded; 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper(b).min(self.max) as f64;
            }
        }
        self.max as f64
    }

    /// Cumulative counts at each of `bounds` (ascending): how many
    /// values are at or below each (Prometheus `le` buckets; a fine bucket
    /// counts under the first bound at or above its upper end).
    pub fn cumulative(&self, bounds: &[u64]) -> Vec<u64> {
        let mut out = vec![0; bounds.len()];
        for (b, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let up = upper(b);
            if let Some(i) = bounds.iter().position(|&le| le >= up) {
                out[i] += n;
            }
        }
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

/// The buckets of a histogram written by one thread, read by any. Its
/// owner keeps the count and the sum (they are counters it has anyway: a
/// command's calls and time).
pub struct LocalHist {
    counts: Box<[AtomicU64; BUCKETS]>,
    max: AtomicU64,
}

impl Default for LocalHist {
    fn default() -> Self {
        LocalHist { counts: Box::new(std::array::from_fn(|_| AtomicU64::new(0))), max: AtomicU64::new(0) }
    }
}

/// One writer's `+= n` on a counter only it writes: a load and a store
/// (readers may see the old or the new value, never a torn one).
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl LocalHist {
    /// Records one value. Only the owning thread may call it.
    #[inline]
    pub fn record(&self, v: u64) {
        bump(&self.counts[bucket(v)], 1);
        if v > self.max.load(Ordering::Relaxed) {
            self.max.store(v, Ordering::Relaxed);
        }
    }

    /// Adds its counts into `h`, with `sum`, the sum of the values its
    /// owner kept.
    pub fn add_to(&self, h: &mut Hist, sum: u64) {
        for (a, b) in h.counts.iter_mut().zip(self.counts.iter()) {
            let n = b.load(Ordering::Relaxed);
            *a += n;
            h.count += n;
        }
        h.sum = h.sum.saturating_add(sum);
        h.max = h.max.max(self.max.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(15), 15);
        assert_eq!(bucket(16), 16);
        for b in 0..BUCKETS - 1 {
            assert_eq!(bucket(upper(b)), b, "upper end of {b}");
            assert_eq!(bucket(upper(b) + 1), b + 1, "first of {}", b + 1);
        }
        for v in [17u64, 100, 1_000, 12_345, 999_999, 1 << 30] {
            let b = bucket(v);
            let lower = if b == 0 { 0 } else { upper(b - 1) + 1 };
            assert!(lower <= v && v <= upper(b));
            assert!((upper(b) - lower) as f64 <= v as f64 / 16.0 + 1.0, "bucket of {v} is narrow");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_within_a_bucket_of_the_truth() {
        let mut h = Hist::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (p, want) in [(50.0, 5_000.0), (99.0, 9_900.0), (99.9, 9_990.0), (100.0, 10_000.0)] {
            let got = h.percentile(p);
            assert!(got >= want && got <= want * 1.07, "p{p}: {got} for {want}");
        }
        assert_eq!(h.max(), 10_000);
        assert_eq!(Hist::default().percentile(50.0), 0.0);
        let local = LocalHist::default();
        for v in [3u64, 300, 30_000] {
            local.record(v);
        }
        let mut merged = Hist::default();
        local.add_to(&mut merged, 30_303);
        assert_eq!((merged.count(), merged.sum(), merged.max()), (3, 30_303, 30_000));
        assert_eq!(merged.cumulative(&[10, 1_000, 100_000]), [1, 2, 3]);
        let later = merged.clone();
        assert_eq!((later.since(&merged).count(), later.since(&merged).max()), (0, 0));
    }

    #[test]
    fn since_a_snapshot_forgets_the_maximum_before_it() {
        let mut h = Hist::default();
        h.record(50_000);
        let snapshot = h.clone();
        for v in [7u64, 12, 1_000] {
            h.record(v);
        }
        let since = h.since(&snapshot);
        assert_eq!((since.count(), since.sum()), (3, 1_019));
        // Within the bucket of 1,000, not the 50,000 before the snapshot.
        assert!(since.max() >= 1_000 && since.max() <= upper(bucket(1_000)), "{}", since.max());
        assert!(since.percentile(100.0) <= upper(bucket(1_000)) as f64);
    }
}
