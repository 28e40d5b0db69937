//! The timing wheel with 1M pending timers (deadlines spread over 5 minutes,
//! like token lifetimes): insert, re-arm (a fired entry put back 5 minutes
//! later, which is what a KEEPALIVE'd token costs the wheel), advancing the
//! clock 1 ms and 1 s in steady state, and a burst of 200k timers due in the
//! same millisecond.
//!
//! `cargo bench --bench wheel` (about a minute).

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use tokend::wheel::Wheel;

/// The store's entry type: (pool id, token).
type Item = (u64, u128);

const PENDING: u64 = 1_000_000;
/// Deadlines within this many ms of now (token lifetimes).
const SPAN: u64 = 300_000;
const START: u64 = 1_700_000_000_000;

/// A small deterministic generator (splitmix64), so every run sees the same deadlines.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A wheel at `START` holding `PENDING` timers due within `SPAN`.
fn filled(rng: &mut Rng) -> Wheel<Item> {
    let mut w = Wheel::new(START);
    for i in 0..PENDING {
        w.insert(START + 1 + rng.next() % SPAN, (1, i as u128));
    }
    w
}

fn bench_wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));

    // Insert into a wheel that already holds 1M timers.
    g.bench_function(BenchmarkId::new("insert", "1M pending"), |b| {
        let mut rng = Rng(1);
        b.iter_custom(|iters| {
            let mut w = filled(&mut rng);
            let start = Instant::now();
            for i in 0..iters {
                w.insert(START + 1 + rng.next() % SPAN, (2, i as u128));
            }
            let took = start.elapsed();
            drop(w);
            took
        })
    });

    // Steady state: every fired entry is re-armed SPAN later (all tokens kept
    // alive), so the wheel stays at 1M. One iteration = one ms of time.
    let mut rng = Rng(2);
    let mut w = filled(&mut rng);
    let mut now = START;
    let mut fired = Vec::new();
    g.bench_function(BenchmarkId::new("advance 1ms + re-arm", "1M pending"), |b| {
        b.iter(|| {
            now += 1;
            w.poll(now, &mut fired);
            for (when, item) in fired.drain(..) {
                w.insert(when + SPAN, item);
            }
        })
    });
    eprintln!("wheel: {} pending after the re-arm run", w.len());

    // Re-arm alone: put a just-fired entry back SPAN later.
    g.bench_function(BenchmarkId::new("re-arm", "1M pending"), |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Collect fired entries untimed, then time their re-arm.
                while fired.len() < left.min(10_000) as usize {
                    now += 1;
                    w.poll(now, &mut fired);
                }
                let k = fired.len().min(left as usize);
                let start = Instant::now();
                for (when, item) in fired.drain(..k) {
                    w.insert(when + SPAN, item);
                }
                took += start.elapsed();
                left -= k as u64;
            }
            took
        })
    });
    for (when, item) in fired.drain(..) {
        w.insert(when + SPAN, item);
    }

    // Advance 1 ms, 1 s: the poll alone (firing and cascading); the re-arm
    // of what fired is untimed.
    for (step, name) in [(1u64, "advance 1ms"), (1000, "advance 1s")] {
        g.bench_function(BenchmarkId::new(name, "1M pending"), |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    now += step;
                    let start = Instant::now();
                    w.poll(now, &mut fired);
                    took += start.elapsed();
                    for (when, item) in fired.drain(..) {
                        w.insert(when + SPAN, item);
                    }
                }
                took
            })
        });
    }
    drop(w);
    g.finish();

    // 200k timers due in the same ms (on top of 1M others): the poll that fires them.
    let mut g = c.benchmark_group("wheel burst");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(200_000));
    g.bench_function(BenchmarkId::new("fire 200k due in one ms", "1M pending"), |b| {
        let mut rng = Rng(3);
        let due = START + 5_000;
        b.iter_batched(
            || {
                let mut w = filled(&mut rng);
                for i in 0..200_000u64 {
                    w.insert(due, (3, i as u128));
                }
                (w, Vec::with_capacity(300_000))
            },
            |(mut w, mut out)| {
                w.poll(due, &mut out);
                (w, out)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_wheel);
criterion_main!(benches);
