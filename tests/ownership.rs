//! One tokend per backing Redis prefix: a second one refuses to start while
//! the first renews its lease, takes over once that lapses, and a first one
//! that was paused past its lease can no longer write anything.

mod common;
mod procs;

use common::RawConn;
use procs::{RedisProc, Tokend};
use std::time::{Duration, Instant};

/// Waits for a spawned tokend to exit; its code and stderr.
fn wait_exit(mut child: std::process::Child, within: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (st.code(), err);
        }
        assert!(Instant::now() < deadline, "tokend did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn a_second_tokend_on_the_same_prefix_refuses_to_start() {
    let redis = RedisProc::start();
    let url = redis.url();
    let a = Tokend::start(&["--redis", &url, "--cluster-node-timeout", "1s"]);
    let started = Instant::now();
    let b = Tokend::spawn(&["--port", "0", "--redis", &url, "--cluster-node-timeout", "1s"], &[]);
    let (code, err) = wait_exit(b, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("held by another tokend at {}", a.addr)), "names the holder: {err}");
    assert!(started.elapsed() < Duration::from_secs(3), "it gave up once it saw a renewal");
    // Another prefix is another owner.
    let c = Tokend::start(&["--redis", &url, "--redis-prefix", "other:"]);
    drop(c);
    drop(a);
}

/// A tokend (1 s lease) on `url` holding one token of pool `p`.
async fn holder_with_a_token(url: &str) -> (Tokend, String) {
    let a = Tokend::start(&["--redis", url, "--cluster-node-timeout", "1s"]);
    let t = RawConn::connect(a.addr).await.cmd("TOKEN.GEN p").await.text();
    (a, t)
}

#[tokio::test]
async fn the_prefix_is_taken_over_once_a_killed_holders_lease_lapses() {
    let redis = RedisProc::start();
    let url = redis.url();
    let (mut a, t) = holder_with_a_token(&url).await;
    a.kill9();
    let started = Instant::now();
    let b = Tokend::start(&["--redis", &url, "--cluster-node-timeout", "1s"]);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let mut c = RawConn::connect(b.addr).await;
    assert!(c.call(&["TOKEN.INFO", "p", &t]).await.pairs()[0].1.text() == "free");
}

/// The holder is paused (SIGSTOP) past its lease; another tokend takes the
/// prefix; the first is resumed: it acknowledges no write, writes nothing to
/// the backing Redis, and stops.
#[tokio::test]
async fn a_holder_paused_past_its_lease_cannot_write_after_resuming() {
    let redis = RedisProc::start();
    let url = redis.url();
    let a = Tokend::start(&["--redis", &url, "--cluster-node-timeout", "1s", "--persist-timeout", "500ms"]);
    let mut ca = RawConn::connect(a.addr).await;
    ca.cmd("TOKEN.GEN p COUNT 3").await;
    a.signal(libc::SIGSTOP);
    // Queue a write on the paused process: it is read when it resumes.
    ca.send(&["TOKEN.GEN", "p", "COUNT", "5"]).await;
    let b = Tokend::start(&["--redis", &url, "--cluster-node-timeout", "1s"]);
    let mut cb = RawConn::connect(b.addr).await;
    assert_eq!(common::stats(&mut cb, "p").await[0], 3);
    cb.cmd("TOKEN.GEN p").await.text();
    a.signal(libc::SIGCONT);
    // A's pending GEN: refused, or not confirmed — never acknowledged.
    let r = ca.read_within(Duration::from_secs(10)).await;
    if let Some(r) = &r {
        assert!(r.err().starts_with("TRYAGAIN"), "{r:?}");
    }
    assert!(a.wait_log("another tokend", Duration::from_secs(10)).is_some(), "A noticed and stopped");
    // A is fenced now: it refuses writes, and a batch it had in flight was
    // refused by the backing Redis's fenced script. The backing Redis has
    // B's 4 tokens, none of A's late ones.
    let mut r = redis.conn();
    assert_eq!(common::backing_records(&mut r, "p").len(), 4, "nothing A tried to write reached the backing Redis");
    let refused = RawConn::connect(a.addr).await.cmd("TOKEN.GEN p").await;
    assert!(refused.err().starts_with("TRYAGAIN"), "{refused:?}");
    // What B writes still lands (sync durability: by its reply).
    cb.cmd("TOKEN.GEN p").await.text();
    assert_eq!(common::stats(&mut cb, "p").await[0], 5);
    assert_eq!(common::backing_records(&mut r, "p").len(), 5, "B's GEN, and still none of A's");
}

/// `INFO cluster`'s `cluster_slots_served` on `c`.
async fn slots_served(c: &mut RawConn) -> i64 {
    let text = c.cmd("INFO cluster").await.text();
    text.lines().find_map(|l| l.strip_prefix("cluster_slots_served:")).map_or(0, |v| v.trim().parse().unwrap())
}

