//! Store operations at 10k, 1M and 10M tokens in one pool: GEN, ACQUIRE,
//! KEEPALIVE, UNBLOCK, and ACQUIRE+UNBLOCK as a pair (the pool size stays
//! constant). The pool is grown in place between sizes (outside any
//! measurement), so the 10M case costs one fill of 10M tokens (~1.5 GB).
//!
//! Lifetimes and leases are 30 days: no expiry fires during a run, so each
//! measurement is the command itself.
//!
//! `cargo bench --bench store` (about 2 minutes); `-- acquire` for a subset.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokend::clock::Clock;
use tokend::notify::{EventClasses, Notifier};
use tokend::pubsub::PubSub;
use tokend::store::{Acquired, Store, StoreConfig};

const POOL: &[u8] = b"bench";
const SIZES: [(u64, &str); 3] = [(10_000, "10k"), (1_000_000, "1M"), (10_000_000, "10M")];
/// Acquire/unblock work in chunks this big, so a chunk never empties the smallest pool.
const CHUNK: u64 = 1_000;

fn new_store() -> Store {
    let month = 30 * 86_400_000;
    let config = StoreConfig { default_lifetime_ms: month, default_lease_ms: month, ..StoreConfig::default() };
    let classes = EventClasses::parse(EventClasses::DEFAULT).expect("default classes parse");
    Store::new(config, Clock::new(), Arc::new(Notifier::new(classes, Arc::new(PubSub::default()))))
}

/// Grows the pool to `n` tokens; returns (up to) the first 4096 ids made.
fn grow(store: &Store, n: u64, sample: &mut Vec<u128>) {
    let mut have = store.stats(POOL).total;
    while have < n {
        let k = (n - have).min(100_000);
        let ids = store.gen_tokens(POOL, None, k).expect("gen");
        let room = 4096usize.saturating_sub(sample.len());
        sample.extend(ids.iter().take(room));
        have += k;
    }
}

fn acquire_one(store: &Store) -> u128 {
    match store.acquire(POOL, None, false) {
        Acquired::Token(t) => t,
        _ => panic!("the pool ran dry"),
    }
}

fn bench_store(c: &mut Criterion) {
    let store = new_store();
    let mut sample = Vec::new();
    let mut g = c.benchmark_group("store");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for (n, name) in SIZES {
        let t0 = Instant::now();
        grow(&store, n, &mut sample);
        eprintln!("store: pool at {name} tokens (grown in {:.1}s)", t0.elapsed().as_secs_f64());

        // GEN of one token per command; the tokens made are deleted after
        // the timed loop, so the pool stays at its size.
        g.bench_function(BenchmarkId::new("gen", name), |b| {
            b.iter_custom(|iters| {
                let mut made = Vec::with_capacity(iters as usize);
                let start = Instant::now();
                for _ in 0..iters {
                    made.push(store.gen_tokens(POOL, None, 1).expect("gen")[0]);
                }
                let took = start.elapsed();
                for t in made {
                    store.del(POOL, t);
                }
                took
            })
        });

        // ACQUIRE timed; the tokens go back (UNBLOCK) untimed, chunk by chunk.
        g.bench_function(BenchmarkId::new("acquire", name), |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                let mut held = Vec::with_capacity(CHUNK as usize);
                let mut left = iters;
                while left > 0 {
                    let k = left.min(CHUNK);
                    let start = Instant::now();
                    for _ in 0..k {
                        held.push(acquire_one(&store));
                    }
                    took += start.elapsed();
                    for t in held.drain(..) {
                        store.unblock(POOL, t).expect("unblock");
                    }
                    left -= k;
                }
                took
            })
        });

        // UNBLOCK timed; the tokens are acquired untimed first.
        g.bench_function(BenchmarkId::new("unblock", name), |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                let mut held = Vec::with_capacity(CHUNK as usize);
                let mut left = iters;
                while left > 0 {
                    let k = left.min(CHUNK);
                    held.extend((0..k).map(|_| acquire_one(&store)));
                    let start = Instant::now();
                    for t in held.drain(..) {
                        store.unblock(POOL, t).expect("unblock");
                    }
                    took += start.elapsed();
                    left -= k;
                }
                took
            })
        });

        // KEEPALIVE of (free) tokens spread over the pool.
        g.bench_function(BenchmarkId::new("keepalive", name), |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) % sample.len();
                store.keepalive(POOL, sample[i]).expect("keepalive")
            })
        });

        // The pair a client does per use: ACQUIRE then UNBLOCK.
        g.bench_function(BenchmarkId::new("acquire+unblock", name), |b| {
            b.iter(|| {
                let t = acquire_one(&store);
                store.unblock(POOL, t).expect("unblock");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
