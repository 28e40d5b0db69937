//! Faults of the backing Redis, injected into a real redis-server under a
//! real tokend: hung (SIGSTOP), refusing writes (a planted key of the wrong
//! type, `-OOM` at maxmemory, `-READONLY` as a replica, `CLIENT PAUSE
//! WRITE`) and losing its data
//! (FLUSHALL, a restart without persistence). In each: every request gets
//! exactly its own reply, in order; every acknowledged change is in the
//! backing Redis and survives a tokend restart; no event is published on the
//! backing Redis twice.

mod common;
mod procs;

use common::{RawConn, Resp, encode_cmd};
use procs::{RedisProc, Tokend, workload};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// tokend on `redis` in sync mode with a short persist timeout.
fn tokend(redis: &RedisProc, extra: &[&str]) -> Tokend {
    let mut args = vec!["--redis", &*Box::leak(redis.url().into_boxed_str()), "--durability", "sync"];
    args.extend(["--persist-timeout", "500ms"]);
    args.extend_from_slice(extra);
    Tokend::start(&args)
}

/// Counts every message published on the backing Redis's keyevent
/// channels, by payload, from a thread (the test's runtime may block).
struct EventCounter {
    seen: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
}

impl EventCounter {
    fn start(redis: &RedisProc) -> EventCounter {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let url = redis.url();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let client = redis::Client::open(url).unwrap();
            let mut con = client.get_connection().unwrap();
            let mut ps = con.as_pubsub();
            ps.psubscribe("__keyevent@0__:*").unwrap();
            ps.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            ready_tx.send(()).unwrap();
            while !st.load(Ordering::Relaxed) {
                let Ok(msg) = ps.get_message() else { continue };
                let key = format!("{} {}", msg.get_channel_name(), msg.get_payload::<String>().unwrap_or_default());
                *s.lock().unwrap().entry(key).or_insert(0) += 1;
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        EventCounter { seen, stop }
    }

    /// Asserts nothing was seen twice; returns how many distinct events.
    fn assert_each_once(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "events published more than once: {twice:?}");
        seen.len()
    }

    fn count(&self, event: &str) -> usize {
        self.seen.lock().unwrap().keys().filter(|k| k.starts_with(&format!("__keyevent@0__:{event} "))).count()
    }
}

impl Drop for EventCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A pipeline of commands in one write, each bracketed by an ECHO marker;
/// returns the replies of the commands (checking the markers are where they
/// must be: exactly one reply per request, in order).
async fn bracketed(c: &mut RawConn, cmds: &[&[&str]]) -> Vec<Resp> {
    let mut bytes = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        bytes.extend(encode_cmd(&["ECHO", &format!("before-{i}")]));
        bytes.extend(encode_cmd(cmd));
    }
    bytes.extend(encode_cmd(&["ECHO", "end"]));
    let replies = c.pipeline(&bytes, 2 * cmds.len() + 1).await;
    let mut out = Vec::new();
    for (i, pair) in replies.chunks(2).enumerate() {
        if i < cmds.len() {
            assert_eq!(pair[0], Resp::Bulk(format!("before-{i}").into_bytes()), "reply {i} out of step: {replies:?}");
            out.push(pair[1].clone());
        } else {
            assert_eq!(pair[0], Resp::Bulk(b"end".to_vec()), "{replies:?}");
        }
    }
    out
}

/// TOKEN.STATS total of a pool.
async fn total(c: &mut RawConn, pool: &str) -> i64 {
    common::stats(c, pool).await[0]
}

/// The tokens the backing Redis holds for a pool.
fn backing_tokens(redis: &RedisProc, pool: &str) -> HashMap<String, String> {
    common::backing_records(&mut redis.conn(), pool)
}

