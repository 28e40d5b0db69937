//! tokend with a real backing redis-server: persistence, recovery after
//! SIGTERM and kill -9, expiries that fell due while down, notifications
//! published on the backing Redis, and outages of the backing Redis.

mod common;
mod procs;

use common::Resp;
use procs::workload;

use procs::{RedisProc, Tokend};
use redis::aio::MultiplexedConnection;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

async fn gen_token(c: &mut MultiplexedConnection, pool: &str, extra: &[&str]) -> String {
    redis::cmd("TOKEN.GEN").arg(pool).arg(extra).query_async(c).await.unwrap()
}

async fn stats(c: &mut MultiplexedConnection, pool: &str) -> HashMap<String, i64> {
    redis::cmd("TOKEN.STATS").arg(pool).query_async(c).await.unwrap()
}

/// TOKEN.INFO as (state, lifetime-left, lease-left, times) or the error code.
async fn info(c: &mut MultiplexedConnection, pool: &str, t: &str) -> Result<(String, i64, i64, i64), String> {
    let r: redis::RedisResult<HashMap<String, redis::Value>> =
        redis::cmd("TOKEN.INFO").arg(pool).arg(t).query_async(c).await;
    match r {
        Ok(m) => {
            let int = |k: &str| match m.get(k) {
                Some(redis::Value::Int(i)) => *i,
                other => panic!("{k}: {other:?}"),
            };
            let state = match m.get("state") {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("state: {other:?}"),
            };
            Ok((state, int("lifetime-left-ms"), int("lease-left-ms"), int("times-acquired")))
        }
        Err(e) => Err(e.code().unwrap_or("?").to_string()),
    }
}

