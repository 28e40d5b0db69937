//! The backing key layout is a contract with data that already exists: a
//! tokend of this version loads what the earlier layouts' binaries wrote
//! (`tests/fixtures/layout-*.txt`, each dumped from a real run of tokend at
//! the commit it names), moves it to the current layout, and loads that
//! again.

mod common;
mod procs;

use common::{RawConn, Resp, stats};
use procs::{RedisProc, Tokend};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Before hash-slot fences: every pool listed in `tokend:pools`.
const FIXTURE: &str = include_str!("fixtures/layout-fc01797.txt");

/// Hash-slot fences, each pool's tokens in one hash.
const FIXTURE_HASHES: &str = include_str!("fixtures/layout-16a43e9.txt");

/// Loads the fixture's commands into `redis`; returns each token's stored
/// state (`a`, `f`, or `x` for a remembered expired one) by pool.
fn load_fixture(redis: &RedisProc, fixture: &str) -> HashMap<(String, String), char> {
    let mut r = redis.conn();
    let mut tokens = HashMap::new();
    for line in fixture.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let args: Vec<&str> = line.split(' ').collect();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _: () = cmd.query(&mut r).unwrap();
        if args[0] == "HSET" {
            // `tokend:{pool}:tokens`, or `tokend:{tag}:pool:tokens` for a
            // pool with braces in the later layout.
            let key = args[1].strip_prefix("tokend:{").unwrap();
            let pool = match key.strip_prefix("b}:") {
                Some(rest) => rest.rsplit_once(':').unwrap().0,
                None => key.rsplit_once("}:").unwrap().0,
            }
            .to_string();
            let state = if args[1].ends_with(":expired") { 'x' } else { args[3].chars().next().unwrap() };
            tokens.insert((pool, args[2].to_string()), state);
        }
    }
    tokens
}

/// Checks the four pools both fixtures have, then every token's state
/// (and its ten-year lifetime).
async fn check_states(t: &Tokend, tokens: &HashMap<(String, String), char>) {
    let mut c = RawConn::connect(t.addr).await;
    assert_eq!(stats(&mut c, "plain").await, [5, 3, 2, 0, 0]);
    assert_eq!(stats(&mut c, "a{b}c").await, [3, 2, 1, 0, 0]);
    assert_eq!(stats(&mut c, "tenant:7").await, [2, 2, 0, 0, 0]);
    assert_eq!(stats(&mut c, "gone").await, [0, 0, 0, 2, 0]);
    for ((pool, token), state) in tokens {
        let info = c.call(&["TOKEN.INFO", pool, token]).await;
        match state {
            'x' => assert!(info.err().starts_with("EXPIRED"), "{pool} {token}: {info:?}"),
            s => {
                let f: HashMap<String, Resp> = info.pairs().into_iter().collect();
                let want = if *s == 'a' { "assigned" } else { "free" };
                assert_eq!(f["state"].text(), want, "{pool} {token}");
                assert!(f["lifetime-left-ms"].int() > 9 * 365 * 24 * 3_600_000, "{pool} {token}: {info:?}");
            }
        }
    }
}

#[tokio::test]
async fn data_written_by_the_previous_layout_loads_and_moves_to_the_current_one() {
    let redis = RedisProc::start();
    let tokens = load_fixture(&redis, FIXTURE);
    assert_eq!(tokens.len(), 12);
    let url = redis.url();
    // One port for both starts: the second takes the killed one's lease at once.
    let port = procs::free_port().to_string();
    let mut t = Tokend::start_with_env(&["--port", &port, "--redis", &url], &[]);
    check_states(&t, &tokens).await;

    // The pools move to their slots' sets; the old pool set empties; the
    // pool with braces in its name gets its new keys, the old one goes.
    let mut r = redis.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = redis::cmd("SCARD").arg("tokend:pools").query(&mut r).unwrap();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} pools still in the old set");
        std::thread::sleep(Duration::from_millis(20));
    }
    let old: i64 = redis::cmd("EXISTS").arg("tokend:{a{b}c}:tokens").query(&mut r).unwrap();
    assert_eq!(old, 0, "the old key of the pool with braces is gone");
    let new_keys: Vec<String> = redis::cmd("KEYS").arg("tokend:{*}:a{b}c:tokens").query(&mut r).unwrap();
    assert_eq!(new_keys.len(), 0, "and its tokens are in slots: {new_keys:?}");
    let slabs: Vec<String> = redis::cmd("KEYS").arg("tokend:{*}:a{b}c:slab:*").query(&mut r).unwrap();
    assert!(!slabs.is_empty());

    // Written back in the current layout, it loads again (kill -9: only
    // what reached the backing Redis counts).
    t.kill9();
    let t = Tokend::start_with_env(&["--port", &port, "--redis", &url], &[]);
    check_states(&t, &tokens).await;
}