/// Polls until a write goes through again (the backing Redis is back).
async fn until_writable(c: &mut RawConn, pool: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.call(&["TOKEN.GEN", pool]).await {
            Resp::Bulk(t) => return String::from_utf8(t).unwrap(),
            Resp::Error(e) => assert!(e.starts_with("TRYAGAIN"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "writes never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Restarts tokend gracefully on the same backing Redis and checks that it
/// recovers exactly the pool's tokens as they were (what the backing Redis
/// had).
async fn restart_and_compare(t: &mut Tokend, redis: &RedisProc, pools: &[&str]) -> Tokend {
    let mut before = HashMap::new();
    let mut c = RawConn::connect(t.addr).await;
    for p in pools {
        before.insert(p.to_string(), common::stats(&mut c, p).await);
    }
    drop(c);
    assert!(t.terminate().success());
    let t2 = tokend(redis, &[]);
    let mut c = RawConn::connect(t2.addr).await;
    for p in pools {
        assert_eq!(common::stats(&mut c, p).await, before[*p], "pool {p} after a restart");
    }
    t2
}

/// A hung backing Redis (SIGSTOP): a pipelined write gets its own -TRYAGAIN
/// after the persist timeout, the requests around it their own replies;
/// later writes are refused before they change anything; a blocked ACQUIRE
/// gets one reply; after SIGCONT everything is written once.
#[tokio::test]
async fn a_hung_backing_redis() {
    let redis = RedisProc::start();
    let events = EventCounter::start(&redis);
    let mut t = tokend(&redis, &[]);
    let mut c = RawConn::connect(t.addr).await;
    let first = c.cmd("TOKEN.GEN p").await.text();
    redis.signal(libc::SIGSTOP);

    // Admitted before the hang is noticed: the GEN waits for the persist
    // timeout and gets its own error; the ACQUIRE then blocks and times
    // out with one nil (it used to get the GEN's error and then its own).
    let started = Instant::now();
    let r =
        bracketed(&mut c, &[&["PING"], &["TOKEN.GEN", "p"], &["ECHO", "x"], &["TOKEN.ACQUIRE", "q", "BLOCK", "300"]])
            .await;
    assert_eq!(r[0], Resp::Simple("PONG".into()));
    let e = r[1].err();
    assert!(e.starts_with("TRYAGAIN the backing Redis did not confirm"), "{e}");
    assert_eq!(r[2], Resp::Bulk(b"x".to_vec()));
    assert!(r[3].is_null(), "{:?}", r[3]);
    assert!(started.elapsed() >= Duration::from_millis(750), "the persist timeout, then the block");
    // The unconfirmed GEN is applied here (and queued): 2 tokens.
    assert_eq!(total(&mut c, "p").await, 2);

    // Now the link counts as down: writes are refused before they change
    // anything, however many are pipelined, each with its own error.
    let r = bracketed(&mut c, &[&["TOKEN.GEN", "p"], &["TOKEN.ACQUIRE", "p"], &["TOKEN.STATS", "p"]]).await;
    for e in &r[..2] {
        let e = e.err();
        assert!(
            e.starts_with("TRYAGAIN the backing Redis did not answer") && e.ends_with("nothing was changed"),
            "{e}"
        );
    }
    assert_eq!(common::stats_of(&r[2]), [2, 2, 0, 0, 0], "nothing changed");

    // A blocking ACQUIRE is a write too: refused at once, one reply.
    let r = bracketed(&mut c, &[&["TOKEN.GEN", "q"], &["TOKEN.ACQUIRE", "q", "BLOCK", "300"]]).await;
    assert!(r[0].err().starts_with("TRYAGAIN"));
    assert!(r[1].err().starts_with("TRYAGAIN"), "{:?}", r[1]);

    redis.signal(libc::SIGCONT);
    let third = until_writable(&mut c, "p").await;
    let stored = backing_tokens(&redis, "p");
    assert_eq!(stored.len() as i64, total(&mut c, "p").await, "everything in memory reached the backing Redis");
    assert!(stored.contains_key(&first) && stored.contains_key(&third));
    drop(c);
    t = restart_and_compare(&mut t, &redis, &["p"]).await;
    drop(t);
    events.assert_each_once();
}

/// A blocked ACQUIRE served while the backing Redis hangs: its token was
/// assigned by the unit of the GEN that freed it, and its reply waits for
/// that unit like the GEN's own: both are told "not confirmed", one reply
/// each; after SIGCONT the assignment is in the backing Redis.
#[tokio::test]
async fn a_blocked_acquire_served_while_the_backing_redis_hangs() {
    let redis = RedisProc::start();
    let mut t = tokend(&redis, &[]);
    let mut waiter = RawConn::connect(t.addr).await;
    let mut c = RawConn::connect(t.addr).await;
    waiter.send(&["TOKEN.ACQUIRE", "w", "PX", "60000", "BLOCK", "10000"]).await;
    common::wait_for_waiters(&mut c, "w", 1).await;
    redis.signal(libc::SIGSTOP);
    let e = c.cmd("TOKEN.GEN w").await.err();
    assert!(e.starts_with("TRYAGAIN the backing Redis did not confirm"), "{e}");
    let e = waiter.read_within(Duration::from_secs(5)).await.expect("the waiter's reply").err();
    assert!(e.starts_with("TRYAGAIN the backing Redis did not confirm"), "{e}");
    assert!(waiter.read_within(Duration::from_millis(200)).await.is_none(), "one reply");
    redis.signal(libc::SIGCONT);
    until_writable(&mut c, "w").await;
    let r = c.cmd("TOKEN.STATS w").await;
    assert_eq!(common::stats_of(&r)[..3], [2, 1, 1], "the served token stays assigned");
    drop((c, waiter));
    t = restart_and_compare(&mut t, &redis, &["w"]).await;
    let mut c = RawConn::connect(t.addr).await;
    let r = c.cmd("TOKEN.STATS w").await;
    assert_eq!(common::stats_of(&r)[..3], [2, 1, 1], "the assignment reached the backing Redis");
}

/// A key of the wrong type where a pool's key should be (someone else's
/// key): that pool's writes get `-ERR … refused …`; every other write, even
/// in the same batch, goes through; nothing wedges.
#[tokio::test]
async fn a_key_of_the_wrong_type_refuses_only_its_pools_changes() {
    let redis = RedisProc::start();
    let mut r = redis.conn();
    let _: () = redis::cmd("HSET").arg("tokend:{bad}:slab:0").arg("not").arg("a string").query(&mut r).unwrap();
    let events = EventCounter::start(&redis);
    let mut t = tokend(&redis, &[]);
    let mut c = RawConn::connect(t.addr).await;
    let replies = bracketed(
        &mut c,
        &[&["TOKEN.GEN", "good"], &["TOKEN.GEN", "bad"], &["TOKEN.GEN", "good", "COUNT", "2"], &["TOKEN.STATS", "bad"]],
    )
    .await;
    common::assert_uuid_v4(&replies[0].text());
    let e = replies[1].err();
    assert!(e.starts_with("ERR the backing Redis refused this change (WRONGTYPE"), "{e}");
    assert_eq!(replies[2].items().len(), 2);
    assert_eq!(common::stats_of(&replies[3])[0], 1, "the refused GEN is in memory only");
    let info = c.cmd("INFO persistence").await.text();
    assert!(info.contains("backing_refused_changes:1\r\n"), "{info}");
    assert!(info.contains("backing_link_status:up\r\n"), "{info}");
    // Later writes go on (and the bad pool's go on failing alone).
    common::assert_uuid_v4(&c.cmd("TOKEN.GEN good").await.text());
    assert!(c.cmd("TOKEN.GEN bad").await.err().starts_with("ERR the backing Redis refused"));
    assert_eq!(backing_tokens(&redis, "good").len(), 4);
    drop(c);
    assert!(t.terminate().success());
    t = tokend(&redis, &[]);
    let mut c = RawConn::connect(t.addr).await;
    assert_eq!(total(&mut c, "good").await, 4, "the good pool survives a restart");
    assert_eq!(total(&mut c, "bad").await, 0, "the refused one was never durable");
    // A GEN that fills the whole slab string writes it in one go: refused
    // the same way, and someone else's key is left as it was.
    let e = c.cmd("TOKEN.GEN bad COUNT 20000").await.err();
    assert!(e.starts_with("ERR the backing Redis refused this change (WRONGTYPE"), "{e}");
    let kept: String = redis::cmd("HGET").arg("tokend:{bad}:slab:0").arg("not").query(&mut redis.conn()).unwrap();
    assert_eq!(kept, "a string");
    events.assert_each_once();
}

/// The backing Redis refuses writes for a while (`refuse` makes it so,
/// `allow` undoes it), saying `reason` (the start of Redis's words).
/// GENs are refused with that reason before they change anything; reads
/// are served; five tokens that expire meanwhile have their events held
/// back, and each is published once when Redis takes writes again; then
/// the backing Redis holds what tokend holds, and a restart recovers it.
async fn refusing_writes(
    refuse: impl FnOnce(&mut redis::Connection),
    allow: impl FnOnce(&mut redis::Connection),
    reason: &str,
) {
    let redis = RedisProc::start();
    let events = EventCounter::start(&redis);
    let mut t = tokend(&redis, &[]);
    let mut c = RawConn::connect(t.addr).await;
    // They must outlive the GENs below by a margin: if they expired first,
    // their expiry would find out about the refusal before the first GEN.
    let made = Instant::now();
    let doomed: Vec<String> = c.cmd("TOKEN.GEN p PX 3000 COUNT 5").await.items().iter().map(Resp::text).collect();
    let mut r = redis.conn();
    refuse(&mut r);
    // The first write finds out (not confirmed in time; its change stays
    // queued and its token is served), unless tokend had found out first
    // through a write of its own (seen twice in about 90 runs of the OOM
    // case next to the READONLY one: its log said "refuses writes" 3.5 ms
    // after it finished loading, before this GEN). Later ones are refused
    // before they change anything, with Redis's reason as soon as the
    // writer has it (on a loaded machine its answer can take longer than
    // the persist timeout: until then the link "did not answer").
    let said = format!("TRYAGAIN the backing Redis refuses writes ({reason}");
    let e = c.cmd("TOKEN.GEN p").await.err();
    let admitted = if e.starts_with("TRYAGAIN the backing Redis did not confirm") {
        1
    } else {
        assert!(
            (e.starts_with(&said) || e.starts_with("TRYAGAIN the backing Redis did not answer"))
                && e.ends_with("; nothing was changed"),
            "{e}"
        );
        0
    };
    loop {
        let e = c.cmd("TOKEN.GEN p").await.err();
        assert!(e.ends_with("nothing was changed"), "{e}");
        if e.starts_with(&said) {
            break;
        }
        assert!(e.starts_with("TRYAGAIN the backing Redis did not answer"), "{e}");
        assert!(
            made.elapsed() < Duration::from_millis(2_500),
            "{reason:?} was not reported in time: {e}; tokend logged:\n{}",
            t.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(made.elapsed() < Duration::from_millis(3_000), "the GENs came after the five expired");
    assert_eq!(total(&mut c, "p").await, 5 + admitted);
    // The five expire meanwhile (their events wait in the queue).
    tokio::time::sleep_until((made + Duration::from_millis(3_300)).into()).await;
    assert_eq!(total(&mut c, "p").await, admitted);
    assert_eq!(events.count("expired"), 0, "published while the backing Redis refused writes");
    allow(&mut r);
    until_writable(&mut c, "p").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.count("expired") < 5 {
        assert!(Instant::now() < deadline, "expiry events after {reason:?}: {}", events.count("expired"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    events.assert_each_once();
    for d in &doomed {
        assert!(events.seen.lock().unwrap().contains_key(&format!("__keyevent@0__:expired p:{d}")));
    }
    assert_eq!(backing_tokens(&redis, "p").len() as i64, total(&mut c, "p").await);
    drop(c);
    t = restart_and_compare(&mut t, &redis, &["p"]).await;
    drop(t);
}

/// `-OOM` at maxmemory.
#[tokio::test]
async fn a_backing_redis_out_of_memory() {
    let set = |r: &mut redis::Connection, k: &str, v: &str| {
        let _: () = redis::cmd("CONFIG").arg("SET").arg(k).arg(v).query(r).unwrap();
    };
    refusing_writes(
        |r| {
            set(r, "maxmemory-policy", "noeviction");
            set(r, "maxmemory", "1");
        },
        |r| set(r, "maxmemory", "0"),
        "OOM command not allowed",
    )
    .await;
}

/// `-READONLY`: the backing Redis is made a replica, as a failover that
/// demoted it would (of a master that never answers, so it keeps its
/// data).
#[tokio::test]
async fn a_backing_redis_turned_replica() {
    // Held for the whole test, so no other test's server can take the
    // port and become the master it syncs from (it connects, and waits
    // for an answer to its PING until REPLICAOF NO ONE).
    let master = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = master.local_addr().unwrap().port();
    refusing_writes(
        |r| {
            let _: () = redis::cmd("REPLICAOF").arg("127.0.0.1").arg(nobody).query(r).unwrap();
        },
        |r| {
            let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(r).unwrap();
        },
        "READONLY You can't write against a read only replica",
    )
    .await;
    drop(master);
}

/// `CLIENT PAUSE … WRITE` on the backing Redis longer than the persist
/// timeout: like a hang, then everything is written once.
#[tokio::test]
async fn client_pause_on_the_backing_redis() {
    let redis = RedisProc::start();
    let events = EventCounter::start(&redis);
    let mut t = tokend(&redis, &[]);
    let mut c = RawConn::connect(t.addr).await;
    c.cmd("TOKEN.GEN p").await.text();
    let mut r = redis.conn();
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("WRITE").query(&mut r).unwrap();
    // Both GENs of the pipeline were admitted before the pause was noticed:
    // each gets its own unconfirmed error, the STATS between them its reply.
    let replies = bracketed(&mut c, &[&["TOKEN.GEN", "p"], &["TOKEN.STATS", "p"], &["TOKEN.GEN", "p"]]).await;
    assert!(replies[0].err().starts_with("TRYAGAIN the backing Redis did not confirm"), "{:?}", replies[0]);
    assert_eq!(common::stats_of(&replies[1])[0], 2);
    assert!(replies[2].err().starts_with("TRYAGAIN the backing Redis did not confirm"), "{:?}", replies[2]);
    // Now it is known: the next write is refused before it changes anything.
    assert!(c.cmd("TOKEN.GEN p").await.err().ends_with("nothing was changed"));
    assert_eq!(total(&mut c, "p").await, 3);
    until_writable(&mut c, "p").await;
    assert_eq!(backing_tokens(&redis, "p").len() as i64, total(&mut c, "p").await);
    drop(c);
    t = restart_and_compare(&mut t, &redis, &["p"]).await;
    drop(t);
    events.assert_each_once();
}

/// The backing Redis loses its data under load — FLUSHALL, or a restart
/// without persistence: tokend notices (the slots' fences are gone), writes
/// its whole state back, and nothing acknowledged is lost, before or after.
async fn loses_its_data(lose: impl FnOnce(&mut RedisProc)) {
    let mut redis = RedisProc::start();
    let mut t = tokend(&redis, &[]);
    let mut c = RawConn::connect(t.addr).await;
    let before: Vec<String> = c.cmd("TOKEN.GEN old COUNT 50").await.items().iter().map(Resp::text).collect();
    assert_eq!(before.len(), 50);
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(workload::run(t.url(), "live".into(), 4, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    lose(&mut redis);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let ledger = load.await.unwrap();
    assert!(ledger.acked > 20, "the load ran ({})", ledger.acked);
    assert_eq!(ledger.failures, Vec::<String>::new(), "tokend stayed up: only -TRYAGAIN may stop a write");
    // The write-back completes: the backing Redis holds what tokend holds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (o, l) = (backing_tokens(&redis, "old").len(), backing_tokens(&redis, "live").len());
        if o == 50 && l as i64 == total(&mut c, "live").await {
            break;
        }
        assert!(Instant::now() < deadline, "write-back incomplete: old {o}/50, live {l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = c.cmd("INFO persistence").await.text();
    assert!(info.contains("backing_data_lost:1\r\n"), "{info}");
    drop(c);
    // kill -9, not a graceful stop: only what the backing Redis has counts.
    t.kill9();
    let t = tokend(&redis, &[]);
    let mut c = t.conn().await;
    workload::verify(&mut c, "live", &ledger).await;
    let mut raw = RawConn::connect(t.addr).await;
    assert_eq!(total(&mut raw, "old").await, 50, "the tokens from before the loss are back too");
}

#[tokio::test]
async fn flushall_of_the_backing_redis_loses_nothing_acknowledged() {
    loses_its_data(|r| {
        let mut con = r.conn();
        let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_backing_redis_restarted_empty_loses_nothing_acknowledged() {
    loses_its_data(RedisProc::restart_empty).await;
}