fn backing_args(redis: &RedisProc, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["--redis".to_string(), redis.url()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn start(redis: &RedisProc, extra: &[&str]) -> Tokend {
    let args = backing_args(redis, extra);
    Tokend::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// [`start`] on a given port.
fn start_on(redis: &RedisProc, port: &str, extra: &[&str]) -> Tokend {
    let mut args = vec!["--port".to_string(), port.to_string()];
    args.extend(backing_args(redis, extra));
    Tokend::start_with_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

#[tokio::test]
async fn state_survives_a_graceful_restart_exactly() {
    let redis = RedisProc::start();
    let mut t = start(&redis, &[]);
    let mut c = t.conn().await;
    let toks: Vec<String> = redis::cmd("TOKEN.GEN").arg("p").arg("COUNT").arg(20).query_async(&mut c).await.unwrap();
    let a: String = redis::cmd("TOKEN.ACQUIRE").arg("p").arg("PX").arg(60_000).query_async(&mut c).await.unwrap();
    let b: String = redis::cmd("TOKEN.ACQUIRE").arg("p").arg("EX").arg(90).query_async(&mut c).await.unwrap();
    let _: i64 = redis::cmd("TOKEN.KEEPALIVE").arg("p").arg(&a).query_async(&mut c).await.unwrap();
    let _: i64 = redis::cmd("TOKEN.UNBLOCK").arg("p").arg(&b).query_async(&mut c).await.unwrap();
    // Not one of the two acquired (a random pick of 20: it was, 1 run in 10).
    let gone = toks.iter().find(|t| **t != a && **t != b).unwrap().clone();
    let _: i64 = redis::cmd("TOKEN.DEL").arg("p").arg(&gone).query_async(&mut c).await.unwrap();
    gen_token(&mut c, "other:pool", &["PX", "100000"]).await;
    let before_stats = stats(&mut c, "p").await;
    let mut before = HashMap::new();
    for tok in &toks {
        before.insert(tok.clone(), info(&mut c, "p", tok).await);
    }
    let stopped = Instant::now();
    assert!(t.terminate().success(), "tokend exits 0 on SIGTERM");

    let t2 = start(&redis, &[]);
    let mut c = t2.conn().await;
    let elapsed = stopped.elapsed().as_millis() as i64 + 50;
    assert_eq!(stats(&mut c, "p").await, before_stats);
    assert_eq!(stats(&mut c, "other:pool").await["total"], 1);
    for tok in &toks {
        let (b, a) = (&before[tok], info(&mut c, "p", tok).await);
        match (b, a) {
            (Ok(b), Ok(a)) => {
                assert_eq!((&b.0, b.3), (&a.0, a.3), "state and times-acquired of {tok}");
                // Deadlines are absolute: what is left shrank by the downtime only.
                assert!(a.1 <= b.1 && a.1 >= b.1 - elapsed, "lifetime of {tok}: {b:?} -> {a:?}");
                assert!(b.2 == -1 && a.2 == -1 || (a.2 <= b.2 && a.2 >= b.2 - elapsed), "lease of {tok}");
            }
            (b, a) => assert_eq!(b, &a, "{tok}"),
        }
    }
    assert_eq!(info(&mut c, "p", &a).await.unwrap().0, "assigned");
    assert_eq!(info(&mut c, "p", &gone).await, Err("NOTOKEN".into()));
}

#[tokio::test]
async fn unreachable_backing_redis_is_a_clear_start_up_error() {
    let port = procs::free_port();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["--port", "0", "--redis", &format!("redis://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "exit code 2");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("cannot connect to the backing Redis"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
}

#[tokio::test]
async fn every_acknowledged_change_survives_kill_dash_nine() {
    let redis = RedisProc::start();
    // The same port after the crash: the restarted tokend takes the lease
    // over at once.
    let port = procs::free_port().to_string();
    let mut t = start_on(&redis, &port, &["--durability", "sync"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(workload::run(t.url(), "p".into(), 8, stop));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    tokio::time::sleep(Duration::from_millis(300 + (nanos % 400) as u64)).await;
    t.kill9();
    let ledger = load.await.unwrap();
    assert!(ledger.known.len() > 50, "the load ran ({} tokens)", ledger.known.len());
    let t2 = start_on(&redis, &port, &[]);
    let mut c = t2.conn().await;
    let checked = workload::verify(&mut c, "p", &ledger).await;
    eprintln!("kill -9 under load: {} acknowledged operations, {checked} tokens checked, lost: 0", ledger.acked);
}

/// A pool's records are kept where its tokens are in its slab: a slot given
/// up and taken again, a pool emptied and made again in one transaction,
/// and a pool over several slab strings come back exactly after kill -9.
#[tokio::test]
async fn slots_taken_again_and_pools_made_again_come_back_exactly() {
    let redis = RedisProc::start();
    let port = procs::free_port().to_string();
    let mut t = start_on(&redis, &port, &["--durability", "sync"]);
    let mut c = t.conn().await;
    let first = gen_token(&mut c, "p", &[]).await;
    // One unit: the pool goes (its last token is deleted) and is made again
    // in the same slots.
    let (gone, again): (i64, Vec<String>) = redis::pipe()
        .atomic()
        .cmd("TOKEN.DEL")
        .arg("p")
        .arg(&first)
        .cmd("TOKEN.GEN")
        .arg("p")
        .arg("COUNT")
        .arg(3)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(gone, 1);
    // A pool over three slab strings (16,384 slots each), with holes.
    let big: Vec<String> =
        redis::cmd("TOKEN.GEN").arg("big").arg("COUNT").arg(40_000).query_async(&mut c).await.unwrap();
    for tok in big.iter().step_by(997) {
        let _: i64 = redis::cmd("TOKEN.DEL").arg("big").arg(tok).query_async(&mut c).await.unwrap();
    }
    let taken: String =
        redis::cmd("TOKEN.ACQUIRE").arg("big").arg("PX").arg(600_000).query_async(&mut c).await.unwrap();
    let refill: Vec<String> =
        redis::cmd("TOKEN.GEN").arg("big").arg("COUNT").arg(10).query_async(&mut c).await.unwrap();
    let before = (stats(&mut c, "p").await, stats(&mut c, "big").await);
    assert_eq!(before.1["total"], 40_000 - 41 + 10);
    t.kill9();

    let t2 = start_on(&redis, &port, &[]);
    let mut c = t2.conn().await;
    assert_eq!((stats(&mut c, "p").await, stats(&mut c, "big").await), before);
    assert_eq!(info(&mut c, "p", &first).await, Err("NOTOKEN".into()));
    for tok in &again {
        assert_eq!(info(&mut c, "p", tok).await.unwrap().0, "free");
    }
    assert_eq!(info(&mut c, "big", &taken).await.unwrap().0, "assigned");
    for tok in big.iter().step_by(997).skip(1) {
        assert_eq!(info(&mut c, "big", tok).await, Err("NOTOKEN".into()), "deleted, and its slot given to another");
    }
    let kept = big.iter().enumerate().filter(|(i, _)| i % 997 != 0).map(|(_, t)| t);
    for tok in kept.step_by(3).chain(&refill) {
        assert!(info(&mut c, "big", tok).await.is_ok(), "{tok}");
    }
    assert_eq!(assert_backing_matches(&redis, &mut c, "p").await, 3);
    let mut rc = redis.conn();
    let slabs: Vec<u32> = redis::cmd("SMEMBERS").arg("tokend:{big}:slabs").query(&mut rc).unwrap();
    assert_eq!(slabs.len(), 3, "{slabs:?}");
    assert_eq!(common::backing_records(&mut rc, "big").len() as i64, before.1["total"]);
}

/// Subscribes on the backing Redis in a thread; returns (channel, payload, when).
fn subscribe_backing(redis: &RedisProc, pattern: &str) -> std::sync::mpsc::Receiver<(String, String, Instant)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut con = redis.conn();
    let pattern = pattern.to_string();
    std::thread::spawn(move || {
        let mut ps = con.as_pubsub();
        ps.psubscribe(&pattern).unwrap();
        ps.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = ready_tx.send(());
        while let Ok(msg) = ps.get_message() {
            let payload: String = msg.get_payload().unwrap_or_default();
            if tx.send((msg.get_channel_name().to_string(), payload, Instant::now())).is_err() {
                break;
            }
        }
    });
    ready_rx.recv().unwrap();
    rx
}

#[tokio::test]
async fn expiry_events_reach_subscribers_of_the_backing_redis_on_time() {
    let redis = RedisProc::start();
    let t = start(&redis, &[]);
    let events = subscribe_backing(&redis, "__keyevent@0__:*");
    let mut c = t.conn().await;
    // Each deadline lies between the moment its command was sent and the
    // moment its reply came back: an event is early only before the first,
    // and late only after the second. A slow reply on a loaded machine moves
    // neither bound.
    let gen_sent = Instant::now();
    let tok = gen_token(&mut c, "p", &["PX", "80"]).await;
    let gen_replied = Instant::now();
    let acq_sent = Instant::now();
    let got: String = redis::cmd("TOKEN.ACQUIRE").arg("p").arg("PX").arg(40).query_async(&mut c).await.unwrap();
    let acq_replied = Instant::now();
    assert_eq!(got, tok);
    let ms = |a: Instant, b: Instant| a.duration_since(b).as_millis() as i64;
    let (ch, payload, at) = events.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((ch.as_str(), payload.as_str()), ("__keyevent@0__:leaseexpired", format!("p:{tok}").as_str()));
    let (early, late) = (ms(at, acq_sent) - 40, ms(at, acq_replied) - 40);
    assert!(early >= -1, "leaseexpired arrived {early} ms before its earliest possible deadline");
    assert!(late <= 25, "leaseexpired arrived {late} ms after its latest possible deadline");
    let (ch, payload, at2) = events.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((ch.as_str(), payload.as_str()), ("__keyevent@0__:expired", format!("p:{tok}").as_str()));
    let (early2, late2) = (ms(at2, gen_sent) - 80, ms(at2, gen_replied) - 80);
    assert!(early2 >= -1, "expired arrived {early2} ms before its earliest possible deadline");
    assert!(late2 <= 25, "expired arrived {late2} ms after its latest possible deadline");
    eprintln!(
        "backing Redis events, ms after the deadline's earliest..latest: leaseexpired {early}..{late}, expired {early2}..{late2}"
    );
}

#[tokio::test]
async fn deadlines_that_passed_while_down_fire_at_restart_with_events() {
    let redis = RedisProc::start();
    let mut t = start(&redis, &[]);
    let mut c = t.conn().await;
    // Every deadline lies after the first tokend has stopped (it would fire
    // them itself, before anyone subscribed) and before the second starts.
    let made = Instant::now();
    let short = gen_token(&mut c, "p", &["PX", "750"]).await;
    let leased = gen_token(&mut c, "q", &["PX", "60000"]).await;
    let _: String = redis::cmd("TOKEN.ACQUIRE").arg("q").arg("PX").arg(500).query_async(&mut c).await.unwrap();
    let both = gen_token(&mut c, "r", &["PX", "1000"]).await;
    let _: String = redis::cmd("TOKEN.ACQUIRE").arg("r").arg("PX").arg(500).query_async(&mut c).await.unwrap();
    // r's lifetime was covered to 1000 ms; its lease ends at 500: lease first, then lifetime.
    assert!(t.terminate().success());
    assert!(made.elapsed() < Duration::from_millis(500), "stopped only after {:?}", made.elapsed());
    tokio::time::sleep((made + Duration::from_millis(1100)).saturating_duration_since(Instant::now())).await;
    let events = subscribe_backing(&redis, "__keyevent@0__:*");
    let t2 = start(&redis, &[]);
    let mut got = Vec::new();
    while let Ok((ch, payload, _)) = events.recv_timeout(Duration::from_secs(2)) {
        got.push((ch, payload));
        if got.len() == 4 {
            break;
        }
    }
    let ev = |e: &str, p: &str, t: &str| (format!("__keyevent@0__:{e}"), format!("{p}:{t}"));
    assert!(got.contains(&ev("expired", "p", &short)), "{got:?}");
    assert!(got.contains(&ev("leaseexpired", "q", &leased)), "{got:?}");
    let r_lease = got.iter().position(|e| *e == ev("leaseexpired", "r", &both)).expect("r leaseexpired");
    let r_exp = got.iter().position(|e| *e == ev("expired", "r", &both)).expect("r expired");
    assert!(r_lease < r_exp, "deadline order: {got:?}");
    let mut c = t2.conn().await;
    assert_eq!(info(&mut c, "p", &short).await, Err("EXPIRED".into()));
    assert_eq!(info(&mut c, "q", &leased).await.unwrap().0, "free");
    // The backing Redis has the result too.
    let mut rc = redis.conn();
    let in_redis = common::backing_records(&mut rc, "q").remove(&leased);
    assert!(in_redis.unwrap().starts_with("f:"));
    assert!(!common::backing_records(&mut rc, "p").contains_key(&short));
}

/// Checks that every token the backing Redis holds for `pool` matches tokend.
async fn assert_backing_matches(redis: &RedisProc, c: &mut MultiplexedConnection, pool: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut rc = redis.conn();
        let stored = common::backing_records(&mut rc, pool);
        let s = stats(c, pool).await;
        let mut mismatch = None;
        if stored.len() as i64 != s["total"] {
            mismatch = Some(format!("redis has {} tokens, tokend {}", stored.len(), s["total"]));
        } else {
            for (tok, rec) in &stored {
                let state = info(c, pool, tok).await.map(|i| i.0);
                let want = if rec.starts_with("a:") { "assigned" } else { "free" };
                if state.as_deref() != Ok(want) {
                    mismatch = Some(format!("{tok}: redis {rec}, tokend {state:?}"));
                    break;
                }
            }
        }
        match mismatch {
            None => return stored.len(),
            Some(m) if Instant::now() > deadline => panic!("backing Redis never caught up: {m}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn async_mode_survives_an_outage_and_drains_the_backlog() {
    let mut redis = RedisProc::start_durable();
    let t = start(&redis, &["--durability", "async", "--flush-interval", "2ms"]);
    let mut c = t.conn().await;
    for _ in 0..20 {
        gen_token(&mut c, "p", &[]).await;
    }
    redis.kill();
    // Writes keep being answered at once while Redis is away.
    let started = Instant::now();
    let mut during = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        gen_token(&mut c, "p", &[]).await;
        let _: Option<String> = redis::cmd("TOKEN.ACQUIRE").arg("p").query_async(&mut c).await.unwrap();
        during += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(during > 20);
    redis.restart();
    let n = assert_backing_matches(&redis, &mut c, "p").await;
    assert_eq!(n, 20 + during);
    let _: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
}

/// Waits until everything queued for the backing Redis was acknowledged.
async fn backlog_empty(c: &mut MultiplexedConnection) {
    let started = Instant::now();
    loop {
        let persistence: String = redis::cmd("INFO").arg("persistence").query_async(c).await.unwrap();
        if persistence.lines().any(|l| l.trim() == "backing_backlog:0") {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the backlog never emptied: {persistence}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn sync_mode_outage_answers_tryagain_serves_reads_and_recovers() {
    let mut redis = RedisProc::start_durable();
    let t = start(&redis, &["--durability", "sync", "--persist-timeout", "300ms"]);
    let mut c = t.conn().await;
    let tok = gen_token(&mut c, "p", &[]).await;
    // The GEN's `tokengen` event goes to the backing Redis after the reply
    // (its unit is the change's); sent into the outage, it would find the
    // link down before the next write and have that refused at once.
    backlog_empty(&mut c).await;
    redis.kill();
    // First write: applied, queued, not confirmed in time.
    let started = Instant::now();
    let e = redis::cmd("TOKEN.GEN").arg("p").query_async::<String>(&mut c).await.unwrap_err();
    assert_eq!(e.code(), Some("TRYAGAIN"), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(290), "{e} after {:?}", started.elapsed());
    // Down longer than the timeout: refused at once, nothing changes.
    let before = stats(&mut c, "p").await;
    let started = Instant::now();
    let e = redis::cmd("TOKEN.ACQUIRE").arg("p").query_async::<String>(&mut c).await.unwrap_err();
    assert_eq!(e.code(), Some("TRYAGAIN"), "{e}");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(stats(&mut c, "p").await, before, "a refused write changes nothing");
    // Reads are served, and INFO says what is going on.
    assert_eq!(info(&mut c, "p", &tok).await.unwrap().0, "free");
    let persistence: String = redis::cmd("INFO").arg("persistence").query_async(&mut c).await.unwrap();
    assert!(persistence.contains("backing_link_status:down"), "{persistence}");
    assert!(persistence.contains("backing_backlog:"), "{persistence}");
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match redis::cmd("TOKEN.GEN").arg("p").query_async::<String>(&mut c).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code(), Some("TRYAGAIN"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("never recovered: {e}"),
        }
    }
    assert_eq!(assert_backing_matches(&redis, &mut c, "p").await, 3);
    let persistence: String = redis::cmd("INFO").arg("persistence").query_async(&mut c).await.unwrap();
    assert!(persistence.contains("backing_link_status:up"), "{persistence}");
    assert!(persistence.contains("backing_backlog:0"), "{persistence}");
}

/// Tokens name their slots through a key kept in the backing Redis; tokens
/// that do not (written by something else, or under another key) are still
/// recovered and served, and the key survives restarts.
#[tokio::test]
async fn tokens_recovered_under_another_slot_key_are_still_served() {
    let redis = RedisProc::start();
    // A token tokend did not make: random bits where its slot would be.
    let foreign = uuid::Uuid::new_v4().hyphenated().to_string();
    let far = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 + 600_000;
    {
        let mut rc = redis.conn();
        let _: () =
            redis::Commands::hset(&mut rc, "tokend:{p}:tokens", &foreign, format!("f:{far}:0:600000:0:0")).unwrap();
        let _: () = redis::Commands::sadd(&mut rc, "tokend:pools", "p").unwrap();
    }
    let mut t = start(&redis, &[]);
    let mut c = t.conn().await;
    let key = || -> Option<String> { redis::Commands::get(&mut redis.conn(), "tokend:slotkey").unwrap() };
    let k1 = key().expect("tokend keeps its slot key in the backing Redis");
    assert_eq!(info(&mut c, "p", &foreign).await.unwrap().0, "free");
    let mine: Vec<String> = redis::cmd("TOKEN.GEN").arg("p").arg("COUNT").arg(50).query_async(&mut c).await.unwrap();
    let got: String = redis::cmd("TOKEN.ACQUIRE").arg("p").arg("PX").arg(60_000).query_async(&mut c).await.unwrap();
    assert!(t.terminate().success());

    // Under a new key every token is "foreign": all must still be found.
    {
        let mut rc = redis.conn();
        let _: () = redis::Commands::set(&mut rc, "tokend:slotkey", "12345").unwrap();
    }
    let mut t = start(&redis, &[]);
    let mut c = t.conn().await;
    assert_eq!(key().as_deref(), Some("12345"), "an existing key is kept");
    for tok in mine.iter().chain([&foreign]) {
        let want = if *tok == got { "assigned" } else { "free" };
        assert_eq!(info(&mut c, "p", tok).await.unwrap().0, want, "{tok}");
    }
    assert_eq!(stats(&mut c, "p").await["total"], 51);
    // Every one can be acquired and given back; new tokens mix in.
    let _: i64 = redis::cmd("TOKEN.UNBLOCK").arg("p").arg(&got).query_async(&mut c).await.unwrap();
    let more: Vec<String> = redis::cmd("TOKEN.GEN").arg("p").arg("COUNT").arg(10).query_async(&mut c).await.unwrap();
    let mut held = std::collections::HashSet::new();
    for _ in 0..61 {
        let t: String = redis::cmd("TOKEN.ACQUIRE").arg("p").query_async(&mut c).await.unwrap();
        assert!(held.insert(t));
    }
    let none: Option<String> = redis::cmd("TOKEN.ACQUIRE").arg("p").query_async(&mut c).await.unwrap();
    assert_eq!(none, None);
    assert!(more.iter().chain(&mine).chain([&foreign]).all(|t| held.contains(t)));
    for tok in &held {
        let _: i64 = redis::cmd("TOKEN.DEL").arg("p").arg(tok).query_async(&mut c).await.unwrap();
    }
    assert_eq!(stats(&mut c, "p").await["total"], 0);
    assert!(t.terminate().success());
    assert_ne!(k1, "12345");
}

/// Recovery reads a hash with one HGETALL or by HSCAN pages: both give the
/// same items, here over several HSCAN pages (25,000 live tokens, some
/// assigned, and remembered expired ones).
#[tokio::test]
async fn recovery_reads_the_same_items_whole_or_by_pages() {
    let redis = RedisProc::start();
    let mut t = start(&redis, &[]);
    let mut c = t.conn().await;
    for _ in 0..5 {
        let _: Vec<String> =
            redis::cmd("TOKEN.GEN").arg("p").arg("COUNT").arg(5_000).query_async(&mut c).await.unwrap();
    }
    for _ in 0..100 {
        let _: String = redis::cmd("TOKEN.ACQUIRE").arg("p").arg("PX").arg(60_000).query_async(&mut c).await.unwrap();
    }
    let _: Vec<String> =
        redis::cmd("TOKEN.GEN").arg("p").arg("PX").arg(1).arg("COUNT").arg(30).query_async(&mut c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stats(&mut c, "p").await["expired-remembered"], 30);
    assert!(t.terminate().success());

    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = tokend::persist::Con::from(redis::aio::ConnectionManager::new(client).await.unwrap());
    let key = |items: Vec<tokend::store::Restored>| {
        let mut v: Vec<String> = items.iter().map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    let keys = tokend::persist::Keys::new("tokend:");
    let whole = key(tokend::persist::recover_with(&mut con, &keys, 0, usize::MAX).await.unwrap().items);
    let paged = key(tokend::persist::recover_with(&mut con, &keys, 0, 0).await.unwrap().items);
    assert_eq!(whole.len(), 25_030);
    assert_eq!(whole.iter().filter(|r| r.starts_with("Expired")).count(), 30);
    assert!(whole == paged, "HGETALL and HSCAN disagree");
}

/// `rediss://` to a real redis-server with TLS (Debian's is built with it),
/// whose certificate rcgen made: refused without the CA (exit 2, within the
/// start-up limit), served and persisted with `--redis-tls-ca-cert`.
#[tokio::test]
async fn tls_to_the_backing_redis() {
    let dir = std::env::temp_dir().join(format!("tokend-backing-tls-{}-{}", std::process::id(), procs::free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls_port = procs::free_port();
    let redis = RedisProc::start_tls(tls_port, &cert, &key);
    let url = format!("rediss://127.0.0.1:{tls_port}/0");

    // The certificate is not in the system's trust store.
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["--port", "0", "--redis", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));

    let ca = cert.to_str().unwrap();
    let t = Tokend::start(&["--redis", &url, "--redis-tls-ca-cert", ca]);
    let mut c = t.conn().await;
    let tok = gen_token(&mut c, "tls", &[]).await;
    drop(c);
    drop(t);
    let mut plain = redis.conn();
    let stored = common::backing_records(&mut plain, "tls").remove(&tok);
    assert!(stored.is_some_and(|v| v.starts_with("f:")), "the token reached the backing Redis over TLS");
    let t = Tokend::start(&["--redis", &url, "--redis-tls-ca-cert", ca]);
    let mut c = t.conn().await;
    assert_eq!(info(&mut c, "tls", &tok).await.unwrap().0, "free", "recovered over TLS");
    let _ = std::fs::remove_dir_all(&dir);
}

/// While a million tokens load, clients are accepted and answered: TOKEN
/// commands get Redis's `-LOADING` error and `INFO persistence` shows
/// `loading:1` (ioredis's ready check waits on it); then everything is
/// served.
#[tokio::test]
async fn loading_a_million_tokens_answers_loading_meanwhile() {
    let redis = RedisProc::start();
    let mut r = redis.conn();
    // 1M free tokens in tokend's layout, written by Redis itself.
    let far = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 3_600_000;
    let script = r#"
        for i = 1, tonumber(ARGV[1]) do
            redis.call('HSET', KEYS[1], string.format('%08x-0000-4000-8000-%012x', i, i), ARGV[2])
        end
        redis.call('SADD', KEYS[2], 'big')
    "#;
    let _: () = redis::cmd("EVAL")
        .arg(script)
        .arg(2)
        .arg("tokend:{big}:tokens")
        .arg("tokend:pools")
        .arg(1_000_000)
        .arg(format!("f:{far}:0:3600000:0:0"))
        .query(&mut r)
        .unwrap();

    let t = Tokend::start_listening(&["--redis", &redis.url()]);
    let mut c = common::RawConn::connect(t.addr).await;
    let stats = c.cmd("TOKEN.STATS big").await;
    assert_eq!(stats, Resp::Error("LOADING tokend is loading the dataset in memory".into()));
    assert_eq!(c.cmd("TOKEN.GEN big").await.err(), "LOADING tokend is loading the dataset in memory");
    let info = c.cmd("INFO persistence").await.text();
    assert!(info.contains("loading:1\r\n"), "{info}");
    // Connection probes still work meanwhile.
    assert!(matches!(c.cmd("HELLO 3").await, Resp::Map(_)));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = c.cmd("INFO persistence").await.text();
        if info.contains("loading:0\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "still loading after 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = common::stats_of(&c.cmd("TOKEN.STATS big").await);
    assert_eq!(stats, [1_000_000, 1_000_000, 0, 0, 0]);
    assert!(t.wait_log("ready to accept connections", Duration::from_secs(5)).is_some());
}

/// The backing Redis user SECURITY.md tells operators to give tokend, read
/// from the document itself: with exactly that ACL, tokend writes, publishes
/// its events, loads its state back after a restart (with the backing
/// Redis's script cache emptied meanwhile), as a standalone server and as a
/// cluster node, and over a Redis Cluster, and the backing Redis denies it
/// nothing (`ACL LOG` stays empty).
#[tokio::test]
async fn the_backing_redis_user_security_md_describes_is_enough() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SECURITY.md")).unwrap();
    let rule = doc.split("(Redis ACL: `").nth(1).and_then(|r| r.split('`').next()).expect("SECURITY.md names an ACL");
    let words: Vec<&str> = rule.split_whitespace().collect();
    assert_eq!(words[..2], ["user", "tokend"], "{rule}");
    let pass = words.iter().find_map(|w| w.strip_prefix('>')).expect("a password");
    let single = RedisProc::start();
    let redis_cluster = procs::RedisCluster::start(3);
    let cases: [(&str, Vec<&RedisProc>, bool); 3] = [
        ("a standalone tokend", vec![&single], false),
        ("a tokend cluster node", vec![&single], true),
        ("a standalone tokend over a Redis Cluster", redis_cluster.nodes.iter().collect(), false),
    ];
    let denied = |nodes: &[&RedisProc]| -> Vec<String> {
        let mut all = Vec::new();
        for n in nodes {
            let log: Vec<HashMap<String, redis::Value>> = redis::cmd("ACL").arg("LOG").query(&mut n.conn()).unwrap();
            all.extend(log.iter().map(|e| {
                let s = |k: &str| match e.get(k) {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    other => format!("{other:?}"),
                };
                format!("{} {} {}", s("reason"), s("object"), s("context"))
            }));
        }
        all
    };
    // Until a cluster node has claimed its slots, or while tokend loads.
    let settling = |e: &redis::RedisError| matches!(e.code(), Some("CLUSTERDOWN" | "TRYAGAIN" | "LOADING"));

    for (what, nodes, cluster) in cases {
        for n in &nodes {
            let _: () = redis::cmd("ACL").arg("SETUSER").arg(&words[1..]).query(&mut n.conn()).unwrap();
            let _: () = redis::cmd("FLUSHALL").query(&mut n.conn()).unwrap();
        }
        let url = format!("redis://tokend:{pass}@127.0.0.1:{}/0", nodes[0].port);
        let events = subscribe_backing(nodes[0], "__keyevent@0__:*");
        let mut args = vec!["--redis", url.as_str()];
        if cluster {
            args.extend(["--cluster-enabled", "yes"]);
        }
        let mut t = Tokend::start(&args);
        let mut c = t.conn().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let toks: Vec<String> = loop {
            match redis::cmd("TOKEN.GEN").arg("p").arg("COUNT").arg(10).query_async(&mut c).await {
                Ok(v) => break v,
                Err(e) if settling(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("GEN ({what}): {e}; denied: {:?}", denied(&nodes)),
            }
        };
        let a: String = redis::cmd("TOKEN.ACQUIRE").arg("p").query_async(&mut c).await.unwrap();
        let _: i64 = redis::cmd("TOKEN.KEEPALIVE").arg("p").arg(&a).query_async(&mut c).await.unwrap();
        let gone = toks.iter().find(|t| **t != a).unwrap();
        let _: i64 = redis::cmd("TOKEN.DEL").arg("p").arg(gone).query_async(&mut c).await.unwrap();
        let short = gen_token(&mut c, "q", &["PX", "30"]).await;
        let (ch, payload, _) =
            events.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| panic!("an expired event ({what})"));
        assert_eq!((ch.as_str(), payload.as_str()), ("__keyevent@0__:expired", format!("q:{short}").as_str()));
        let purged: i64 = redis::cmd("TOKEN.DELEXPIRED").arg("q").query_async(&mut c).await.unwrap();
        assert_eq!(purged, 1);
        let before = stats(&mut c, "p").await;
        assert!(t.terminate().success(), "tokend exits 0 on SIGTERM ({what})");
        for n in &nodes {
            let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut n.conn()).unwrap();
        }

        let t2 = Tokend::start(&args);
        let mut c = t2.conn().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let after = loop {
            let r: redis::RedisResult<HashMap<String, i64>> =
                redis::cmd("TOKEN.STATS").arg("p").query_async(&mut c).await;
            match r {
                Ok(s) => break s,
                Err(e) if settling(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("STATS after the restart ({what}): {e}; denied: {:?}", denied(&nodes)),
            }
        };
        assert_eq!(after, before, "{what}");
        // A write after the restart, with the scripts loaded again.
        let _: i64 = redis::cmd("TOKEN.UNBLOCK").arg("p").arg(&a).query_async(&mut c).await.unwrap();
        let logged: Vec<String> = t2.logs().into_iter().chain(t.logs()).filter(|l| l.contains("NOPERM")).collect();
        assert!(logged.is_empty(), "{what}: {logged:?}");
        assert_eq!(denied(&nodes), Vec::<String>::new(), "{what}");
    }
}
