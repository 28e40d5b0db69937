//! The backing key layout is a contract with data that already exists: a
//! tokend of this version loads what the previous layout's binary wrote
//! (`tests/fixtures/layout-fc01797.txt`, dumped from a real run of tokend at
//! commit fc01797), moves it to the current layout, and loads that again.

mod common;
mod procs;

use common::{RawConn, Resp, stats};
use procs::{RedisProc, Tokend};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const FIXTURE: &str = include_str!("fixtures/layout-fc01797.txt");

/// Loads the fixture's commands into `redis`; returns each token's stored
/// state (`a`, `f`, or `x` for a remembered expired one) by pool.
fn load_fixture(redis: &RedisProc) -> HashMap<(String, String), char> {
    let mut r = redis.conn();
    let mut tokens = HashMap::new();
    for line in FIXTURE.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let args: Vec<&str> = line.split(' ').collect();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _: () = cmd.query(&mut r).unwrap();
        if args[0] == "HSET" {
            let pool = args[1].trim_start_matches("tokend:{").rsplit_once("}:").unwrap().0.to_string();
            let state = if args[1].ends_with(":expired") { 'x' } else { args[3].chars().next().unwrap() };
            tokens.insert((pool, args[2].to_string()), state);
        }
    }
    tokens
}

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
    let tokens = load_fixture(&redis);
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
    assert_eq!(new_keys.len(), 1, "{new_keys:?}");
    let n: i64 = redis::cmd("HLEN").arg(&new_keys[0]).query(&mut r).unwrap();
    assert_eq!(n, 3);

    // Written back in the current layout, it loads again (kill -9: only
    // what reached the backing Redis counts).
    t.kill9();
    let t = Tokend::start_with_env(&["--port", &port, "--redis", &url], &[]);
    check_states(&t, &tokens).await;
}
