//! Pools are keys: SCAN/KEYS/EXISTS/TYPE/MEMORY USAGE/OBJECT ENCODING,
//! DEL/UNLINK of whole pools, FLUSHDB, MONITOR, and Redis's own tools
//! (`redis-cli --scan`, `--bigkeys`, `--memkeys`) against them.

mod common;
mod procs;

use common::{RawConn, Resp, TestServer, encode_cmd, stats, wait_for_waiters};
use procs::{RedisProc, Tokend};
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs SCAN to the end; every name returned, in order, with repeats.
async fn scan_all(c: &mut RawConn, extra: &[&str]) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut out = Vec::new();
    loop {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(extra);
        let r = c.call(&args).await;
        let items = r.items();
        cursor = items[0].text();
        out.extend(items[1].items().iter().map(Resp::text));
        if cursor == "0" {
            return out;
        }
    }
}

#[tokio::test]
async fn pools_are_keys_of_a_type_of_their_own() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    c.cmd("TOKEN.GEN a COUNT 3").await;
    c.cmd("TOKEN.GEN b").await;
    assert_eq!(c.cmd("EXISTS a b nope a").await, Resp::Int(3), "a pool named twice counts twice");
    assert_eq!(c.cmd("TYPE a").await, Resp::Simple("token-pool".into()));
    assert_eq!(c.cmd("TYPE nope").await, Resp::Simple("none".into()));
    assert_eq!(c.cmd("OBJECT ENCODING a").await, Resp::Bulk(b"slab".to_vec()));
    assert!(c.cmd("OBJECT ENCODING nope").await.is_null());
    let small = c.cmd("MEMORY USAGE b").await.int();
    let c3 = c.cmd("MEMORY USAGE a SAMPLES 5").await.int();
    assert!(small > 0 && c3 > 0, "{small} {c3}");
    assert!(c.cmd("MEMORY USAGE nope").await.is_null());
    c.cmd("TOKEN.GEN big COUNT 20000").await;
    assert!(c.cmd("MEMORY USAGE big").await.int() > 64 * 20_000, "a slot is 64 bytes");
    let mut keys: Vec<String> = c.cmd("KEYS *").await.items().iter().map(Resp::text).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "big"]);
    assert_eq!(c.cmd("KEYS b*").await.items().len(), 2);
    let mut scanned = scan_all(&mut c, &["COUNT", "1"]).await;
    scanned.sort();
    assert_eq!(scanned, ["a", "b", "big"]);
    assert_eq!(scan_all(&mut c, &["MATCH", "b?g"]).await, ["big"]);
    assert_eq!(scan_all(&mut c, &["TYPE", "token-pool"]).await.len(), 3);
    assert!(scan_all(&mut c, &["TYPE", "string"]).await.is_empty());
    assert_eq!(c.cmd("SCAN x").await.err(), "ERR invalid cursor");
    assert_eq!(c.cmd("DBSIZE").await, Resp::Int(3));
    // An emptied pool no longer exists.
    let t = c.cmd("TOKEN.GEN gone").await.text();
    assert_eq!(c.call(&["TOKEN.DEL", "gone", &t]).await, Resp::Int(1));
    assert_eq!(c.cmd("EXISTS gone").await, Resp::Int(0));
    assert_eq!(c.cmd("DBSIZE").await, Resp::Int(3));
}