/// Waits (until `deadline`) for the tokens hashes of the 16a43e9 fixture's
/// pools to be gone: their tokens are in slab strings then.
fn wait_hashes_moved(r: &mut redis::Connection, deadline: Instant) {
    let hashes =
        ["tokend:{plain}:tokens", "tokend:{b}:a{b}c:tokens", "tokend:{tenant:7}:tokens", "tokend:{holes}:tokens"];
    loop {
        let left: i64 = redis::cmd("EXISTS").arg(&hashes[..]).query(r).unwrap();
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} tokens hashes left");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn tokens_kept_in_hashes_load_and_move_to_slab_strings() {
    let redis = RedisProc::start();
    let tokens = load_fixture(&redis, FIXTURE_HASHES);
    assert_eq!(tokens.len(), 15);
    let url = redis.url();
    let port = procs::free_port().to_string();
    let mut t = Tokend::start_with_env(&["--port", &port, "--redis", &url], &[]);
    let check = async |t: &Tokend| {
        check_states(t, &tokens).await;
        let mut c = RawConn::connect(t.addr).await;
        assert_eq!(stats(&mut c, "holes").await, [3, 3, 0, 0, 0]);
    };
    check(&t).await;

    // Each pool's tokens go to its slab strings, with the same records,
    // and its tokens hash goes.
    let mut r = redis.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_hashes_moved(&mut r, deadline);
    for pool in ["plain", "tenant:7", "holes"] {
        let stored = common::backing_records(&mut r, pool);
        let want: HashMap<&str, char> =
            tokens.iter().filter(|((p, _), _)| p == pool).map(|((_, t), s)| (t.as_str(), *s)).collect();
        assert_eq!(stored.len(), want.len(), "{pool}: {stored:?}");
        for (token, rec) in &stored {
            assert_eq!(rec.chars().next(), want.get(token.as_str()).copied(), "{pool} {token}");
        }
        let line = FIXTURE_HASHES.lines().find(|l| l.contains(&format!(" tokend:{{{pool}}}:tokens "))).unwrap();
        let (token, rec) = line.rsplit_once(' ').map(|(a, rec)| (a.rsplit_once(' ').unwrap().1, rec)).unwrap();
        assert_eq!(stored[token], rec, "{pool}: the record is the one the fixture had");
    }

    // Loaded again from the slab strings (kill -9: only what reached the
    // backing Redis counts).
    t.kill9();
    let t = Tokend::start_with_env(&["--port", &port, "--redis", &url], &[]);
    check(&t).await;
}

/// In cluster mode a node loads the pools of the slots it claims; those of
/// an earlier layout are moved the same way.
#[tokio::test]
async fn a_cluster_node_moves_the_pools_of_the_slots_it_claims() {
    let redis = RedisProc::start();
    let tokens = load_fixture(&redis, FIXTURE_HASHES);
    let url = redis.url();
    let port = procs::free_port().to_string();
    let t = Tokend::start_with_env(&["--port", &port, "--redis", &url, "--cluster-enabled", "yes"], &[]);
    // Serving once it has claimed and loaded every slot.
    let mut c = RawConn::connect(t.addr).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while matches!(c.call(&["TOKEN.STATS", "holes"]).await, Resp::Error(_)) {
        assert!(Instant::now() < deadline, "the node never served its slots");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check_states(&t, &tokens).await;
    let mut r = redis.conn();
    wait_hashes_moved(&mut r, deadline);
    for (pool, n) in [("plain", 5), ("tenant:7", 2), ("holes", 3)] {
        assert_eq!(common::backing_records(&mut r, pool).len(), n, "{pool}");
    }
}
