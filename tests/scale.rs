//! One million tokens in one pool: generation pipelined over one connection,
//! then distinct random acquisitions and exact counts.

mod common;

use common::{Resp, TestServer, encode_cmd, stats};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_million_tokens() {
    const BATCHES: usize = 1000;
    const PER_BATCH: usize = 1000;
    const ACQUIRES: usize = 1000;
    let server = TestServer::start();
    let mut c = server.raw().await;
    let start = Instant::now();

    let mut pipe = Vec::new();
    for _ in 0..BATCHES {
        pipe.extend(encode_cmd(&["TOKEN.GEN", "p", "COUNT", &PER_BATCH.to_string()]));
    }
    let replies = c.pipeline(&pipe, BATCHES).await;
    let generated_in = start.elapsed();
    // token → the GEN batch it came from
    let mut all: HashMap<Vec<u8>, usize> = HashMap::with_capacity(BATCHES * PER_BATCH);
    for (i, r) in replies.into_iter().enumerate() {
        let Resp::Array(items) = r else { panic!("GEN reply {i} is not an array: {r:?}") };
        assert_eq!(items.len(), PER_BATCH, "GEN reply {i}");
        for t in items {
            let Resp::Bulk(t) = t else { panic!("a token is a bulk string: {t:?}") };
            assert_eq!(t.len(), 36);
            assert_eq!(t[14], b'4', "UUID v4");
            all.insert(t, i);
        }
    }
    assert_eq!(all.len(), BATCHES * PER_BATCH, "all 1,000,000 tokens are distinct");

    let mut pipe = Vec::new();
    for _ in 0..ACQUIRES {
        pipe.extend(encode_cmd(&["TOKEN.ACQUIRE", "p", "PX", "600000"]));
    }
    let acq_start = Instant::now();
    let replies = c.pipeline(&pipe, ACQUIRES).await;
    let acquired_in = acq_start.elapsed();
    let mut got = HashSet::new();
    let (mut in_first, mut in_last) = (0, 0);
    for r in replies {
        let Resp::Bulk(t) = r else { panic!("ACQUIRE on a full pool returned {r:?}") };
        let batch = *all.get(&t).expect("acquired a token that was never generated");
        in_first += usize::from(batch < BATCHES / 100);
        in_last += usize::from(batch >= BATCHES - BATCHES / 100);
        assert!(got.insert(t), "the same token was acquired twice");
    }
    assert_eq!(got.len(), ACQUIRES);
    assert_eq!(stats(&mut c, "p").await, [1_000_000, 999_000, 1000, 0, 0]);

    // Uniformly random, not in generation order: 1% of the batches should
    // hold about 1% (~10) of the 1000 picks; FIFO or LIFO order would put all
    // 1000 there. 100 is far beyond any plausible uniform outcome.
    assert!(in_first < 100, "{in_first} of {ACQUIRES} acquired tokens come from the first 1% generated");
    assert!(in_last < 100, "{in_last} of {ACQUIRES} acquired tokens come from the last 1% generated");

    let total = start.elapsed();
    eprintln!(
        "1,000,000 tokens generated (and read back) in {generated_in:?}; {ACQUIRES} acquired in {acquired_in:?}; total \
         {total:?}"
    );
    assert!(total < Duration::from_secs(120), "the 1M-token test took {total:?}");
}