/// 20 clients create and delete pools while another SCANs: every pool that
/// exists from the first SCAN call to the last is returned, exactly once.
#[tokio::test]
async fn scan_returns_every_pool_that_lives_through_it() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut stable = HashSet::new();
    for i in 0..2_000 {
        stable.insert(format!("stable-{i}"));
    }
    let mut pipe = Vec::new();
    for p in &stable {
        pipe.extend(encode_cmd(&["TOKEN.GEN", p]));
    }
    c.pipeline(&pipe, stable.len()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut churners = Vec::new();
    for w in 0..20 {
        let stop = stop.clone();
        let mut k = server.raw().await;
        churners.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("churn-{w}-{i}");
                k.call(&["TOKEN.GEN", &name, "COUNT", "2"]).await;
                if i % 2 == 0 {
                    k.call(&["DEL", &name]).await;
                }
                i += 1;
            }
        }));
    }
    for round in 0..3 {
        let got = scan_all(&mut c, &["COUNT", "37"]).await;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for n in &got {
            *seen.entry(n.as_str()).or_default() += 1;
        }
        for p in &stable {
            assert_eq!(seen.get(p.as_str()), Some(&1), "round {round}: {p} returned {:?} times", seen.get(p.as_str()));
        }
        assert!(seen.values().all(|&n| n == 1), "round {round}: a pool was returned twice");
    }
    stop.store(true, Ordering::Relaxed);
    for ch in churners {
        ch.await.unwrap();
    }
}

/// DEL of a pool with blocked waiters and assigned tokens: the waiters get
/// nil, no `expired` event goes out, a `del` keyspace event does; with a
/// backing Redis the deletion is in the same durable write (kill -9 right
/// after the reply: gone after recovery).
#[tokio::test]
async fn del_of_a_pool_with_waiters_and_a_backing_redis() {
    let redis = RedisProc::start();
    let port = procs::free_port().to_string();
    let args = [
        "--port",
        port.as_str(),
        "--redis",
        &*Box::leak(redis.url().into_boxed_str()),
        "--notify-keyspace-events",
        "KEgxl",
    ];
    let mut t = Tokend::start_with_env(&args, &[]);
    let mut c = RawConn::connect(t.addr).await;
    c.cmd("TOKEN.GEN p PX 200 COUNT 3").await;
    c.cmd("TOKEN.ACQUIRE p").await.text();
    c.cmd("TOKEN.GEN keep").await.text();
    let mut w = RawConn::connect(t.addr).await;
    w.send(&["TOKEN.ACQUIRE", "empty", "BLOCK", "0"]).await;
    wait_for_waiters(&mut c, "empty", 1).await;
    let mut sub = RawConn::connect(t.addr).await;
    sub.send(&["PSUBSCRIBE", "__key*"]).await;
    sub.read().await;
    assert_eq!(c.cmd("DEL p empty nope").await, Resp::Int(2));
    assert!(w.read().await.is_null(), "the blocked client gets nil");
    let mut events = Vec::new();
    while let Some(m) = sub.read_within(Duration::from_millis(400)).await {
        let items = m.items();
        events.push((items[2].text(), items[3].text()));
    }
    assert!(events.contains(&("__keyevent@0__:del".into(), "p".into())), "{events:?}");
    assert!(events.contains(&("__keyspace@0__:p".into(), "del".into())), "{events:?}");
    assert!(!events.iter().any(|(ch, _)| ch.contains("expired")), "no expired events: {events:?}");
    assert_eq!(stats(&mut c, "p").await, [0; 5]);
    t.kill9();
    let t = Tokend::start_with_env(&args, &[]);
    let mut c = RawConn::connect(t.addr).await;
    assert_eq!(c.cmd("EXISTS p").await, Resp::Int(0), "the deletion was durable");
    assert_eq!(c.cmd("EXISTS keep").await, Resp::Int(1));
    let mut r = redis.conn();
    let left: i64 = redis::cmd("EXISTS")
        .arg("tokend:{p}:tokens")
        .arg("tokend:{p}:expired")
        .arg("tokend:{p}:slabs")
        .arg("tokend:{p}:slab:0")
        .query(&mut r)
        .unwrap();
    assert_eq!(left, 0, "the pool's keys are gone from the backing Redis");
}

