//! kill -9 of tokend and of redis-server at random moments, round after
//! round; after each round every acknowledged change is still there.
//!
//! redis-server runs with `appendfsync always` so that what it acknowledged
//! survives its own kill -9. Each round loads a fresh pool; earlier pools
//! must come back unchanged after every later crash.

mod procs;

use procs::{RedisProc, Tokend, workload};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const ROUNDS: usize = 20;

/// A small deterministic PRNG (xorshift) seeded from the clock; the seed is
/// printed so a failing run can be replayed with CHAOS_SEED.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn stats(c: &mut redis::aio::MultiplexedConnection, pool: &str) -> HashMap<String, i64> {
    redis::cmd("TOKEN.STATS").arg(pool).query_async(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rounds_of_kill_dash_nine_lose_nothing_acknowledged() {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let mut redis = RedisProc::start_durable();
    // One port for every restart: a tokend restarted on its address takes
    // the prefix's lease over at once (the one killed cannot renew it).
    let port = procs::free_port().to_string();
    let args =
        ["--port", &port, "--redis", &redis.url(), "--durability", "sync", "--persist-timeout", "3s"].map(String::from);
    let start = |args: &[String]| Tokend::start_with_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let mut tokend = start(&args);
    let mut finished: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let (mut acked, mut checked, mut redis_kills, mut tokend_kills) = (0u64, 0usize, 0, 0);
    for round in 0..ROUNDS {
        let pool = format!("chaos{round}");
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(workload::run(tokend.url(), pool.clone(), 4, stop.clone()));
        tokio::time::sleep(Duration::from_millis(50 + rng.next() % 150)).await;
        if rng.next().is_multiple_of(2) {
            // The backing Redis dies under load and comes back; tokend keeps
            // the changes queued, then we crash tokend too and recover.
            redis.kill();
            redis_kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.next() % 300)).await;
            redis.restart();
            tokio::time::sleep(Duration::from_millis(50 + rng.next() % 100)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while !load.is_finished() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
        }
        tokend.kill9();
        tokend_kills += 1;
        let ledger = load.await.unwrap();
        tokend = start(&args);
        let mut c = tokend.conn().await;
        checked += workload::verify(&mut c, &pool, &ledger).await;
        acked += ledger.acked;
        for (p, want) in &finished {
            assert_eq!(&stats(&mut c, p).await, want, "round {round}: pool {p} changed after a crash");
        }
        finished.insert(pool.clone(), stats(&mut c, &pool).await);
    }
    eprintln!(
        "chaos: {ROUNDS} rounds, {tokend_kills} tokend kill -9, {redis_kills} redis-server kill -9, \
         {acked} acknowledged operations, {checked} token states checked, lost: 0"
    );
}
