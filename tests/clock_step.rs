//! A step of the wall clock while tokend runs (an NTP correction, a
//! suspend) must not shorten or stretch any lifetime across a restart.
//! tokend's clock never steps (it follows the monotonic clock), but a
//! restarted tokend anchors on the wall clock again: the backing Redis
//! keeps how far the persisted deadlines are from the wall clock, and the
//! new process converts.
//!
//! One test in this file: the step is made to this process's view of the
//! wall clock (`clock::step_wall_clock_for_tests`), which every server in
//! the process shares.

mod common;
mod procs;

use common::{RawConn, TestServer};
use procs::RedisProc;
use std::time::{Duration, Instant};

fn server(redis: &RedisProc) -> TestServer {
    let url = redis.url();
    TestServer::start_with(move |c| c.redis = Some(url))
}

/// Waits until the backing Redis's clock offset reads `want` (± 50 ms).
fn wait_for_offset(redis: &RedisProc, want: i64) {
    let mut r = redis.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Option<i64> = redis::cmd("GET").arg("tokend:clock").query(&mut r).unwrap();
        if got.is_some_and(|g| (g - want).abs() < 50) {
            return;
        }
        assert!(Instant::now() < deadline, "clock offset {got:?}, want {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn lifetime_left(s: &TestServer, token: &str) -> i64 {
    let mut c = RawConn::connect(s.addr).await;
    let info = c.call(&["TOKEN.INFO", "p", token]).await;
    info.pairs().into_iter().find(|(k, _)| k == "lifetime-left-ms").unwrap().1.int()
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetimes_survive_wall_clock_steps_across_restarts() {
    let redis = RedisProc::start();
    let mut a = server(&redis);
    let mut c = RawConn::connect(a.addr).await;
    let token = c.cmd("TOKEN.GEN p PX 100000").await.text();
    drop(c);

    // The wall clock jumps an hour ahead while the server runs.
    tokend::clock::step_wall_clock_for_tests(3_600_000);
    wait_for_offset(&redis, 3_600_000);
    a.stop();
    let mut b = server(&redis);
    let left = lifetime_left(&b, &token).await;
    assert!((95_000..=100_000).contains(&left), "an hour's step forward: {left} ms left (0 without the offset)");

    // And two hours back while the next one runs.
    tokend::clock::step_wall_clock_for_tests(-7_200_000);
    wait_for_offset(&redis, -3_600_000);
    b.stop();
    let d = server(&redis);
    let left = lifetime_left(&d, &token).await;
    assert!((90_000..=100_000).contains(&left), "a step back: {left} ms left (two hours more without the offset)");
}