#[tokio::test]
async fn flush_needs_enable_flush() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    c.cmd("TOKEN.GEN a").await;
    assert!(c.cmd("FLUSHDB").await.err().starts_with("ERR FLUSHDB and FLUSHALL are disabled"));
    assert_eq!(c.cmd("DBSIZE").await, Resp::Int(1));
    let server = TestServer::start_with(|cfg| cfg.enable_flush = true);
    let mut c = server.raw().await;
    c.cmd("TOKEN.GEN a COUNT 5").await;
    c.cmd("TOKEN.GEN b").await;
    assert_eq!(c.cmd("FLUSHALL ASYNC").await, Resp::Simple("OK".into()));
    assert_eq!(c.cmd("DBSIZE").await, Resp::Int(0));
    assert_eq!(c.cmd("FLUSHDB BOGUS").await.err(), "ERR syntax error");
}

/// MONITOR lines for a pipeline of TOKEN commands, in Redis's format.
#[tokio::test]
async fn monitor_shows_commands_as_redis_does() {
    let server = TestServer::start_with(|c| c.requirepass = Some("pw".into()));
    let mut m = server.raw().await;
    m.cmd("AUTH pw").await;
    assert_eq!(m.cmd("MONITOR").await, Resp::Simple("OK".into()));
    let mut c = server.raw().await;
    let local = c.stream.local_addr().unwrap();
    let mut pipe = encode_cmd(&["AUTH", "pw"]);
    pipe.extend(encode_cmd(&["TOKEN.GEN", "p q", "COUNT", "1"]));
    pipe.extend(encode_cmd(&["token.stats", "p\"\n"]));
    pipe.extend(encode_cmd(&["CONFIG", "GET", "port"]));
    pipe.extend(encode_cmd(&["PING"]));
    c.pipeline(&pipe, 5).await;
    let mut lines = Vec::new();
    for _ in 0..4 {
        lines.push(m.read().await.text());
    }
    // `+<secs>.<6 digits> [0 <client addr>] "arg" ...`; CONFIG (an admin
    // command) is not shown; AUTH's password is redacted.
    let suffixes =
        [r#""AUTH" "(redacted)""#, r#""TOKEN.GEN" "p q" "COUNT" "1""#, r#""token.stats" "p\"\n""#, r#""PING""#];
    for (line, want) in lines.iter().zip(suffixes) {
        let (time, rest) = line.split_once(' ').unwrap();
        let (secs, micros) = time.split_once('.').unwrap();
        assert!(secs.parse::<u64>().is_ok() && micros.len() == 6 && micros.parse::<u32>().is_ok(), "{line}");
        assert_eq!(rest, format!("[0 {local}] {want}"), "{line}");
    }
    assert!(m.read_within(Duration::from_millis(100)).await.is_none(), "nothing else");
}

/// redis-cli's key tools against 10,000 pools of different sizes: `--scan
/// --pattern` lists every matching pool once, `--bigkeys` counts them all
/// (it cannot size a type it does not know, as for any module type), and
/// `--memkeys` names the biggest pool; no error anywhere.
#[tokio::test]
async fn redis_cli_scan_bigkeys_memkeys() {
    let server = TestServer::start();
    let mut c = server.raw().await;
    let mut pipe = Vec::new();
    for i in 0..10_000 {
        let name = if i % 2 == 0 { format!("tenant-{i}") } else { format!("other-{i}") };
        pipe.extend(encode_cmd(&["TOKEN.GEN", &name, "COUNT", &(1 + i % 7).to_string()]));
    }
    c.pipeline(&pipe, 10_000).await;
    c.cmd("TOKEN.GEN tenant-biggest COUNT 5000").await;
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli").arg("-p").arg(server.port.to_string()).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.to_lowercase().contains("error"), "{text}");
        text
    };
    let listed = cli(&["--scan", "--pattern", "tenant-*"]);
    let names: Vec<&str> = listed.lines().collect();
    let unique: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), 5_001, "every tenant pool once");
    assert_eq!(unique.len(), 5_001);
    assert!(unique.iter().all(|n| n.starts_with("tenant-")));
    let big = cli(&["--bigkeys"]);
    assert!(big.contains("10001 keys"), "{big}");
    assert!(big.contains("10001 token-pools"), "{big}");
    let mem = cli(&["--memkeys"]);
    assert!(mem.contains(r#"Biggest token-pool found '"tenant-biggest"'"#), "{mem}");
}
