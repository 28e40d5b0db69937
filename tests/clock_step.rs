//! A step of the wall clock while tokend runs (an NTP correction, a
//! suspend) must not shorten or stretch any lifetime across a restart.
//! tokend's clock never steps (it follows the monotonic clock), but a
//! restarted tokend anchors on the wall clock again: the backing Redis
//! keeps how far the persisted deadlines are from the wall clock, and the
//! new process converts.
//!
//! The step is made to this process's view of the wall clock
//! (`clock::step_wall_clock_for_tests`), which every server in the process
//! shares: the tests here take turns (`STEP`) and undo their steps.

mod common;
mod procs;

use common::{RawConn, TestServer};
use procs::RedisProc;
use std::time::{Duration, Instant};
use tokend::config::Durability;

/// Held by each test for its whole run (when they share a process).
static STEP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Steps this process's wall clock, and undoes the steps when dropped: a
/// test that fails leaves the next one a clock that is not stepped.
#[derive(Default)]
struct Steps(i64);

impl Steps {
    fn step(&mut self, ms: i64) {
        tokend::clock::step_wall_clock_for_tests(ms);
        self.0 += ms;
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        tokend::clock::step_wall_clock_for_tests(-self.0);
    }
}

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
    let _turn = STEP.lock().await;
    let mut steps = Steps::default();
    let redis = RedisProc::start();
    let mut a = server(&redis);
    let mut c = RawConn::connect(a.addr).await;
    let token = c.cmd("TOKEN.GEN p PX 100000").await.text();
    drop(c);

    // The wall clock jumps an hour ahead while the server runs.
    steps.step(3_600_000);
    wait_for_offset(&redis, 3_600_000);
    a.stop();
    let mut b = server(&redis);
    let left = lifetime_left(&b, &token).await;
    assert!((95_000..=100_000).contains(&left), "an hour's step forward: {left} ms left (0 without the offset)");

    // And two hours back while the next one runs.
    steps.step(-7_200_000);
    wait_for_offset(&redis, -3_600_000);
    b.stop();
    let d = server(&redis);
    let left = lifetime_left(&d, &token).await;
    assert!((90_000..=100_000).contains(&left), "a step back: {left} ms left (two hours more without the offset)");
}

async fn link_status(c: &mut RawConn) -> String {
    let info = c.cmd("INFO persistence").await.text();
    let line = info.lines().find(|l| l.starts_with("backing_link_status:"));
    line.unwrap_or_else(|| panic!("{info}")).to_string()
}

/// A step while the backing Redis refuses writes (`-OOM`): the new offset
/// is not written, and the changes queued behind it wait. Clients are told
/// Redis's reason at once, not only, after a persist timeout, that it "did
/// not answer".
#[tokio::test(flavor = "multi_thread")]
async fn a_clock_offset_refused_by_the_backing_redis_is_reported_with_its_reason() {
    let _turn = STEP.lock().await;
    let mut steps = Steps::default();
    let redis = RedisProc::start();
    let url = redis.url();
    let s = TestServer::start_with(move |c| {
        c.redis = Some(url);
        c.durability = Durability::Sync;
        c.persist_timeout = Duration::from_millis(300);
        // The lease is renewed every third of this: no renewal's check of
        // the link comes within the test (only the offset's write says up).
        c.cluster_node_timeout = Duration::from_secs(60);
    });
    let mut c = RawConn::connect(s.addr).await;
    c.cmd("TOKEN.GEN p").await.text();
    wait_for_offset(&redis, 0);
    let mut r = redis.conn();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query(&mut r).unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query(&mut r).unwrap();

    steps.step(5_000);
    // The clock is watched once a second: the offset is the next write.
    let deadline = Instant::now() + Duration::from_secs(5);
    while link_status(&mut c).await != "backing_link_status:down" {
        assert!(Instant::now() < deadline, "the refused offset did not take the link down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = c.cmd("TOKEN.GEN p").await.err();
    assert!(e.starts_with("TRYAGAIN the backing Redis refuses writes") && e.contains("OOM"), "{e}");
    assert!(e.ends_with("nothing was changed"), "{e}");
    assert_eq!(common::stats_of(&c.cmd("TOKEN.STATS p").await)[0], 1);

    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut r).unwrap();
    wait_for_offset(&redis, 5_000);
    let deadline = Instant::now() + Duration::from_secs(5);
    while let common::Resp::Error(e) = c.cmd("TOKEN.GEN p").await {
        assert!(e.starts_with("TRYAGAIN"), "{e}");
        assert!(Instant::now() < deadline, "still refused after the OOM: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(common::stats_of(&c.cmd("TOKEN.STATS p").await)[0], 2);
}