/// A tokend cluster and a tokend without cluster mode never share a
/// prefix. A cluster node refuses to start while a tokend without cluster
/// mode renews its lease, and once that tokend is gone (killed: its lease
/// lapses) takes over the slots it held and serves its tokens. A tokend
/// without cluster mode refuses to start while cluster nodes are live
/// (it used to take every slot's fence from under them).
#[tokio::test]
async fn a_cluster_and_a_tokend_without_cluster_mode_never_share_a_prefix() {
    let redis = RedisProc::start();
    let url = redis.url();
    let (mut a, t) = holder_with_a_token(&url).await;
    let port = procs::free_port().to_string();
    let node = ["--port", &port, "--redis", &url, "--cluster-enabled", "yes", "--cluster-node-timeout", "1s"];
    let started = Instant::now();
    let (code, err) = wait_exit(Tokend::spawn(&node, &[]), Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("held by a tokend without cluster mode at {}", a.addr)), "names the holder: {err}");
    assert!(started.elapsed() < Duration::from_secs(3), "it gave up once it saw a renewal");

    a.kill9();
    let n = Tokend::start_with_env(&node, &[]);
    let mut c = RawConn::connect(n.addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while slots_served(&mut c).await != 16384 {
        assert!(Instant::now() < deadline, "the cluster node did not take every slot over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.cmd("TOKEN.ACQUIRE p").await.text(), t, "the earlier tokend's token");

    let (code, err) = wait_exit(Tokend::spawn(&["--port", "0", "--redis", &url], &[]), Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is used by a tokend cluster (1 live, e.g. node "), "{err}");
    assert!(err.contains(&port), "names a node: {err}");
    // The cluster still serves and writes.
    assert_eq!(c.cmd("TOKEN.STATS p").await.pairs()[2].1.int(), 1);
    c.cmd("TOKEN.GEN p").await.text();
}

/// A cluster node started on the very address of a tokend without
/// cluster mode that died takes its prefix over at once (that tokend is
/// gone: the node listens there now), not after its lease lapses.
#[tokio::test]
async fn a_cluster_node_on_the_address_of_a_dead_tokend_takes_over_at_once() {
    let redis = RedisProc::start();
    let url = redis.url();
    let port = procs::free_port().to_string();
    let mut a = Tokend::start(&["--port", &port, "--redis", &url, "--cluster-node-timeout", "30s"]);
    let t = RawConn::connect(a.addr).await.cmd("TOKEN.GEN p").await.text();
    a.kill9();
    let started = Instant::now();
    let n =
        Tokend::start(&["--port", &port, "--redis", &url, "--cluster-enabled", "yes", "--cluster-node-timeout", "1s"]);
    let mut c = RawConn::connect(n.addr).await;
    while slots_served(&mut c).await != 16384 {
        assert!(started.elapsed() < Duration::from_secs(15), "the node waited for the dead tokend's 30 s lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.cmd("TOKEN.ACQUIRE p").await.text(), t, "the earlier tokend's token");
}

/// A tokend without cluster mode that finds a cluster node joined while
/// it waited for the lease (the two started at once) gives the lease back
/// and exits 2 before it claims any slot: it reads the members again once
/// it holds the lease (and a cluster node reads the lease again once it
/// joined), so one of two such starts sees the other.
#[tokio::test]
async fn a_cluster_node_that_joins_while_a_tokend_waits_for_the_lease_stops_it() {
    let redis = RedisProc::start();
    let url = redis.url();
    let mut r = redis.conn();
    // A holder that died; its lease is deleted once the member is there.
    let _: () =
        redis::cmd("SET").arg("tokend:lease").arg("0123 127.0.0.1:1").arg("PX").arg(60000).query(&mut r).unwrap();
    let child = Tokend::spawn(&["--port", "0", "--redis", &url], &[]);
    // Past its first look at the members: it reads the lease's TTL.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut r).unwrap();
        if clients.lines().any(|l| l.contains("cmd=pttl")) {
            break;
        }
        assert!(Instant::now() < deadline, "it never waited for the lease");
        std::thread::sleep(Duration::from_millis(5));
    }
    // What a cluster node starting writes before it reads the lease.
    let _: () =
        redis::cmd("ZADD").arg("tokend:{nodes}:joining").arg(i64::MAX / 2).arg("n1 127.0.0.1:2").query(&mut r).unwrap();
    let _: () = redis::cmd("DEL").arg("tokend:lease").query(&mut r).unwrap();
    let (code, err) = wait_exit(child, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is used by a tokend cluster (1 live, e.g. node n1 at 127.0.0.1:2)"), "{err}");
    let lease: Option<String> = redis::cmd("GET").arg("tokend:lease").query(&mut r).unwrap();
    assert_eq!(lease, None, "the lease is given back");
    let fences: Vec<String> = redis::cmd("KEYS").arg("tokend:*fence*").query(&mut r).unwrap();
    assert!(fences.is_empty(), "no slot claimed: {fences:?}");
}
